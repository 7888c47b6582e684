package imagebuilder_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/debvisor/debvisor/imagebuilder"
	"github.com/debvisor/debvisor/internal/qemu"
)

// testEpoch is the SOURCE_DATE_EPOCH every test build uses.
const testEpoch = 1700000000

// requireTools fails (never skips) when a tool the test needs is absent:
// scripts/install-deps installs them all.
func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (scripts/install-deps installs it): %v", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("image tests need root (mmdebstrap, chroot)")
	}
}

func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

var (
	binOnce            sync.Once
	binDir             string
	binErr             error
	imageOnce          sync.Once
	sharedImage        *imagebuilder.Result
	sharedImageErr     error
	sharedImageWorkDir string
)

// binaries builds debvisor-agent and dvctl once per test process.
func binaries(t testing.TB) (agent, dvctl string) {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "debvisor-bin-")
		if binErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", binDir+"/", "./cmd/debvisor-agent", "./cmd/dvctl")
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "debvisor-agent"), filepath.Join(binDir, "dvctl")
}

// defaultImage builds the embedded default spec once per test process (the
// rootfs comes from the cache when warm) and shares it between tests; boots
// use copy-on-write overlays so the image itself never changes.
func defaultImage(t testing.TB) *imagebuilder.Result {
	t.Helper()
	requireTools(t, "mmdebstrap", "mksquashfs", "grub-mkimage", "mkfs.ext4", "qemu-img")
	agent, dvctl := binaries(t)
	imageOnce.Do(func() {
		spec, err := imagebuilder.DefaultSpec()
		if err != nil {
			sharedImageErr = err
			return
		}
		sharedImageWorkDir, err = os.MkdirTemp("", "debvisor-image-")
		if err != nil {
			sharedImageErr = err
			return
		}
		sharedImage, sharedImageErr = buildImage(context.Background(), t, spec, filepath.Join(sharedImageWorkDir, "out"), agent, dvctl)
	})
	if sharedImageErr != nil {
		t.Fatalf("build default image: %v", sharedImageErr)
	}
	return sharedImage
}

func buildImage(ctx context.Context, t testing.TB, spec *imagebuilder.Spec, out, agent, dvctl string) (*imagebuilder.Result, error) {
	var progress bytes.Buffer
	res, err := imagebuilder.Build(ctx, spec, out,
		imagebuilder.WithBinaries(agent, dvctl),
		imagebuilder.WithSourceDateEpoch(testEpoch),
		imagebuilder.WithProgress(imagebuilder.NewProgress(imagebuilder.ProgressPlain, &progress, nil)),
	)
	t.Logf("build %s:\n%s", out, progress.String())
	return res, err
}

func sha256File(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func freePort(t testing.TB) int {
	t.Helper()
	p, err := qemu.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitFor polls cond until it returns true or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(2 * time.Second)
	}
}
