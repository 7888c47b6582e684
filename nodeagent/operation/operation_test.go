package operation

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newManager(t *testing.T, opts ...Option) *Manager {
	m := NewManager(slog.New(slog.DiscardHandler), opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return m
}

func wait(t *testing.T, m *Manager, id string) *v1.Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	op, err := m.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatalf("operation %s did not end: %v", id, op)
	}
	return op
}

func TestOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		fn       Func
		want     v1.Operation_State
		wantCode codes.Code
	}{
		{"success", func(context.Context, *Progress) error { return nil }, v1.Operation_STATE_SUCCEEDED, codes.OK},
		{"plain error", func(context.Context, *Progress) error { return errors.New("disk full") }, v1.Operation_STATE_FAILED, codes.Internal},
		{"status error", func(context.Context, *Progress) error { return status.Error(codes.NotFound, "no pool") }, v1.Operation_STATE_FAILED, codes.NotFound},
		{"panic", func(context.Context, *Progress) error { panic("boom") }, v1.Operation_STATE_FAILED, codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t)
			op := m.Start(Spec{Kind: "test"}, tt.fn)
			got := wait(t, m, op.Id)
			if got.State != tt.want || codes.Code(got.ErrorCode) != tt.wantCode {
				t.Errorf("state %v code %v (%q), want %v %v", got.State, codes.Code(got.ErrorCode), got.Error, tt.want, tt.wantCode)
			}
			if got.EndTime == nil || got.CreateTime == nil {
				t.Errorf("timestamps missing: %v", got)
			}
		})
	}
}

func TestProgress(t *testing.T) {
	m := newManager(t)
	op := m.Start(Spec{Kind: "test", Phases: []string{"download", "write"}}, func(ctx context.Context, p *Progress) error {
		p.Phase("download")
		p.Set(5, 10)
		p.Phase("write")
		p.Set(3, 4)
		p.Message("writing %s", "slot B")
		p.Result("slot", "B")
		return nil
	})
	got := wait(t, m, op.Id)
	if got.Phase != "write" || got.Done != 3 || got.Total != 4 || got.Message != "writing slot B" || got.Result["slot"] != "B" {
		t.Errorf("progress not recorded: %v", got)
	}
}

// TestLocksSerialise: operations sharing a key never overlap and run in
// arrival order; operations on other keys are not held up.
func TestLocksSerialise(t *testing.T) {
	m := newManager(t)
	var running, maxRunning atomic.Int32
	var mu sync.Mutex
	var order []int
	release := make(chan struct{})
	var ids []string
	for i := range 5 {
		op := m.Start(Spec{Kind: "test", Locks: []string{"vm/a"}}, func(ctx context.Context, p *Progress) error {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				cur := maxRunning.Load()
				if n <= cur || maxRunning.CompareAndSwap(cur, n) {
					break
				}
			}
			<-release
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			return nil
		})
		ids = append(ids, op.Id)
		// Give each goroutine time to queue so arrival order is defined.
		for m.state(op.Id) != v1.Operation_STATE_PENDING && m.state(op.Id) != v1.Operation_STATE_RUNNING {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A different key runs while vm/a is held.
	other := m.Start(Spec{Kind: "test", Locks: []string{"vm/b"}}, func(context.Context, *Progress) error { return nil })
	if got := wait(t, m, other.Id); got.State != v1.Operation_STATE_SUCCEEDED {
		t.Fatalf("independent operation blocked or failed: %v", got)
	}
	if s := m.state(ids[1]); s != v1.Operation_STATE_PENDING {
		t.Errorf("second vm/a operation is %v while the first holds the lock, want PENDING", s)
	}
	close(release)
	for _, id := range ids {
		wait(t, m, id)
	}
	if maxRunning.Load() != 1 {
		t.Errorf("%d operations on vm/a ran at once", maxRunning.Load())
	}
	for i, v := range order {
		if v != i {
			t.Errorf("ran in order %v, want arrival order", order)
			break
		}
	}
}

func (m *Manager) state(id string) v1.Operation_State {
	op, err := m.Get(id)
	if err != nil {
		return v1.Operation_STATE_UNSPECIFIED
	}
	return op.State
}

func TestCancel(t *testing.T) {
	m := newManager(t)
	started := make(chan struct{})
	running := m.Start(Spec{Kind: "test", Locks: []string{"k"}}, func(ctx context.Context, p *Progress) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	})
	<-started
	pending := m.Start(Spec{Kind: "test", Locks: []string{"k"}}, func(context.Context, *Progress) error {
		t.Error("a cancelled pending operation ran")
		return nil
	})
	if _, err := m.Cancel(pending.Id); err != nil {
		t.Fatal(err)
	}
	if got := wait(t, m, pending.Id); got.State != v1.Operation_STATE_CANCELLED {
		t.Errorf("pending op: %v", got.State)
	}
	if _, err := m.Cancel(running.Id); err != nil {
		t.Fatal(err)
	}
	if got := wait(t, m, running.Id); got.State != v1.Operation_STATE_CANCELLED || codes.Code(got.ErrorCode) != codes.Canceled {
		t.Errorf("running op: %v", got)
	}
	if _, err := m.Cancel("op-missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("cancel unknown: %v", err)
	}
}

func TestHistoryBounded(t *testing.T) {
	m := newManager(t, WithHistory(3))
	var last string
	for range 10 {
		op := m.Start(Spec{Kind: "test"}, func(context.Context, *Progress) error { return nil })
		wait(t, m, op.Id)
		last = op.Id
	}
	list := m.List(Filter{})
	if len(list) > 4 { // the newest may be added before the oldest is dropped
		t.Errorf("kept %d operations, want at most 4", len(list))
	}
	if list[0].Id != last {
		t.Errorf("newest first: got %s, want %s", list[0].Id, last)
	}
}

func TestListFilter(t *testing.T) {
	m := newManager(t)
	a := m.Start(Spec{Kind: "a"}, func(context.Context, *Progress) error { return nil })
	b := m.Start(Spec{Kind: "b"}, func(context.Context, *Progress) error { return errors.New("x") })
	wait(t, m, a.Id)
	wait(t, m, b.Id)
	if l := m.List(Filter{Kind: "a"}); len(l) != 1 || l[0].Id != a.Id {
		t.Errorf("kind filter: %v", l)
	}
	if l := m.List(Filter{States: []v1.Operation_State{v1.Operation_STATE_FAILED}}); len(l) != 1 || l[0].Id != b.Id {
		t.Errorf("state filter: %v", l)
	}
}

// TestStartOnce: a retried request gets the operation of its first send, whether that is still
// running or done, and the work runs once; the same id for another request is refused; a
// different scope is a different request; the mapping is forgotten with the operation.
func TestStartOnce(t *testing.T) {
	m := newManager(t, WithHistory(2))
	var runs atomic.Int32
	release := make(chan struct{})
	fn := func(context.Context, *Progress) error { runs.Add(1); <-release; return nil }
	spec := Spec{Kind: "vm.create", Target: "vm/a", Locks: []string{"vm/a"}}
	req := Request{Scope: "vm.create", ID: "r1", Hash: "h1"}

	first, started, err := m.StartOnce(spec, req, fn)
	if err != nil || !started {
		t.Fatalf("first StartOnce: started=%v err=%v", started, err)
	}
	again, started, err := m.StartOnce(spec, req, fn)
	if err != nil || started || again.GetId() != first.GetId() {
		t.Fatalf("retry while running: id %s (first %s), started=%v err=%v", again.GetId(), first.GetId(), started, err)
	}
	if got, ok, err := m.Lookup(req); err != nil || !ok || got.GetId() != first.GetId() {
		t.Fatalf("Lookup = %v, %v, %v", got, ok, err)
	}
	_, _, err = m.StartOnce(spec, Request{Scope: "vm.create", ID: "r1", Hash: "other"}, fn)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), `request_id: "r1" was already used for a different request`) {
		t.Fatalf("same id, other request: %v", err)
	}
	other, started, err := m.StartOnce(Spec{Kind: "pool.create"}, Request{Scope: "pool.create", ID: "r1", Hash: "h1"}, func(context.Context, *Progress) error { return nil })
	if err != nil || !started || other.GetId() == first.GetId() {
		t.Fatalf("other scope: %v started=%v err=%v", other, started, err)
	}
	close(release)
	wait(t, m, first.GetId())
	done, started, err := m.StartOnce(spec, req, fn)
	if err != nil || started || done.GetId() != first.GetId() || done.GetState() != v1.Operation_STATE_SUCCEEDED {
		t.Fatalf("retry after the end: %v started=%v err=%v", done, started, err)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the work ran %d times, want 1", n)
	}
	// History of 2: two more operations push the first out, and its request with it.
	wait(t, m, other.GetId())
	wait(t, m, m.Start(Spec{Kind: "x"}, func(context.Context, *Progress) error { return nil }).GetId())
	wait(t, m, m.Start(Spec{Kind: "x"}, func(context.Context, *Progress) error { return nil }).GetId())
	if _, ok, _ := m.Lookup(req); ok {
		t.Fatal("request still remembered after its operation was forgotten")
	}
}
