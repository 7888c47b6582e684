package imagebuilder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/templates"
)

// A slot is two parts. The base is the Debian tree with everything that
// changes only with the spec's package set, users, host name and extra
// files; it is compressed once and cached by content (baseKey). The layer is
// what changes with every DebVisor build: the agent and dvctl binaries, the
// DebVisor units and scripts, the release file and the slot's kernel
// arguments. It lives under /debvisor in the slot, the base has symlinks to
// it at the usual paths, and it is appended to a copy of the cached base
// with mksquashfs, so rebuilding after a change to DebVisor's own files
// compresses megabytes, not the Debian tree. Every build takes this path,
// cached base or not, so the same inputs give the same bytes.

// layerDir is the slot's top-level directory holding the layer.
const layerDir = "debvisor"

// layerFile is one file of the layer, at its usual path relative to /.
type layerFile struct {
	data []byte
	mode os.FileMode
}

// layerTemplate reports whether a template file belongs to the layer:
// DebVisor's units and scripts. Configuration files (/etc/fstab, the agent
// config, networkd and ssh settings) stay real files in the base, because
// the running system edits them in the /etc overlay.
func layerTemplate(p string) bool {
	return strings.HasPrefix(p, "rootfs/usr/local/") || strings.HasPrefix(p, "rootfs/etc/systemd/system/")
}

// layerFiles returns the layer: path relative to / -> file.
func (b *builder) layerFiles() (map[string]layerFile, error) {
	files := map[string]layerFile{}
	err := fs.WalkDir(templates.FS, "rootfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !layerTemplate(p) {
			return err
		}
		data, err := templates.FS.ReadFile(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if templates.Executables[p] {
			mode = 0o755
		}
		files[strings.TrimPrefix(p, "rootfs/")] = layerFile{data, mode}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	for src, dst := range map[string]string{b.opts.agentBin: "usr/local/bin/debvisor-agent", b.opts.dvctlBin: "usr/local/bin/dvctl"} {
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("bake binary: %w", err)
		}
		files[dst] = layerFile{data, 0o755}
	}
	files[osimage.ReleaseFile] = layerFile{osimage.Release{Version: b.spec.Version, SpecDigest: b.digest, SourceDateEpoch: b.epoch, Arch: osimage.Arch}.Marshal(), 0o644}
	// The slot's own kernel arguments (spec kernel_cmdline, validated to
	// hold nothing GRUB would interpret).
	files[osimage.SlotCmdlineFile] = layerFile{fmt.Appendf(nil, "set slot_cmdline=\"%s\"\n", b.spec.KernelCmdline), 0o644}
	return files, nil
}

// writeLayer writes the layer's files under dir/debvisor.
func writeLayer(dir string, files map[string]layerFile) error {
	for _, p := range sortedKeys(files) {
		f := files[p]
		if err := writeFile(filepath.Join(dir, layerDir, p), f.data, f.mode); err != nil {
			return fmt.Errorf("layer %s: %w", p, err)
		}
	}
	return nil
}

// baseOverlay turns tree, a copy of the cached rootfs, into a slot's base:
// templates, users, host name, extra files, enabled units, no per-machine
// identity (host keys, machine-id), and symlinks where the layer's files
// go. The layer's units are present as real files while units are enabled
// (systemctl reads their [Install] sections), then replaced by the links.
func (b *builder) baseOverlay(ctx context.Context, tree string, layer map[string]layerFile) error {
	err := fs.WalkDir(templates.FS, "rootfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(tree, strings.TrimPrefix(p, "rootfs"))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := templates.FS.ReadFile(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if templates.Executables[p] {
			mode = 0o755
		}
		return writeFile(dst, data, mode)
	})
	if err != nil {
		return fmt.Errorf("templates: %w", err)
	}
	if err := writeFile(filepath.Join(tree, "etc/hostname"), []byte(b.spec.Hostname+"\n"), 0o644); err != nil {
		return err
	}
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n", b.spec.Hostname)
	if err := writeFile(filepath.Join(tree, "etc/hosts"), []byte(hosts), 0o644); err != nil {
		return err
	}
	for _, f := range b.spec.ExtraFiles {
		data := []byte(f.Content)
		if f.Source != "" {
			if data, err = os.ReadFile(b.spec.resolve(f.Source)); err != nil {
				return fmt.Errorf("extra file %s: %w", f.Path, err)
			}
		}
		mode := uint64(0o644)
		if f.Mode != "" {
			mode, _ = strconv.ParseUint(f.Mode, 8, 32)
		}
		if err := writeFile(filepath.Join(tree, f.Path), data, os.FileMode(mode)); err != nil {
			return fmt.Errorf("extra file %s: %w", f.Path, err)
		}
	}
	// Mount points the initramfs and fstab use must exist in the
	// read-only root.
	for _, d := range []string{osimage.DataMount, osimage.ESPMount, "/etc/debvisor", "/var/lib/debvisor"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return err
		}
	}
	if err := kernelLinks(tree); err != nil {
		return err
	}
	if err := b.users(ctx, tree); err != nil {
		return err
	}
	// Per-machine identity is made by firstboot, never shipped.
	keys, _ := filepath.Glob(filepath.Join(tree, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if err := os.Remove(k); err != nil {
			return err
		}
	}
	// apt's download directories are owned by _apt or by root depending
	// on whether apt could drop its privileges while mmdebstrap ran (two
	// otherwise identical trees differed only in this); the node never
	// runs apt, so they are root's, and a fresh rootfs gives the same base.
	for _, d := range []string{"var/cache/apt/archives/partial", "var/lib/apt/lists/partial"} {
		p := filepath.Join(tree, d)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := os.Lchown(p, 0, 0); err != nil {
			return err
		}
		if err := os.Chmod(p, 0o700); err != nil {
			return err
		}
	}
	if err := writeFile(filepath.Join(tree, "etc/machine-id"), nil, 0o444); err != nil {
		return err
	}
	os.Remove(filepath.Join(tree, "var/lib/dbus/machine-id"))
	chroot := func(args ...string) error {
		return b.cmd(ctx, nil, "chroot", append([]string{tree}, args...)...)
	}
	if err := chroot(append([]string{"systemctl", "enable"}, templates.Units...)...); err != nil {
		return fmt.Errorf("enable units: %w", err)
	}
	// kmscon owns tty1; apt's timers make no sense on an immutable root.
	if err := chroot("systemctl", "disable", "getty@tty1.service", "apt-daily.timer", "apt-daily-upgrade.timer"); err != nil {
		return fmt.Errorf("disable units: %w", err)
	}
	// libvirt's packaged "default" network is a NAT bridge with dnsmasq
	// and firewall rules: a node's VM networks are the operator's bridges
	// (and user-mode NICs), never an implicit NAT the node did not ask
	// for. Its definition carries a UUID made at install time, too.
	for _, f := range []string{"etc/libvirt/qemu/networks/autostart/default.xml", "etc/libvirt/qemu/networks/default.xml"} {
		if err := os.Remove(filepath.Join(tree, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("disable libvirt's default network: %w", err)
		}
	}
	for _, p := range sortedKeys(layer) {
		dst := filepath.Join(tree, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		// Relative, so the link resolves on the node and in a slot
		// extracted or mounted elsewhere (systemd-analyze --root, chroot,
		// inspect) alike.
		rel, err := filepath.Rel(filepath.Dir("/"+p), "/"+layerDir+"/"+p)
		if err != nil {
			return err
		}
		if err := os.Symlink(rel, dst); err != nil {
			return fmt.Errorf("link %s into the layer: %w", p, err)
		}
	}
	return nil
}

// kernelVersion returns the release of the one kernel in tree's /boot,
// which must have its initramfs.
func kernelVersion(tree string) (string, error) {
	kernels, _ := filepath.Glob(filepath.Join(tree, "boot/vmlinuz-*"))
	if len(kernels) != 1 {
		return "", fmt.Errorf("want exactly one kernel in /boot, found %d", len(kernels))
	}
	ver := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	if _, err := os.Stat(filepath.Join(tree, "boot/initrd.img-"+ver)); err != nil {
		return "", fmt.Errorf("initramfs for %s: %w", ver, err)
	}
	return ver, nil
}

// kernelLinks points /boot/vmlinuz and /boot/initrd.img at the one kernel
// in the tree: grub.cfg boots those fixed names from whichever slot.
func kernelLinks(tree string) error {
	ver, err := kernelVersion(tree)
	if err != nil {
		return err
	}
	for link, target := range map[string]string{"boot/vmlinuz": "vmlinuz-" + ver, "boot/initrd.img": "initrd.img-" + ver} {
		p := filepath.Join(tree, link)
		os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) users(ctx context.Context, tree string) error {
	for _, u := range b.spec.Users {
		home := "/root"
		if u.Name != "root" {
			home = "/home/" + u.Name
			args := []string{tree, "useradd", "--create-home", "--user-group", "--shell", orDefault(u.Shell, "/bin/bash")}
			if len(u.Groups) > 0 {
				args = append(args, "--groups", strings.Join(u.Groups, ","))
			}
			args = append(args, u.Name)
			if err := b.cmd(ctx, nil, "chroot", args...); err != nil {
				return fmt.Errorf("user %s: %w", u.Name, err)
			}
		}
		if len(u.SSHAuthorizedKeys) == 0 {
			continue
		}
		keys := strings.Join(u.SSHAuthorizedKeys, "\n") + "\n"
		ssh := filepath.Join(tree, home, ".ssh")
		if err := os.MkdirAll(ssh, 0o700); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(ssh, "authorized_keys"), []byte(keys), 0o600); err != nil {
			return err
		}
		if err := b.cmd(ctx, nil, "chroot", tree, "chown", "-R", u.Name+":", home+"/.ssh"); err != nil {
			return fmt.Errorf("user %s: %w", u.Name, err)
		}
	}
	return nil
}

// cmd runs a tool with SOURCE_DATE_EPOCH set, returning its output in the
// error when it fails.
func (b *builder) cmd(ctx context.Context, env []string, name string, args ...string) error {
	c := exec.CommandContext(ctx, name, args...)
	c.Env = withoutEnv(os.Environ(), "SOURCE_DATE_EPOCH")
	if env == nil || env[0] != noEpoch {
		c.Env = append(c.Env, fmt.Sprintf("SOURCE_DATE_EPOCH=%d", b.cmdEpoch()))
	}
	for _, e := range env {
		if e != noEpoch {
			c.Env = append(c.Env, e)
		}
	}
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	if out.Len() > 0 {
		b.log.Debug(name, "output", out.String())
	}
	return nil
}

// noEpoch as the first env entry keeps SOURCE_DATE_EPOCH out of a tool's
// environment (mksquashfs refuses it together with -all-time).
const noEpoch = "-SOURCE_DATE_EPOCH"

func withoutEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, key+"=") {
			out = append(out, e)
		}
	}
	return out
}

func writeFile(p string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	os.Remove(p)
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
