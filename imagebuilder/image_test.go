package imagebuilder_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/debvisor/debvisor/imagebuilder"
	"github.com/debvisor/debvisor/osimage"
)

// extractPartition copies partition n of the raw image to its own file.
func extractPartition(t *testing.T, img *imagebuilder.Result, n int) string {
	t.Helper()
	p := img.Manifest.Partitions[n-1]
	out := filepath.Join(t.TempDir(), fmt.Sprintf("part%d.img", n))
	run(t, "dd", "if="+img.Raw, "of="+out, "bs=1M", fmt.Sprintf("skip=%d", p.Start>>20), fmt.Sprintf("count=%d", p.Size>>20), "conv=sparse", "status=none")
	return out
}

// TestImageAcceptedByIndependentTools checks the built image with tools
// that share no code with the builder: sgdisk, fsck.vfat, unsquashfs and
// systemd-analyze, plus the builder's own read-back (inspect).
func TestImageAcceptedByIndependentTools(t *testing.T) {
	requireTools(t, "sgdisk", "fsck.vfat", "unsquashfs", "systemd-analyze", "dd")
	img := defaultImage(t)

	out := run(t, "sgdisk", "-v", img.Raw)
	if !strings.Contains(out, "No problems found") {
		t.Fatalf("sgdisk -v:\n%s", out)
	}
	out = run(t, "sgdisk", "-p", img.Raw)
	for _, l := range []string{osimage.LabelESP, osimage.LabelA, osimage.LabelB, osimage.LabelData} {
		if !strings.Contains(out, l) {
			t.Fatalf("sgdisk -p does not list %s:\n%s", l, out)
		}
	}

	esp := extractPartition(t, img, osimage.PartESP)
	run(t, "fsck.vfat", "-n", esp)

	slot := extractPartition(t, img, osimage.PartA)
	out = run(t, "unsquashfs", "-s", slot)
	if !strings.Contains(out, "Compression xz") {
		t.Fatalf("unsquashfs -s:\n%s", out)
	}

	// systemd-analyze verify on the baked units, inside the slot's own tree
	// so ExecStart paths and dependencies resolve as on a node.
	tree := filepath.Join(t.TempDir(), "root")
	run(t, "unsquashfs", "-q", "-n", "-d", tree, slot)
	var units []string
	for _, u := range []string{"debvisor-rpcd.service", "debvisor-panel.service", "debvisor-firstboot.service",
		"debvisor-hostkeys.service", "debvisor-growdata.service", "debvisor-backup.service", "debvisor-backup.timer", "tsig-rotate.service", "tsig-rotate.timer", "debvisor-netcfg.service"} {
		// DebVisor's own files live in the slot's layer; /etc and /usr
		// hold absolute links into it, which only resolve inside the
		// node's root: give systemd-analyze the files themselves.
		units = append(units, "/"+inTree(t, tree, "etc/systemd/system/"+u))
	}
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--root=" + tree, "--man=no", "--recursive-errors=no"}, units...)...)
	vout, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, vout)
	}
	for _, exe := range []string{"usr/local/bin/debvisor-agent", "usr/local/bin/dvctl", "usr/local/sbin/validate-components.sh", "usr/local/sbin/debvisor-firstboot.sh"} {
		st, err := os.Stat(filepath.Join(tree, inTree(t, tree, exe)))
		if err != nil || st.Mode()&0o111 == 0 {
			t.Errorf("%s not an executable in the slot: %v", exe, err)
		}
	}
	if keys, _ := filepath.Glob(filepath.Join(tree, "etc/ssh/ssh_host_*")); len(keys) > 0 {
		t.Errorf("the slot ships SSH host keys: %v", keys)
	}

	rep, err := imagebuilder.Inspect(context.Background(), img.Raw)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	if rep.Slots["A"].Version != "0.1.0" || !rep.Slots["B"].Empty || rep.NextBoot != "A" {
		t.Fatalf("inspect report: %+v", rep)
	}
}

// inTree resolves p (relative to tree) through symbolic links the way the
// node sees them, with tree as /, and returns the path relative to tree.
func inTree(t *testing.T, tree, p string) string {
	t.Helper()
	for range 16 {
		target, err := os.Readlink(filepath.Join(tree, p))
		if err != nil {
			return p
		}
		if filepath.IsAbs(target) {
			p = strings.TrimPrefix(filepath.Clean(target), "/")
		} else {
			p = filepath.Join(filepath.Dir(p), target)
		}
	}
	t.Fatalf("%s: too many levels of symbolic links in the slot", p)
	return ""
}

// TestReproducible builds the default spec a second time with the same
// SOURCE_DATE_EPOCH (from the cached rootfs) and compares the raw images.
func TestReproducible(t *testing.T) {
	img := defaultImage(t)
	agent, dvctl := binaries(t)
	spec, err := imagebuilder.DefaultSpec()
	if err != nil {
		t.Fatal(err)
	}
	second, err := buildImage(context.Background(), t, spec, t.TempDir(), agent, dvctl)
	if err != nil {
		t.Fatal(err)
	}
	a, b := sha256File(t, img.Raw), sha256File(t, second.Raw)
	t.Logf("first %s\nsecond %s", a, b)
	if a != b {
		t.Fatalf("two builds of the same spec and epoch differ: %s vs %s (slot %s vs %s)", a, b, img.Manifest.Slot.Digest, second.Manifest.Slot.Digest)
	}
	if "sha256:"+a != img.Manifest.Files[0].Digest {
		t.Fatalf("manifest digest %s does not match the file (%s)", img.Manifest.Files[0].Digest, a)
	}
}

// TestReproducibleFromColdCache builds the default spec again with an empty
// cache: a root filesystem made afresh by mmdebstrap and a base compressed
// afresh must give the same image, byte for byte, as the shared build.
func TestReproducibleFromColdCache(t *testing.T) {
	img := defaultImage(t)
	agent, dvctl := binaries(t)
	spec, err := imagebuilder.DefaultSpec()
	if err != nil {
		t.Fatal(err)
	}
	cold := t.TempDir()
	var progress bytes.Buffer
	second, err := imagebuilder.Build(context.Background(), spec, filepath.Join(cold, "out"),
		imagebuilder.WithBinaries(agent, dvctl),
		imagebuilder.WithSourceDateEpoch(testEpoch),
		imagebuilder.WithCacheDir(filepath.Join(cold, "cache")),
		imagebuilder.WithProgress(imagebuilder.NewProgress(imagebuilder.ProgressPlain, &progress, nil)),
	)
	t.Logf("cold build:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	if second.RootfsCached || second.BaseCached {
		t.Fatalf("the cold build used a cache (rootfs %v, base %v)", second.RootfsCached, second.BaseCached)
	}
	a, b := sha256File(t, img.Raw), sha256File(t, second.Raw)
	t.Logf("shared cache %s\ncold cache   %s", a, b)
	if a != b {
		t.Logf("differences between the cached and the fresh root filesystems:\n%s", treeDiff(t, filepath.Join(imagebuilder.CacheDirFromEnv(), "rootfs"), filepath.Join(cold, "cache", "rootfs")))
		bases, _ := filepath.Glob(filepath.Join(cold, "cache", "base", "*.squashfs"))
		for _, fresh := range bases {
			shared := filepath.Join(imagebuilder.CacheDirFromEnv(), "base", filepath.Base(fresh))
			t.Logf("base %s: shared %s, fresh %s", filepath.Base(fresh), sha256File(t, shared), sha256File(t, fresh))
			la, _ := exec.Command("unsquashfs", "-lln", shared).Output()
			lb, _ := exec.Command("unsquashfs", "-lln", fresh).Output()
			if !bytes.Equal(la, lb) {
				t.Logf("unsquashfs -lln of the two bases differ:\n%s", lineDiff(string(la), string(lb), 40))
			}
		}
		t.Fatalf("a build from a cold cache differs: %s vs %s (slot %s vs %s)", a, b, img.Manifest.Slot.Digest, second.Manifest.Slot.Digest)
	}
}

// xattrs describes the extended attributes of p (not following links).
func xattrs(p string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var out []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		v := make([]byte, 1024)
		m, _ := unix.Lgetxattr(p, name, v)
		if m < 0 {
			m = 0
		}
		out = append(out, fmt.Sprintf("%s=%x", name, v[:m]))
	}
	sort.Strings(out)
	return " " + strings.Join(out, ",")
}

// lineDiff lists up to max lines that are in one text and not the other.
func lineDiff(a, b string, max int) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for l := range ma {
		if !mb[l] {
			out = append(out, "- "+l)
		}
	}
	for l := range mb {
		if !ma[l] {
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	if len(out) > max {
		out = append(out[:max], fmt.Sprintf("... %d more", len(out)-max))
	}
	return strings.Join(out, "\n")
}

// treeDiff names the files that differ between the one cached tree under
// each of two rootfs cache directories (content, then owner/mode/time).
func treeDiff(t *testing.T, dirA, dirB string) string {
	t.Helper()
	tree := func(dir string) string {
		m, _ := filepath.Glob(filepath.Join(dir, "*", "tree"))
		if len(m) == 0 {
			m, _ = filepath.Glob(filepath.Join(dir, "*"))
		}
		for _, p := range m {
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				return p
			}
		}
		return dir
	}
	b := tree(dirB)
	a := filepath.Join(dirA, filepath.Base(b))
	out, _ := exec.Command("diff", "-rq", "--no-dereference", a, b).CombinedOutput()
	meta := func(root string) map[string]string {
		m := map[string]string{}
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			// Times are left out: mksquashfs sets every one to the epoch.
			desc := fi.Mode().String()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				desc += fmt.Sprintf(" %d:%d nlink=%d rdev=%d", st.Uid, st.Gid, st.Nlink, st.Rdev)
			}
			if fi.Mode().IsRegular() {
				desc += fmt.Sprintf(" size=%d", fi.Size())
			}
			desc += xattrs(p)
			m[rel] = desc
			return nil
		})
		return m
	}
	ma, mb := meta(a), meta(b)
	var lines []string
	for k, v := range ma {
		if mb[k] != v {
			lines = append(lines, fmt.Sprintf("%s: %q vs %q", k, v, mb[k]))
		}
	}
	for k, v := range mb {
		if _, ok := ma[k]; !ok {
			lines = append(lines, fmt.Sprintf("%s: only in the fresh tree (%q)", k, v))
		}
	}
	sort.Strings(lines)
	if len(lines) > 40 {
		lines = append(lines[:40], fmt.Sprintf("... %d more", len(lines)-40))
	}
	s := string(out)
	if len(s) > 8000 {
		s = s[:8000] + "\n..."
	}
	return fmt.Sprintf("%s vs %s\ncontent:\n%s\nmetadata:\n%s", a, b, s, strings.Join(lines, "\n"))
}

// TestBuildFailuresLeaveNothing: a malformed spec, a missing package and
// an unreachable mirror each fail with a clear error and leave no image.
func TestBuildFailuresLeaveNothing(t *testing.T) {
	requireTools(t, "mmdebstrap")
	agent, dvctl := binaries(t)
	if _, err := imagebuilder.ParseSpec([]byte("suite: bookworm\nslot_size: lots\n"), ""); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("malformed spec: %v", err)
	}
	tests := []struct {
		name, spec string
		want       []string
	}{
		{"missing package", "packages: [debvisor-no-such-package]\n", []string{"debvisor-no-such-package"}},
		{"unreachable mirror", "mirror: http://127.0.0.1:9/debian\n", []string{"mirror http://127.0.0.1:9/debian is unreachable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := imagebuilder.ParseSpec([]byte(tt.spec), "")
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out")
			cache := t.TempDir()
			_, err = imagebuilder.Build(context.Background(), spec, out, imagebuilder.WithBinaries(agent, dvctl), imagebuilder.WithCacheDir(cache))
			if err == nil {
				t.Fatal("build succeeded")
			}
			t.Logf("error: %v", err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q: %v", w, err)
				}
			}
			left, _ := os.ReadDir(out)
			if len(left) != 0 {
				t.Fatalf("failed build left %v in the output dir", left)
			}
			if ents, _ := filepath.Glob(filepath.Join(cache, "rootfs", "*", "usr")); len(ents) != 0 {
				t.Fatalf("failed build left a cached rootfs: %v", ents)
			}
		})
	}
}
