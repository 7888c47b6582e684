package agentcmd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
	"github.com/debvisor/debvisor/osimage/registry"
	"github.com/debvisor/debvisor/osimage/registry/registrytest"
	"github.com/debvisor/debvisor/osimage/signature"
	testagent "github.com/debvisor/debvisor/testenv/agent"
)

// BenchmarkUpgrade1GiB runs the real agent as a node would (slot
// partitions as files, the boot environment in a directory) and upgrades
// it from a 1 GiB signed slot release in docker-registry on loopback. In
// the same run, dd writes the same bytes to the same target. It reports
// the slot write rate (the write phase: download, hash, write, fsync, as
// dd conv=fsync's rate includes its fsync), the read-back verification
// separately and the two together (dd verifies nothing), dd's rate, the
// whole upgrade, and the agent's peak resident memory during it. Phases are
// seen by polling the operation every 20 ms.
//
//	go test -run '^$' -bench Upgrade1GiB -benchtime 3x -timeout 30m ./nodeagent/agentcmd/
func BenchmarkUpgrade1GiB(b *testing.B) {
	const size = 1 << 30
	ctx := context.Background()
	work := b.TempDir()
	src := filepath.Join(work, "release")
	artifacttest.Write(b, src, artifacttest.Spec{SlotSize: size, NoDisk: true, Version: "9.0.0"})
	slotFile := filepath.Join(src, artifact.SlotFile)

	reg := registrytest.StartDistribution(b, registrytest.DistributionConfig{})
	rc, err := registry.New(registry.WithInsecureHTTP(true))
	if err != nil {
		b.Fatal(err)
	}
	k, err := signature.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := signature.NewSigner(k)
	if err != nil {
		b.Fatal(err)
	}
	pub, err := signature.MarshalPublicKey(&k.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	l, err := artifact.FromDir(ctx, src, artifact.WithKinds(artifact.Slot))
	if err != nil {
		b.Fatal(err)
	}
	ref, err := rc.ParseReference(reg.Host + "/debvisor/os:9.0.0")
	if err != nil {
		b.Fatal(err)
	}
	pr, err := rc.Push(ctx, ref, l.Index())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := rc.Sign(ctx, pr.Digest, signer); err != nil {
		b.Fatal(err)
	}

	// The node: slots as 1.1 GiB files, the ESP's environment, a kernel
	// command line that says slot A booted, version 1.0.0. Slot B, the one
	// written, holds data already, as a partition does: writing into a
	// fresh file's holes measures ext4's block allocation (dd gets about
	// 200 MiB/s so), and dd, which runs second, would overwrite the blocks
	// the agent's write allocated.
	node := filepath.Join(work, "node")
	must := func(err error) {
		b.Helper()
		if err != nil {
			b.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(node, "esp"), 0o755))
	must(bootenv.NewStore(bootenv.DirFS{Root: filepath.Join(node, "esp")}).Save(ctx, bootenv.New()))
	for _, s := range []string{"a", "b"} {
		f, err := os.Create(filepath.Join(node, "slot-"+s))
		must(err)
		if s == "b" {
			old := bytes.Repeat([]byte{0xA5}, 4<<20)
			for off := int64(0); off < size+100<<20; off += int64(len(old)) {
				_, err := f.WriteAt(old, off)
				must(err)
			}
			must(f.Sync())
		}
		must(f.Truncate(size + 100<<20))
		must(f.Close())
	}
	must(os.WriteFile(filepath.Join(node, "cmdline"), []byte("ro debvisor.slot=A debvisor.fallback=0\n"), 0o644))
	must(os.WriteFile(filepath.Join(node, "release"), osimage.Release{Version: "1.0.0", Arch: osimage.Arch}.Marshal(), 0o644))
	must(os.WriteFile(filepath.Join(node, "release.pub"), pub, 0o644))

	a, err := testagent.Start(ctx, testagent.Options{Dir: filepath.Join(work, "agent"), NoLibvirt: true, ExtraConfig: fmt.Sprintf(`upgrade:
  esp: %[1]s/esp
  slot_a: %[1]s/slot-a
  slot_b: %[1]s/slot-b
  trusted_keys: [%[1]s/release.pub]
  insecure_http: true
  cmdline_file: %[1]s/cmdline
  release_file: %[1]s/release
`, node)})
	must(err)
	defer a.Stop()
	c, err := client.New(client.Config{Endpoint: a.Endpoint, CAFile: a.Admin.CAFile, CertFile: a.Admin.CertFile, KeyFile: a.Admin.KeyFile})
	must(err)
	defer c.Close()
	up := v1.NewUpgradeServiceClient(c.Conn())
	pid := a.PID()
	mib := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }

	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		op, err := up.Upgrade(ctx, &v1.UpgradeRequest{Ref: ref.String(), Mode: v1.UpgradeRequest_MODE_STAGE, Force: true})
		must(err)
		var peak float64
		var writeStart, readBack time.Time
		for {
			if rss, err := vmRSS(pid); err == nil && rss > peak {
				peak = rss
			}
			cur, err := c.Operations.GetOperation(ctx, &v1.GetOperationRequest{OperationId: op.GetId()})
			must(err)
			now := time.Now()
			if cur.GetPhase() == "write" && writeStart.IsZero() {
				writeStart = now
			}
			if cur.GetPhase() == "read-back" && readBack.IsZero() {
				readBack = now
			}
			if cur.GetState() != v1.Operation_STATE_RUNNING && cur.GetState() != v1.Operation_STATE_PENDING {
				if cur.GetState() != v1.Operation_STATE_SUCCEEDED {
					b.Fatalf("upgrade: %s: %s", cur.GetState(), cur.GetError())
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		total := time.Since(t0)
		if readBack.IsZero() {
			readBack = t0.Add(total)
		}
		verify := t0.Add(total).Sub(readBack)
		// The next round writes slot B again from A: put the env back.
		_, err = c.Operations.WaitOperation(ctx, &v1.WaitOperationRequest{OperationId: op.GetId(), Timeout: durationpb.New(time.Second)})
		must(err)

		t1 := time.Now()
		out, err := exec.Command("dd", "if="+slotFile, "of="+filepath.Join(node, "slot-b"), "bs=1M", "conv=fsync,notrunc").CombinedOutput()
		if err != nil {
			b.Fatalf("dd: %v\n%s", err, out)
		}
		dd := time.Since(t1)

		b.ReportMetric(mib(readBack.Sub(writeStart)), "write-MiB/s")
		b.ReportMetric(mib(dd), "dd-MiB/s")
		b.ReportMetric(mib(readBack.Sub(writeStart))/mib(dd), "write/dd")
		b.ReportMetric(verify.Seconds(), "read-back-s")
		b.ReportMetric(mib(t0.Add(total).Sub(writeStart)), "write+verify-MiB/s")
		b.ReportMetric(mib(t0.Add(total).Sub(writeStart))/mib(dd), "write+verify/dd")
		b.ReportMetric(total.Seconds(), "upgrade-s")
		b.ReportMetric(peak, "agent-peak-RSS-MiB")
	}
}
