package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/libvirtconn"
	"github.com/debvisor/debvisor/nodeagent/vm"
	"github.com/debvisor/debvisor/testenv/libvirtd"
)

// latencies is one reader's samples.
type latencies struct {
	name    string
	samples []time.Duration
	at      []time.Time
	errs    []string
}

func (l *latencies) summary() string {
	if len(l.samples) == 0 {
		return l.name + ": no samples"
	}
	s := slices.Clone(l.samples)
	slices.Sort(s)
	pct := func(p float64) time.Duration { return s[int(float64(len(s)-1)*p)] }
	return fmt.Sprintf("%s: %d samples, p50 %s, p99 %s, max %s, errors %d", l.name, len(s),
		pct(0.5).Round(100*time.Microsecond), pct(0.99).Round(100*time.Microsecond), s[len(s)-1].Round(100*time.Microsecond), len(l.errs))
}

// sample calls read every interval until stop is closed, recording how long
// each call took. Each call gets its own deadline (perCall) so a stall shows
// up as a long sample rather than hanging the test.
func sample(name string, interval, perCall time.Duration, stop <-chan struct{}, read func(context.Context) error) *latencies {
	l := &latencies{name: name}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), perCall)
		t0 := time.Now()
		err := read(ctx)
		d := time.Since(t0)
		cancel()
		l.samples = append(l.samples, d)
		l.at = append(l.at, t0)
		if err != nil {
			l.errs = append(l.errs, err.Error())
		}
		select {
		case <-stop:
			return l
		case <-tick.C:
		}
	}
}

// TestReadsDuringParallelStarts: while 50 VMs are being created and started
// through the API, a reader's GetVM of an unrelated VM answers within 1 s in
// every sample (issue 13). ListVMs, GetPool and GetNode are sampled too and
// their distributions logged. Real libvirtd, real QEMU guests.
func TestReadsDuringParallelStarts(t *testing.T) {
	a := startLibvirtAgent(t)
	ctx := context.Background()
	pool := a.pool(t)

	target := a.prefix + "target"
	a.cleanupVM(t, target)
	a.ok(t)(a.vms.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: target, Spec: &v1.VMSpec{
		Vcpus: 1, MemoryMib: 64, Nics: []*v1.NIC{{Type: v1.NIC_TYPE_USER}},
	}}}))

	const n = 50
	names := make([]string, n)
	for i := range names {
		names[i] = sprintf("%sl%02d", a.prefix, i)
		a.cleanupVM(t, names[i])
	}

	// The reader is another client (reader role, its own connection), as a
	// dvctl user looking at the node while Terraform applies.
	rc := a.dial(t, "reader")
	rvms, rstorage, rnode := v1.NewVMServiceClient(rc), v1.NewStorageServiceClient(rc), v1.NewNodeServiceClient(rc)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	// The witness: the same reads straight from libvirtd on a connection of
	// their own, so the log shows what libvirtd itself answered at the time.
	direct, err := libvirtconn.New(libvirtconn.Config{Socket: libvirtd.Socket}, nil).Reader(ctx)
	must(t, err)
	results := make([]*latencies, 5)
	var fromSnapshot atomic.Int64
	for i, r := range []struct {
		name     string
		interval time.Duration
		read     func(context.Context) error
	}{
		{"GetVM", 100 * time.Millisecond, func(ctx context.Context) error {
			t0 := time.Now()
			vm, err := rvms.GetVM(ctx, &v1.GetVMRequest{Name: target})
			if err == nil && vm.GetStatus().GetState() != v1.VMStatus_STATE_RUNNING {
				err = fmt.Errorf("target VM is %s", vm.GetStatus().GetState())
			}
			if err == nil && vm.GetStatus().GetObservedTime().AsTime().Before(t0) {
				fromSnapshot.Add(1)
			}
			return err
		}},
		// A full listing reads every domain: once a second, as a dvctl user
		// might, not as a load generator.
		{"ListVMs", time.Second, func(ctx context.Context) error {
			_, err := rvms.ListVMs(ctx, &v1.ListVMsRequest{})
			return err
		}},
		{"GetPool", 100 * time.Millisecond, func(ctx context.Context) error {
			_, err := rstorage.GetPool(ctx, &v1.GetPoolRequest{Name: pool})
			return err
		}},
		{"libvirtd direct (lookup, state, XML)", 100 * time.Millisecond, func(context.Context) error {
			d, err := direct.DomainLookupByName(target)
			if err != nil {
				return err
			}
			if _, _, err := direct.DomainGetState(d, 0); err != nil {
				return err
			}
			_, err = direct.DomainGetXMLDesc(d, 0)
			return err
		}},
		{"GetNode", 100 * time.Millisecond, func(ctx context.Context) error {
			_, err := rnode.GetNode(ctx, &v1.GetNodeRequest{})
			return err
		}},
	} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			results[i] = sample(r.name, r.interval, 60*time.Second, stop, r.read)
		}()
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, err := a.vms.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: name, Spec: &v1.VMSpec{
				Vcpus: 1, MemoryMib: 64, Nics: []*v1.NIC{{Type: v1.NIC_TYPE_USER}},
				PowerState: v1.PowerState_POWER_STATE_RUNNING,
			}}})
			if err != nil {
				errs <- fmt.Errorf("create %s: %w", name, err)
				return
			}
			if done := a.waitEnd(t, op); done.GetState() != v1.Operation_STATE_SUCCEEDED {
				errs <- fmt.Errorf("create %s: %s", name, done.GetError())
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	t.Logf("%d parallel creates (started guests): %s", n, time.Since(start).Round(time.Millisecond))
	for err := range errs {
		t.Error(err)
	}

	running := mustVirsh(t, "list", "--name", "--state-running")
	for _, name := range names {
		if !strings.Contains(running, name) {
			t.Errorf("virsh does not list %s as running", name)
		}
	}
	for _, l := range results {
		t.Log(l.summary())
		for i, d := range l.samples {
			if d > 500*time.Millisecond {
				t.Logf("  %s slow sample at +%s: %s", l.name, l.at[i].Sub(start).Round(time.Millisecond), d.Round(time.Millisecond))
			}
		}
		for _, e := range l.errs {
			t.Errorf("%s failed during the creates: %s", l.name, e)
		}
	}
	// Delete them all at once (not one by one in the cleanups), and have virsh confirm.
	var dg sync.WaitGroup
	for _, name := range names {
		dg.Add(1)
		go func() {
			defer dg.Done()
			op, err := a.vms.DeleteVM(ctx, &v1.DeleteVMRequest{Name: name})
			if err != nil {
				t.Errorf("delete %s: %v", name, err)
				return
			}
			if done := a.waitEnd(t, op); done.GetState() != v1.Operation_STATE_SUCCEEDED {
				t.Errorf("delete %s: %s", name, done.GetError())
			}
		}()
	}
	dg.Wait()
	left := strings.Fields(mustVirsh(t, "list", "--all", "--name"))
	for _, name := range names {
		if count(left, name) != 0 {
			t.Errorf("virsh still lists %s after its delete", name)
		}
	}
	get := results[0]
	t.Logf("GetVM answered from the agent's snapshot (libvirtd slower than %s) in %d of %d samples", vm.DefaultSnapshotAfter, fromSnapshot.Load(), len(get.samples))
	for i, d := range get.samples {
		if d > time.Second {
			t.Errorf("GetVM sample %d took %s (> 1 s) while VMs were being started", i, d.Round(time.Millisecond))
		}
	}
}
