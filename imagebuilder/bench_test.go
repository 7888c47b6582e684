package imagebuilder_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/debvisor/debvisor/imagebuilder"
)

// BenchmarkImageBuildFromCache times a whole build of the default spec
// from a warm rootfs cache to a finished raw image (no qcow2), and in the
// same run mksquashfs alone on the cached rootfs with the same compressor
// and flags. Target: build <= 1.15x mksquashfs.
//
//	go test -run '^$' -bench ImageBuildFromCache -benchtime 1x ./imagebuilder/
func BenchmarkImageBuildFromCache(b *testing.B) {
	img := defaultImage(b) // warms the cache
	agent, dvctl := binaries(b)
	spec, err := imagebuilder.DefaultSpec()
	if err != nil {
		b.Fatal(err)
	}
	cacheRoot := filepath.Join(imagebuilder.CacheDirFromEnv(), "rootfs")
	var tree string
	ents, _ := os.ReadDir(cacheRoot)
	for _, e := range ents {
		if e.IsDir() && !filepath.IsAbs(e.Name()) {
			if _, err := os.Stat(filepath.Join(cacheRoot, e.Name(), "usr/bin")); err == nil {
				tree = filepath.Join(cacheRoot, e.Name())
			}
		}
	}
	if tree == "" {
		b.Fatal("no cached rootfs")
	}
	_ = img
	var build, squash time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := imagebuilder.Build(context.Background(), spec, b.TempDir(), imagebuilder.WithBinaries(agent, dvctl),
			imagebuilder.WithSourceDateEpoch(testEpoch), imagebuilder.WithQcow2(false)); err != nil {
			b.Fatal(err)
		}
		build += time.Since(t0)
		out := filepath.Join(b.TempDir(), "alone.squashfs")
		t0 = time.Now()
		cmd := exec.Command("mksquashfs", imagebuilder.MksquashfsArgs(tree, out, spec.Compression, strconv.Itoa(testEpoch), runtime.NumCPU())...)
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("mksquashfs: %v\n%s", err, o)
		}
		squash += time.Since(t0)
	}
	b.ReportMetric(build.Seconds()/float64(b.N), "build-s/op")
	b.ReportMetric(squash.Seconds()/float64(b.N), "mksquashfs-s/op")
	b.ReportMetric(build.Seconds()/squash.Seconds(), "ratio")
}

// BenchmarkImageBootToAgent boots the default image (UEFI, OVMF, TCG:
// OVMF fails under KVM here) from power-on to the first successful mTLS
// `dvctl status`, and reports the median of the runs.
//
//	go test -run '^$' -bench ImageBootToAgent -benchtime 5x ./imagebuilder/
func BenchmarkImageBootToAgent(b *testing.B) {
	benchBootToAgent(b, vmConfig{Firmware: "uefi"})
}

// BenchmarkImageBootToAgentBIOSKVM is the same through the image's legacy
// BIOS path: SeaBIOS under KVM. Target: median <= 20 s. It fails at once
// where KVM cannot run that path in hardware (imagebuilder.KVMForBIOS: the
// development machines' PVM emulates it and GRUB alone takes minutes).
func BenchmarkImageBootToAgentBIOSKVM(b *testing.B) {
	if ok, why := imagebuilder.KVMForBIOS(); !ok {
		b.Fatalf("no hardware-assisted KVM for the BIOS path: %s", why)
	}
	benchBootToAgent(b, vmConfig{Firmware: "bios", Accel: "kvm"})
}

// BenchmarkImageBootToAgentBIOSTCG is the BIOS path under TCG, what the
// tests use where KVM cannot run it.
func BenchmarkImageBootToAgentBIOSTCG(b *testing.B) {
	benchBootToAgent(b, vmConfig{Firmware: "bios", Accel: "tcg"})
}

func benchBootToAgent(b *testing.B, cfg vmConfig) {
	img := defaultImage(b)
	seed := newSeed(b)
	var runs []float64
	var accel string
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		cfg.DiskSize, cfg.Seed, cfg.Network = "6G", seed.seed, true
		v := startVM(b, img.Raw, cfg, seed.sshKey)
		accel = v.accel
		deadline := time.Now().Add(bootTimeout)
		for {
			if _, err := dvctlStatus(b, seed, v.apiPort); err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("agent did not answer within %s", bootTimeout)
			}
			time.Sleep(500 * time.Millisecond)
		}
		runs = append(runs, time.Since(t0).Seconds())
		v.stop()
	}
	sort.Float64s(runs)
	b.ReportMetric(runs[len(runs)/2], "median-s/boot")
	b.Logf("%s/%s boot-to-agent seconds: %v", cfg.Firmware, accel, runs)
}
