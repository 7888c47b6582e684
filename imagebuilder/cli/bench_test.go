package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
	"github.com/debvisor/debvisor/osimage/registry/registrytest"
)

// measured is one command's wall time and peak resident memory.
type measured struct {
	wall   time.Duration
	maxRSS int64 // bytes
}

func measure(b *testing.B, env []string, name string, args ...string) measured {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out.String())
	}
	wall := time.Since(start)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return measured{wall: wall, maxRSS: ru.Maxrss * 1024}
}

func buildBinary(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "debvisor-image")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/debvisor-image")
	cmd.Dir = registrytest.RepoRoot(b)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// BenchmarkOCISlot1GiB: push and pull of a 1 GiB slot artifact to and
// from Debian's docker-registry on loopback by the debvisor-image binary,
// side by side with `skopeo copy` of the same artifact in the same run.
// Targets (docs/benchmarks.md): at least 0.9x skopeo's rate each way, and
// at most 64 MiB resident memory. Each direction gets an empty registry
// so no blob is already there (and skopeo's blob cache cannot mount one).
//
//	go test -run '^$' -bench OCISlot1GiB -benchtime 1x -timeout 30m ./imagebuilder/cli/
func BenchmarkOCISlot1GiB(b *testing.B) {
	const size = 1 << 30
	skopeo := registrytest.Tool(b, "skopeo", "skopeo")
	bin := buildBinary(b)
	work := b.TempDir()
	src := filepath.Join(work, "release")
	artifacttest.Write(b, src, artifacttest.Spec{SlotSize: size, NoDisk: true, Version: "9.0.0"})
	keys := filepath.Join(work, "k")
	measure(b, nil, bin, "keygen", "-o", keys)
	rate := func(m measured) float64 { return float64(size) / (1 << 20) / m.wall.Seconds() }

	for i := 0; i < b.N; i++ {
		r1 := registrytest.StartDistribution(b, registrytest.DistributionConfig{})
		r2 := registrytest.StartDistribution(b, registrytest.DistributionConfig{})
		ref := r1.Host + "/debvisor/os:9.0.0"
		layout := filepath.Join(work, fmt.Sprintf("layout%d", i))
		pulled := filepath.Join(work, fmt.Sprintf("pulled%d", i))

		dvPush := measure(b, nil, bin, "push", src, ref, "--sign-key", keys+".key", "--insecure-http", "--progress", "quiet")
		dvPull := measure(b, nil, bin, "pull", ref, pulled, "--key", keys+".pub", "--artifact", "slot", "--insecure-http", "--progress", "quiet")
		skPull := measure(b, nil, skopeo, "copy", "--all", "--src-tls-verify=false", "docker://"+ref, "oci:"+layout+":9.0.0")
		skPush := measure(b, nil, skopeo, "copy", "--all", "--dest-tls-verify=false", "oci:"+layout+":9.0.0", "docker://"+r2.Host+"/debvisor/os:9.0.0")

		if got := artifacttest.FileDigest(b, filepath.Join(pulled, artifact.SlotFile)); got != artifacttest.FileDigest(b, filepath.Join(src, artifact.SlotFile)) {
			b.Fatal("pulled slot differs")
		}
		b.ReportMetric(rate(dvPush), "push-MiB/s")
		b.ReportMetric(rate(skPush), "skopeo-push-MiB/s")
		b.ReportMetric(rate(dvPull), "pull-MiB/s")
		b.ReportMetric(rate(skPull), "skopeo-pull-MiB/s")
		b.ReportMetric(float64(dvPush.maxRSS)/(1<<20), "push-RSS-MiB")
		b.ReportMetric(float64(dvPull.maxRSS)/(1<<20), "pull-RSS-MiB")
		b.ReportMetric(float64(skPush.maxRSS)/(1<<20), "skopeo-push-RSS-MiB")
		b.ReportMetric(float64(skPull.maxRSS)/(1<<20), "skopeo-pull-RSS-MiB")
		b.Logf("push: debvisor-image %.1fs (%.0f MiB/s, %d MiB RSS), skopeo %.1fs (%.0f MiB/s, %d MiB RSS): %.2fx",
			dvPush.wall.Seconds(), rate(dvPush), dvPush.maxRSS>>20, skPush.wall.Seconds(), rate(skPush), skPush.maxRSS>>20, rate(dvPush)/rate(skPush))
		b.Logf("pull: debvisor-image %.1fs (%.0f MiB/s, %d MiB RSS), skopeo %.1fs (%.0f MiB/s, %d MiB RSS): %.2fx",
			dvPull.wall.Seconds(), rate(dvPull), dvPull.maxRSS>>20, skPull.wall.Seconds(), rate(skPull), skPull.maxRSS>>20, rate(dvPull)/rate(skPull))
		for _, c := range []struct {
			what     string
			dv, base measured
		}{{"push", dvPush, skPush}, {"pull", dvPull, skPull}} {
			if r := rate(c.dv) / rate(c.base); r < 0.9 {
				b.Errorf("%s at %.2fx skopeo's rate, target 0.9x", c.what, r)
			}
			if c.dv.maxRSS > 64<<20 {
				b.Errorf("%s peaked at %d MiB resident, target 64 MiB", c.what, c.dv.maxRSS>>20)
			}
		}
		os.RemoveAll(layout)
		os.RemoveAll(pulled)
	}
}
