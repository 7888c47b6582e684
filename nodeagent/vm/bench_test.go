package vm_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/testenv/agent"
	"github.com/debvisor/debvisor/testenv/libvirtd"
)

// The benchmarks drive a real debvisor-agent binary over mTLS, as dvctl and
// the Terraform provider do, against the host's libvirtd. Run them with
// make bench-vm; results are in docs/benchmarks.md.

func benchClient(b *testing.B) *client.Client {
	b.Helper()
	libvirtd.EnsureRunning(b)
	a := agent.New(b)
	c, err := client.New(client.Config{Endpoint: a.Endpoint, CAFile: a.Admin.CAFile, CertFile: a.Admin.CertFile, KeyFile: a.Admin.KeyFile})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// run returns a function that waits for an operation and fails the
// benchmark unless it succeeded: run(b, c)(c.VMs.StartVM(…)).
func run(b *testing.B, c *client.Client) func(*v1.Operation, error) {
	return func(op *v1.Operation, err error) {
		if err != nil {
			b.Error(err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		done, err := c.Wait(ctx, op, nil)
		if err != nil {
			b.Error(err)
			return
		}
		if done.GetState() != v1.Operation_STATE_SUCCEEDED {
			b.Errorf("%s %s: %s", done.GetKind(), done.GetTarget(), done.GetError())
		}
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkCreateStartDelete: one VM (64 MiB, boot disk, user NIC) created
// and started, then deleted, sequentially; reports median and p95 of the
// whole cycle and of create+start alone.
func BenchmarkCreateStartDelete(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	pool := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	// QEMU's user must reach the pool: not a 0700 temporary directory.
	dir, err := os.MkdirTemp("/var/tmp", "dvbench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	run(b, c)(c.Storage.CreatePool(ctx, &v1.CreatePoolRequest{Pool: &v1.Pool{Name: pool, Type: v1.Pool_TYPE_DIR, Path: dir + "/pool"}, Build: true}))
	b.Cleanup(func() {
		op, err := c.Storage.DeletePool(ctx, &v1.DeletePoolRequest{Name: pool, DeleteVolumes: true, DeleteStorage: true})
		if err == nil {
			_, _ = c.Wait(ctx, op, nil)
		}
	})
	uploadBoot(b, c, pool, "boot.img")
	var cycle, start []time.Duration
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("%s-vm%d", pool, i)
		t0 := time.Now()
		run(b, c)(c.VMs.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: name, Spec: &v1.VMSpec{
			Vcpus: 1, MemoryMib: 64,
			Disks: []*v1.Disk{{Pool: pool, Volume: "boot.img", BootOrder: 1}},
			Nics:  []*v1.NIC{{Type: v1.NIC_TYPE_USER}},
		}}}))
		start = append(start, time.Since(t0))
		run(b, c)(c.VMs.DeleteVM(ctx, &v1.DeleteVMRequest{Name: name}))
		cycle = append(cycle, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(cycle, 0.5).Milliseconds()), "ms-cycle-p50")
	b.ReportMetric(float64(percentile(cycle, 0.95).Milliseconds()), "ms-cycle-p95")
	b.ReportMetric(float64(percentile(start, 0.5).Milliseconds()), "ms-create+start-p50")
	b.ReportMetric(float64(percentile(start, 0.95).Milliseconds()), "ms-create+start-p95")
}

// BenchmarkParallelCreate50: 50 CreateVM calls at once (32 MiB, user NIC,
// no disk); each iteration times until all 50 operations succeeded, then
// deletes them untimed. Sub-benchmarks for started and defined-only guests.
func BenchmarkParallelCreate50(b *testing.B) {
	c := benchClient(b)
	for _, power := range []v1.PowerState{v1.PowerState_POWER_STATE_RUNNING, v1.PowerState_POWER_STATE_STOPPED} {
		b.Run(power.String(), func(b *testing.B) {
			ctx := context.Background()
			var total time.Duration
			for i := range b.N {
				names := make([]string, 50)
				for j := range names {
					names[j] = fmt.Sprintf("bench-p%d-%d-%02d", time.Now().UnixNano()%1e6, i, j)
				}
				t0 := time.Now()
				parallel(b, names, func(name string) (*v1.Operation, error) {
					return c.VMs.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: name, Spec: &v1.VMSpec{
						Vcpus: 1, MemoryMib: 32, Nics: []*v1.NIC{{Type: v1.NIC_TYPE_USER}}, PowerState: power,
					}}})
				}, c)
				d := time.Since(t0)
				total += d
				b.StopTimer()
				parallel(b, names, func(name string) (*v1.Operation, error) {
					return c.VMs.DeleteVM(ctx, &v1.DeleteVMRequest{Name: name})
				}, c)
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/50-creates")
			b.ReportMetric(50*float64(b.N)/total.Seconds(), "VMs/s")
		})
	}
}

func parallel(b *testing.B, names []string, call func(string) (*v1.Operation, error), c *client.Client) {
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, err := call(n)
			run(b, c)(op, err)
		}()
	}
	wg.Wait()
}

func uploadBoot(b *testing.B, c *client.Client, pool, name string) {
	b.Helper()
	img := libvirtd.BootSector(libvirtd.GuestMessage)
	s, err := c.Storage.UploadVolume(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Send(&v1.UploadVolumeRequest{Msg: &v1.UploadVolumeRequest_Header_{Header: &v1.UploadVolumeRequest_Header{Pool: pool, Name: name, SizeBytes: int64(len(img))}}}); err != nil {
		b.Fatal(err)
	}
	if err := s.Send(&v1.UploadVolumeRequest{Msg: &v1.UploadVolumeRequest_Chunk{Chunk: img}}); err != nil {
		b.Fatal(err)
	}
	run(b, c)(s.CloseAndRecv())
}
