package imagebuilder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/debvisor/debvisor/templates"
)

type slotInfo struct {
	path   string
	size   int64
	digest string
}

// BaseEpoch stamps every file of a slot's base (and SOURCE_DATE_EPOCH for
// the tools that make it): the base is cached across builds with different
// epochs, so its bytes may not depend on them. The layer carries the
// build's own epoch.
const BaseEpoch = 1700000000

// baseFormat changes whenever the way a base is made changes.
// v2: the links into the layer are relative (they resolve inside an
// extracted or mounted slot, too). v3: apt's partial directories are
// root's; libvirt-guests stops waiting for guests after a minute.
const baseFormat = "debvisor-base-v3"

// keepBases is how many cached bases the cache keeps (newest first).
const keepBases = 3

// baseKey hashes everything a slot's base depends on: the cached rootfs,
// the compressor, the spec's host name, users and extra files, the
// templates outside the layer, and which paths the layer links with the
// [Install] sections of the layer's units (they decide the symlinks
// `systemctl enable` makes).
func (b *builder) baseKey(rootfsKey string, layer map[string]layerFile) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\nrootfs=%s\ncompression=%s\nhostname=%s\n", baseFormat, rootfsKey, b.spec.Compression, b.spec.Hostname)
	users, err := json.Marshal(b.spec.Users)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "users=%s\n", users)
	for _, f := range b.spec.ExtraFiles {
		data := []byte(f.Content)
		if f.Source != "" {
			if data, err = os.ReadFile(b.spec.resolve(f.Source)); err != nil {
				return "", fmt.Errorf("extra file %s: %w", f.Path, err)
			}
		}
		fmt.Fprintf(h, "extra=%s mode=%s sha256=%x\n", f.Path, f.Mode, sha256.Sum256(data))
	}
	err = fs.WalkDir(templates.FS, "rootfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || layerTemplate(p) {
			return err
		}
		data, err := templates.FS.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "template=%s exec=%v sha256=%x\n", p, templates.Executables[p], sha256.Sum256(data))
		return nil
	})
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "units=%s\n", strings.Join(templates.Units, ","))
	for _, p := range sortedKeys(layer) {
		fmt.Fprintf(h, "layer=%s install=%q\n", p, installSection(layer[p].data, p))
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// installSection returns a unit file's [Install] section (empty for other
// files).
func installSection(data []byte, p string) string {
	if !strings.HasPrefix(p, "etc/systemd/system/") {
		return ""
	}
	var out []string
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			in = t == "[Install]"
			continue
		}
		if in && t != "" && !strings.HasPrefix(t, "#") {
			out = append(out, t)
		}
	}
	return strings.Join(out, "\n")
}

// ensureBase returns the cached base squashfs for key, making it from the
// rootfs when absent. Concurrent builders of the same key wait for each
// other on a lock file.
func (b *builder) ensureBase(ctx context.Context, rootfs, key string, layer map[string]layerFile) (path string, cached bool, err error) {
	dir := filepath.Join(b.opts.cacheDir, "base")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, fmt.Errorf("cache dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", false, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", false, fmt.Errorf("lock base cache: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck
	path = filepath.Join(dir, key+".squashfs")
	if _, err := os.Stat(path); err == nil {
		now := time.Now()
		_ = os.Chtimes(path, now, now) // recently used: pruned last
		return path, true, nil
	}

	b.baseBuild = true
	defer func() { b.baseBuild = false }()
	tree := filepath.Join(b.work, "tree")
	if err := b.cmd(ctx, nil, "cp", "-a", "--reflink=auto", rootfs+"/.", tree+"/"); err != nil {
		return "", false, fmt.Errorf("copy rootfs: %w", err)
	}
	defer os.RemoveAll(tree)
	if err := b.baseOverlay(ctx, tree, layer); err != nil {
		return "", false, err
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	defer os.Remove(tmp)
	epoch := strconv.FormatInt(BaseEpoch, 10)
	if err := b.cmd(ctx, []string{noEpoch}, "mksquashfs", MksquashfsArgs(tree, tmp, b.spec.Compression, epoch, b.opts.processors)...); err != nil {
		return "", false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", false, fmt.Errorf("cache base: %w", err)
	}
	pruneBases(dir, keepBases, b.log.Warn)
	return path, false, nil
}

// pruneBases removes all but the keep most recently used bases.
func pruneBases(dir string, keep int, warn func(string, ...any)) {
	matches, _ := filepath.Glob(filepath.Join(dir, "*.squashfs"))
	type entry struct {
		path string
		used time.Time
	}
	var es []entry
	for _, m := range matches {
		if st, err := os.Stat(m); err == nil {
			es = append(es, entry{m, st.ModTime()})
		}
	}
	sort.Slice(es, func(i, j int) bool { return es[i].used.After(es[j].used) })
	for i := keep; i < len(es); i++ {
		if err := os.Remove(es[i].path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			warn("prune cached base", "path", es[i].path, "err", err)
		}
		os.Remove(strings.TrimSuffix(es[i].path, ".squashfs") + ".lock")
	}
}

// slotSquashfs makes the slot: a copy of the base with the layer appended
// (mksquashfs appends into the existing filesystem, reusing its
// compressor; -reproducible and the fixed times make the bytes a function
// of the base and the layer).
func (b *builder) slotSquashfs(ctx context.Context, base string, layer map[string]layerFile) (slotInfo, error) {
	out := filepath.Join(b.work, "slot.squashfs")
	if err := copyFile(base, out); err != nil {
		return slotInfo{}, fmt.Errorf("copy base: %w", err)
	}
	dir := filepath.Join(b.work, "layer")
	if err := writeLayer(dir, layer); err != nil {
		return slotInfo{}, err
	}
	defer os.RemoveAll(dir)
	epoch := strconv.FormatInt(b.epoch, 10)
	args := []string{dir, out, "-reproducible", "-mkfs-time", epoch, "-all-time", epoch,
		"-processors", strconv.Itoa(b.opts.processors), "-no-recovery", "-no-progress", "-quiet"}
	if err := b.cmd(ctx, []string{noEpoch}, "mksquashfs", args...); err != nil {
		return slotInfo{}, fmt.Errorf("append the layer: %w", err)
	}
	f, err := os.Open(out)
	if err != nil {
		return slotInfo{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return slotInfo{}, err
	}
	if n > int64(b.spec.SlotSize) {
		return slotInfo{}, fmt.Errorf("the slot filesystem is %d MiB but slot_size is %s: raise slot_size or drop packages", n>>20, b.spec.SlotSize)
	}
	return slotInfo{path: out, size: n, digest: "sha256:" + hex.EncodeToString(h.Sum(nil))}, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// MksquashfsArgs is the exact mksquashfs invocation the builder uses for a
// base (exported so the benchmark runs the same command alone).
func MksquashfsArgs(tree, out, comp, epoch string, processors int) []string {
	return []string{tree, out, "-noappend", "-comp", comp, "-reproducible",
		"-mkfs-time", epoch, "-all-time", epoch, "-processors", strconv.Itoa(processors),
		"-no-progress", "-quiet"}
}
