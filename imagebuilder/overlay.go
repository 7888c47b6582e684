package imagebuilder

import (
	"bytes"
	"context"
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

// overlay copies the cached rootfs to the work dir and turns it into a
// DebVisor slot: templates, binaries, users, extra files, enabled units,
// and no per-machine identity (host keys, machine-id).
func (b *builder) overlay(ctx context.Context, rootfs string) error {
	b.tree = filepath.Join(b.work, "tree")
	if err := b.cmd(ctx, nil, "cp", "-a", "--reflink=auto", rootfs+"/.", b.tree+"/"); err != nil {
		return fmt.Errorf("copy rootfs: %w", err)
	}
	err := fs.WalkDir(templates.FS, "rootfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(b.tree, strings.TrimPrefix(p, "rootfs"))
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
	for src, dst := range map[string]string{b.opts.agentBin: "usr/local/bin/debvisor-agent", b.opts.dvctlBin: "usr/local/bin/dvctl"} {
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("bake binary: %w", err)
		}
		if err := writeFile(filepath.Join(b.tree, dst), data, 0o755); err != nil {
			return err
		}
	}
	release := osimage.Release{Version: b.spec.Version, SpecDigest: b.digest, SourceDateEpoch: b.epoch}.Marshal()
	if err := writeFile(filepath.Join(b.tree, osimage.ReleaseFile), release, 0o644); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(b.tree, "etc/hostname"), []byte(b.spec.Hostname+"\n"), 0o644); err != nil {
		return err
	}
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n", b.spec.Hostname)
	if err := writeFile(filepath.Join(b.tree, "etc/hosts"), []byte(hosts), 0o644); err != nil {
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
		if err := writeFile(filepath.Join(b.tree, f.Path), data, os.FileMode(mode)); err != nil {
			return fmt.Errorf("extra file %s: %w", f.Path, err)
		}
	}
	// Mount points the initramfs and fstab use must exist in the
	// read-only root.
	for _, d := range []string{osimage.DataMount, osimage.ESPMount, "/etc/debvisor", "/var/lib/debvisor"} {
		if err := os.MkdirAll(filepath.Join(b.tree, d), 0o755); err != nil {
			return err
		}
	}
	if err := b.kernelLinks(); err != nil {
		return err
	}
	if err := b.users(ctx); err != nil {
		return err
	}
	// Per-machine identity is made by firstboot, never shipped.
	keys, _ := filepath.Glob(filepath.Join(b.tree, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if err := os.Remove(k); err != nil {
			return err
		}
	}
	for _, f := range []string{"etc/machine-id"} {
		if err := writeFile(filepath.Join(b.tree, f), nil, 0o444); err != nil {
			return err
		}
	}
	os.Remove(filepath.Join(b.tree, "var/lib/dbus/machine-id"))
	chroot := func(args ...string) error {
		return b.cmd(ctx, nil, "chroot", append([]string{b.tree}, args...)...)
	}
	if err := chroot(append([]string{"systemctl", "enable"}, templates.Units...)...); err != nil {
		return fmt.Errorf("enable units: %w", err)
	}
	// kmscon owns tty1; apt's timers make no sense on an immutable root.
	if err := chroot("systemctl", "disable", "getty@tty1.service", "apt-daily.timer", "apt-daily-upgrade.timer"); err != nil {
		return fmt.Errorf("disable units: %w", err)
	}
	return nil
}

// kernelLinks points /boot/vmlinuz and /boot/initrd.img at the one kernel
// in the tree: grub.cfg boots those fixed names from whichever slot.
func (b *builder) kernelLinks() error {
	kernels, _ := filepath.Glob(filepath.Join(b.tree, "boot/vmlinuz-*"))
	if len(kernels) != 1 {
		return fmt.Errorf("want exactly one kernel in /boot, found %d", len(kernels))
	}
	ver := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	if _, err := os.Stat(filepath.Join(b.tree, "boot/initrd.img-"+ver)); err != nil {
		return fmt.Errorf("initramfs for %s: %w", ver, err)
	}
	for link, target := range map[string]string{"boot/vmlinuz": "vmlinuz-" + ver, "boot/initrd.img": "initrd.img-" + ver} {
		p := filepath.Join(b.tree, link)
		os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) users(ctx context.Context) error {
	for _, u := range b.spec.Users {
		home := "/root"
		if u.Name != "root" {
			home = "/home/" + u.Name
			args := []string{b.tree, "useradd", "--create-home", "--user-group", "--shell", orDefault(u.Shell, "/bin/bash")}
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
		ssh := filepath.Join(b.tree, home, ".ssh")
		if err := os.MkdirAll(ssh, 0o700); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(ssh, "authorized_keys"), []byte(keys), 0o600); err != nil {
			return err
		}
		if err := b.cmd(ctx, nil, "chroot", b.tree, "chown", "-R", u.Name+":", home+"/.ssh"); err != nil {
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
		c.Env = append(c.Env, fmt.Sprintf("SOURCE_DATE_EPOCH=%d", b.epoch))
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
