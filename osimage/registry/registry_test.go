package registry_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
	"github.com/debvisor/debvisor/osimage/registry"
)

// TestRoundTripInProcess: push, re-push (no blob bytes move: the
// counting registry proves it), sign, open, pull; the pulled directory
// holds the build's raw image and manifest byte for byte, and pushing it
// again gives the same release digest.
func TestRoundTripInProcess(t *testing.T) {
	host, count := inProcess(t)
	var mu sync.Mutex
	var pushed, pulled []registry.Progress
	c := client(t, registry.WithProgress(func(p registry.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if p.Op == "push" {
			pushed = append(pushed, p)
		} else {
			pulled = append(pulled, p)
		}
	}))
	s, v := key(t)
	dir, l := release(t, artifacttest.Spec{Version: "3.0.0"})
	want, _ := l.Index().Digest()

	firstRes, err := c.Push(ctx(t), ref(t, c, host+"/debvisor/os:3.0.0"), l.Index())
	if err != nil {
		t.Fatal(err)
	}
	d := firstRes.Digest
	if d.DigestStr() != want.String() {
		t.Fatalf("pushed %s, FromDir says %s", d.DigestStr(), want)
	}
	first := count.UploadBytes.Load()
	if first < 3<<20 || count.Uploads.Load() < 3 {
		t.Fatalf("first push uploaded %d bytes in %d uploads", first, count.Uploads.Load())
	}
	if first != firstRes.Uploaded {
		t.Fatalf("client counted %d bytes sent, the registry received %d", firstRes.Uploaded, first)
	}
	if len(pushed) == 0 || pushed[len(pushed)-1].Done != pushed[len(pushed)-1].Total {
		t.Fatalf("push progress did not reach its total: %+v", pushed)
	}

	// Re-push under the same tag, and under a new one: existence checks
	// only, no blob bytes.
	for _, tag := range []string{"3.0.0", "stable"} {
		count.Reset()
		res, err := c.Push(ctx(t), ref(t, c, host+"/debvisor/os:"+tag), l.Index())
		if err != nil {
			t.Fatal(err)
		}
		if n, u := count.UploadBytes.Load(), count.Uploads.Load(); n != 0 || u != 0 || res.Uploaded != 0 {
			t.Fatalf("re-push of an unchanged release as %s uploaded %d bytes in %d uploads (client counted %d)", tag, n, u, res.Uploaded)
		}
		if count.ManifestHeads.Load() == 0 {
			t.Fatalf("re-push as %s made no existence checks: the counter sees nothing", tag)
		}
	}
	// A new release whose slot did not change uploads everything but the
	// slot: the build manifest, the disk, the manifests.
	count.Reset()
	newer := t.TempDir()
	m := artifacttest.Write(t, newer, artifacttest.Spec{Version: "3.0.0"})
	m.Version = "3.0.1"
	rewriteManifest(t, newer, m)
	l2, err := artifact.FromDir(ctx(t), newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Push(ctx(t), ref(t, c, host+"/debvisor/os:3.0.1"), l2.Index()); err != nil {
		t.Fatal(err)
	}
	if n := count.UploadBytes.Load(); n == 0 || n >= m.Slot.Size {
		t.Fatalf("release with an unchanged slot uploaded %d bytes (slot is %d)", n, m.Slot.Size)
	}

	added, err := c.Sign(ctx(t), d, s)
	if err != nil || !added {
		t.Fatalf("sign: %v, added %v", err, added)
	}
	if added, err := c.Sign(ctx(t), d, s); err != nil || added {
		t.Fatalf("second sign with the same key: added %v, %v (want nothing written)", added, err)
	}

	rel, err := c.Open(ctx(t), ref(t, c, host+"/debvisor/os:3.0.0"), v)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Index.Metadata.Version != "3.0.0" || rel.Signature.KeyID != s.KeyID() || rel.Ref.DigestStr() != want.String() {
		t.Fatalf("opened %+v signed by %s", rel.Index.Metadata, rel.Signature.KeyID)
	}
	out := filepath.Join(t.TempDir(), "pulled")
	files, err := rel.PullToDir(ctx(t), out, artifact.Slot, artifact.Disk)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("pulled %v", files)
	}
	sameFile(t, filepath.Join(dir, "debvisor.raw"), filepath.Join(out, "debvisor.raw"))
	sameFile(t, filepath.Join(dir, osimage.ManifestFile), filepath.Join(out, osimage.ManifestFile))
	st, err := os.Stat(filepath.Join(out, "debvisor.raw"))
	if err != nil {
		t.Fatal(err)
	}
	if alloc := st.Sys().(*syscall.Stat_t).Blocks * 512; alloc >= st.Size()/2 {
		t.Errorf("pulled raw image allocates %d of %d bytes: not sparse", alloc, st.Size())
	}
	if len(pulled) == 0 || pulled[len(pulled)-1].Done != pulled[len(pulled)-1].Total || pulled[len(pulled)-1].Artifact != artifact.Disk {
		t.Fatalf("pull progress did not reach its total: last %+v", pulled[len(pulled)-1])
	}
	again, err := artifact.FromDir(ctx(t), out)
	if err != nil {
		t.Fatal(err)
	}
	if d2, _ := again.Index().Digest(); d2 != want {
		t.Fatalf("pulled directory is release %s, pushed %s", d2, want)
	}
	for _, f := range files {
		if strings.HasSuffix(f, ".partial") {
			t.Fatalf("partial file published: %s", f)
		}
	}
}

// TestPullMemoryDoesNotGrow: pulling a slot four times larger than the
// bound allocates far less than its size in total: nothing buffers a
// whole blob. (The registry here is in another process, so the counter
// sees the client alone.)
func TestPullMemoryDoesNotGrow(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 256 MiB")
	}
	reg := registryDistribution(t)
	c := client(t)
	s, v := key(t)
	const size = 256 << 20
	_, l := release(t, artifacttest.Spec{SlotSize: size, NoDisk: true})
	pushSigned(t, c, reg.Host+"/big:1", l, s)
	rel, err := c.Open(ctx(t), ref(t, c, reg.Host+"/big:1"), v)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	n, err := rel.Copy(ctx(t), artifact.Slot, discard{})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if n != size {
		t.Fatalf("copied %d bytes", n)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 32<<20 {
		t.Fatalf("pulling %d MiB allocated %d MiB: the blob is buffered", size>>20, got>>20)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestPlainHTTPOnlyWhenAsked: a registry on loopback that speaks HTTP is
// refused (go-containerregistry alone would use HTTP there silently).
func TestPlainHTTPOnlyWhenAsked(t *testing.T) {
	host, _ := inProcess(t)
	strict, err := registry.New()
	if err != nil {
		t.Fatal(err)
	}
	_, l := release(t, artifacttest.Spec{SlotSize: 4096})
	_, err = strict.Push(ctx(t), ref(t, strict, host+"/x:1"), l.Index())
	if !errors.Is(err, registry.ErrPlainHTTP) || !strings.Contains(err.Error(), "--insecure-http") {
		t.Fatalf("push over plain HTTP without asking: %v", err)
	}
	if _, err := client(t).Push(ctx(t), ref(t, client(t), host+"/x:1"), l.Index()); err != nil {
		t.Fatalf("with --insecure-http: %v", err)
	}
}
