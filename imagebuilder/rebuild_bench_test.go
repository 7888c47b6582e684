package imagebuilder_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/debvisor/debvisor/imagebuilder"
)

// BenchmarkRebuildAgentOnly is what CI pays when only DebVisor's own
// binaries changed: a whole build of the default spec (raw image, no
// qcow2) whose agent binary differs from the cached build's (a copy with a
// few bytes appended each iteration), next to mksquashfs alone of the
// cached Debian tree with the same compressor and flags in the same run:
// what a build that compresses the whole tree again would pay at least.
// Target: rebuild <= 0.3x mksquashfs. The build must report its base as
// cached, else the figure is not a rebuild and the benchmark fails.
//
//	go test -run '^$' -bench RebuildAgentOnly -benchtime 3x ./imagebuilder/
func BenchmarkRebuildAgentOnly(b *testing.B) {
	defaultImage(b) // warms the rootfs and base caches
	agent, dvctl := binaries(b)
	spec, err := imagebuilder.DefaultSpec()
	if err != nil {
		b.Fatal(err)
	}
	tree := cachedRootfs(b)
	var rebuild, squash time.Duration
	phases := map[string]time.Duration{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		changed := filepath.Join(b.TempDir(), "debvisor-agent")
		copyFile(b, agent, changed, fmt.Sprintf("\n# rebuild %d %d\n", i, time.Now().UnixNano()))
		var events bytes.Buffer
		t0 := time.Now()
		res, err := imagebuilder.Build(context.Background(), spec, b.TempDir(), imagebuilder.WithBinaries(changed, dvctl),
			imagebuilder.WithSourceDateEpoch(testEpoch), imagebuilder.WithQcow2(false),
			imagebuilder.WithProgress(imagebuilder.NewProgress(imagebuilder.ProgressJSON, &events, nil)))
		if err != nil {
			b.Fatal(err)
		}
		rebuild += time.Since(t0)
		if !res.RootfsCached || !res.BaseCached {
			b.Fatalf("not a rebuild: rootfs cached %v, base cached %v", res.RootfsCached, res.BaseCached)
		}
		dec := json.NewDecoder(&events)
		for dec.More() {
			var ev imagebuilder.Event
			if err := dec.Decode(&ev); err != nil {
				b.Fatalf("progress event: %v", err)
			}
			if ev.Event == "done" {
				phases[ev.Phase] += time.Duration(ev.Duration * float64(time.Second))
			}
		}
		out := filepath.Join(b.TempDir(), "alone.squashfs")
		t0 = time.Now()
		cmd := exec.Command("mksquashfs", imagebuilder.MksquashfsArgs(tree, out, spec.Compression, strconv.Itoa(testEpoch), runtime.NumCPU())...)
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("mksquashfs: %v\n%s", err, o)
		}
		squash += time.Since(t0)
	}
	n := float64(b.N)
	b.ReportMetric(rebuild.Seconds()/n, "rebuild-s/op")
	b.ReportMetric(squash.Seconds()/n, "mksquashfs-s/op")
	b.ReportMetric(rebuild.Seconds()/squash.Seconds(), "ratio")
	for p, d := range phases {
		b.Logf("phase %s: %.1f s/op", p, d.Seconds()/n)
	}
}

// cachedRootfs is the cached Debian tree of the default spec.
func cachedRootfs(b *testing.B) string {
	b.Helper()
	root := filepath.Join(imagebuilder.CacheDirFromEnv(), "rootfs")
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(root, e.Name(), "usr/bin")); e.IsDir() && err == nil {
			return filepath.Join(root, e.Name())
		}
	}
	b.Fatal("no cached rootfs")
	return ""
}

func copyFile(b *testing.B, src, dst, trailer string) {
	b.Helper()
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		b.Fatal(err)
	}
	if _, err := out.WriteString(trailer); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
}
