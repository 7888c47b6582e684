package vm

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

// fakeLibvirt answers reads of one VM with the current memory_mib; while a gate is set, reads
// wait for it to close (a slow libvirtd), so no test depends on how fast the machine is.
type fakeLibvirt struct {
	mu     sync.Mutex
	memory int64
	gate   chan struct{}
	err    error
	calls  atomic.Int32
}

// set makes the next reads answer memory (or err); slow makes them wait until release.
func (f *fakeLibvirt) set(memory int64, slow bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.memory, f.err = memory, err
	f.gate = nil
	if slow {
		f.gate = make(chan struct{})
	}
}

// release lets the waiting reads answer.
func (f *fakeLibvirt) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gate != nil {
		close(f.gate)
		f.gate = nil
	}
}

func (f *fakeLibvirt) live(ctx context.Context, name string) (*v1.VM, error) {
	f.calls.Add(1)
	f.mu.Lock()
	memory, gate, err := f.memory, f.gate, f.err
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	return &v1.VM{Name: name, Spec: &v1.VMSpec{MemoryMib: memory}, Status: &v1.VMStatus{State: v1.VMStatus_STATE_RUNNING}}, nil
}

func newTestReader(after, maxAge time.Duration) *reader {
	return &reader{snaps: newSnapshots(maxAge), after: after, now: time.Now}
}

// readVM reads "web". Which answer came (the snapshot's value or libvirtd's newer one) shows
// whether the read waited for libvirtd; no durations are asserted.
func readVM(r *reader, f *fakeLibvirt) (*v1.VM, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.read(ctx, "web", f.live)
}

// waitCalls waits until the fake has been asked n times in all.
func waitCalls(t *testing.T, f *fakeLibvirt, n int32) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); f.calls.Load() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("libvirtd was asked %d times, want %d", f.calls.Load(), n)
		}
	}
}

// TestReaderSnapshots walks the cases in which a read may and may not answer from a snapshot.
func TestReaderSnapshots(t *testing.T) {
	const after = 20 * time.Millisecond

	// primed returns a reader whose snapshot of "web" says memory 64, with libvirtd then slow
	// and answering 128 once released.
	primed := func(t *testing.T, maxAge time.Duration, arm bool) (*reader, *fakeLibvirt) {
		t.Helper()
		r, f := newTestReader(after, maxAge), &fakeLibvirt{}
		r.snaps.arm(arm)
		f.set(64, false, nil)
		if vm, err := readVM(r, f); err != nil || vm.GetSpec().GetMemoryMib() != 64 {
			t.Fatalf("priming read: %v, %v", vm, err)
		}
		f.set(128, true, nil)
		t.Cleanup(f.release)
		return r, f
	}

	t.Run("fast libvirtd: live answer, with observed_time", func(t *testing.T) {
		r, f := newTestReader(after, time.Minute), &fakeLibvirt{}
		r.snaps.arm(true)
		f.set(64, false, nil)
		vm, err := readVM(r, f)
		if err != nil || vm.GetSpec().GetMemoryMib() != 64 || vm.GetStatus().GetObservedTime() == nil {
			t.Fatalf("got %v, %v", vm, err)
		}
	})

	t.Run("slow libvirtd: the snapshot, then refreshed behind", func(t *testing.T) {
		r, f := primed(t, time.Minute, true)
		t0 := time.Now()
		vm, err := readVM(r, f)
		if err != nil || vm.GetSpec().GetMemoryMib() != 64 {
			t.Fatalf("slow read: got %v, %v; want the snapshot (64)", vm, err)
		}
		if !vm.GetStatus().GetObservedTime().AsTime().Before(t0) {
			t.Errorf("snapshot answer's observed_time %s is not before the request (%s)", vm.GetStatus().GetObservedTime().AsTime(), t0)
		}
		// The live read goes on after the answer; once libvirtd answers, the snapshot is fresh.
		f.release()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if vm, ok := r.snaps.get("web", time.Now()); ok && vm.GetSpec().GetMemoryMib() == 128 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the background read did not refresh the snapshot")
			}
		}
	})

	t.Run("no snapshot: waits for libvirtd", func(t *testing.T) {
		r, f := newTestReader(after, time.Minute), &fakeLibvirt{}
		r.snaps.arm(true)
		f.set(64, true, nil)
		go func() { waitCalls(t, f, 1); time.Sleep(5 * after); f.release() }()
		if vm, err := readVM(r, f); err != nil || vm.GetSpec().GetMemoryMib() != 64 {
			t.Fatalf("got %v, %v", vm, err)
		}
	})

	for _, tt := range []struct {
		name   string
		maxAge time.Duration
		arm    bool
		before func(*reader)
	}{
		{"not armed (no event stream): never a snapshot", time.Minute, false, func(*reader) {}},
		{"invalidated by a change: waits for libvirtd", time.Minute, true, func(r *reader) { r.snaps.invalidate("web") }},
		{"disarmed and rearmed (events may be lost): waits", time.Minute, true, func(r *reader) { r.snaps.arm(false); r.snaps.arm(true) }},
		{"older than max age: waits for libvirtd", time.Nanosecond, true, func(*reader) {}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, f := primed(t, tt.maxAge, tt.arm)
			tt.before(r)
			calls := f.calls.Load()
			go func() { waitCalls(t, f, calls+1); time.Sleep(5 * after); f.release() }()
			if vm, err := readVM(r, f); err != nil || vm.GetSpec().GetMemoryMib() != 128 {
				t.Fatalf("got %v, %v; want libvirtd's 128", vm, err)
			}
		})
	}

	t.Run("a read that began before an invalidation does not store", func(t *testing.T) {
		r, f := newTestReader(after, time.Minute), &fakeLibvirt{}
		r.snaps.arm(true)
		f.set(64, true, nil)
		done := make(chan struct{})
		go func() { defer close(done); _, _ = r.read(context.Background(), "web", f.live) }()
		waitCalls(t, f, 1)
		r.snaps.invalidate("web")
		f.release()
		<-done
		if vm, ok := r.snaps.get("web", time.Now()); ok {
			t.Fatalf("stale read stored %v after the invalidation", vm)
		}
	})

	t.Run("libvirtd unavailable: snapshot; not found: error and forgotten", func(t *testing.T) {
		r, f := primed(t, time.Minute, true)
		f.set(0, false, fault.Errorf(fault.Unavailable, "libvirtd did not answer"))
		if vm, err := readVM(r, f); err != nil || vm.GetSpec().GetMemoryMib() != 64 {
			t.Fatalf("unavailable: got %v, %v; want the snapshot", vm, err)
		}
		f.set(0, false, fault.Errorf(fault.NotFound, `VM "web" not found`))
		if _, err := readVM(r, f); !fault.Is(err, fault.NotFound) {
			t.Fatalf("not found: got %v", err)
		}
		f.set(0, false, fault.Errorf(fault.Unavailable, "libvirtd did not answer"))
		if _, err := readVM(r, f); !fault.Is(err, fault.Unavailable) {
			t.Fatalf("after not found the snapshot must be gone: got %v", err)
		}
	})

	t.Run("concurrent reads while slow share one libvirtd read", func(t *testing.T) {
		r, f := newTestReader(after, time.Minute), &fakeLibvirt{}
		r.snaps.arm(true)
		f.set(64, true, nil)
		var wg, started sync.WaitGroup
		for range 20 {
			wg.Add(1)
			started.Add(1)
			go func() {
				defer wg.Done()
				started.Done()
				if _, err := r.read(context.Background(), "web", f.live); err != nil {
					t.Error(err)
				}
			}()
		}
		started.Wait()
		waitCalls(t, f, 1)
		time.Sleep(10 * after) // every reader is past started.Done: let them reach the read
		f.release()
		wg.Wait()
		if n := f.calls.Load(); n != 1 {
			t.Fatalf("20 concurrent reads made %d libvirtd reads, want 1", n)
		}
	})

	t.Run("caller gives up: context error, kind kept", func(t *testing.T) {
		r, f := newTestReader(after, time.Minute), &fakeLibvirt{}
		r.snaps.arm(true)
		f.set(64, true, nil)
		defer f.release()
		ctx, cancel := context.WithTimeout(context.Background(), 2*after)
		defer cancel()
		_, err := r.read(ctx, "web", f.live)
		if !errors.Is(err, context.DeadlineExceeded) || !fault.Is(err, fault.DeadlineExceeded) {
			t.Fatalf("got %v", err)
		}
	})
}
