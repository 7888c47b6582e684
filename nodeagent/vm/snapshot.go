package vm

import (
	"context"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

// Defaults for the read path (Config.SnapshotAfter, Config.SnapshotMaxAge).
const (
	DefaultSnapshotAfter  = 100 * time.Millisecond
	DefaultSnapshotMaxAge = time.Minute
)

// snapshots remembers the last description libvirtd gave of each VM, so a
// read can still answer at once when libvirtd is slow (a loaded host
// starting many guests took seconds per call). An entry is only trusted
// while nothing can have changed it unseen:
//
//   - every change the agent makes invalidates the VM's entry, before and
//     after the change;
//   - changes made behind the agent's back (virsh, another tool) reach it as
//     libvirt lifecycle events (defined, undefined, started, stopped,
//     suspended, resumed, crashed), which invalidate too; entries are only
//     kept while that event stream is subscribed (armed), and all are
//     dropped when it breaks;
//   - a read stores its result only if no invalidation of that VM happened
//     since the read began, so a slow read never overwrites a newer truth;
//   - an entry older than maxAge is not used.
//
// Live-only changes made behind the agent's back that libvirt reports with
// no lifecycle event (a device hot-plugged with virsh) can be missing from
// a snapshot until the next read libvirtd answers in time.
type snapshots struct {
	maxAge time.Duration

	mu    sync.Mutex
	armed bool
	seq   uint64 // bumped by every invalidation
	// floor is seq at the last reset: reads that began before it never
	// store (their VM's invalidation may have been forgotten in the reset).
	floor   uint64
	entries map[string]*snapshot
}

type snapshot struct {
	vm *v1.VM // nil after an invalidation
	at time.Time
	// invalidated is seq at this VM's last invalidation.
	invalidated uint64
}

// maxEntries bounds the map (VMs plus tombstones of deleted ones); beyond
// it everything is forgotten, which only costs live reads.
const maxEntries = 10000

func newSnapshots(maxAge time.Duration) *snapshots {
	return &snapshots{maxAge: maxAge, entries: map[string]*snapshot{}}
}

// begin returns the token a read of name stores its result with.
func (s *snapshots) begin() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// version names the state of name's entry for coalescing reads: reads that
// begin after an invalidation never share a result with one that began
// before it.
func (s *snapshots) version(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.floor
	if e := s.entries[name]; e != nil {
		v = max(v, e.invalidated)
	}
	return name + "@" + strconv.FormatUint(v, 10)
}

// put stores what a read that began at token saw, unless name was
// invalidated since or the stream of events is not subscribed.
func (s *snapshots) put(name string, token uint64, vm *v1.VM, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.armed || token < s.floor {
		return
	}
	e := s.entries[name]
	if e != nil && e.invalidated > token {
		return
	}
	if e == nil {
		if len(s.entries) >= maxEntries {
			s.resetLocked()
		}
		e = &snapshot{}
		s.entries[name] = e
	}
	e.vm, e.at = proto.Clone(vm).(*v1.VM), at
}

// get returns a copy of name's entry if it may be used at now.
func (s *snapshots) get(name string, now time.Time) (*v1.VM, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[name]
	if !s.armed || e == nil || e.vm == nil || now.Sub(e.at) > s.maxAge {
		return nil, false
	}
	return proto.Clone(e.vm).(*v1.VM), true
}

// invalidate forgets name's entry and makes reads in flight not store theirs.
func (s *snapshots) invalidate(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	e := s.entries[name]
	if e == nil {
		if len(s.entries) >= maxEntries {
			s.resetLocked()
		}
		e = &snapshot{}
		s.entries[name] = e
	}
	e.vm, e.invalidated = nil, s.seq
}

// arm says whether changes made behind the agent's back are being seen;
// either way every entry is dropped (events may have been missed).
func (s *snapshots) arm(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = on
	s.resetLocked()
}

func (s *snapshots) resetLocked() {
	s.seq++
	s.floor = s.seq
	s.entries = map[string]*snapshot{}
}

// reader answers a VM read from libvirtd, or from the snapshot when
// libvirtd has not answered within after.
type reader struct {
	snaps *snapshots
	after time.Duration
	now   func() time.Time
	// flight coalesces concurrent reads of the same VM (and version), so a
	// burst of reads while libvirtd is slow costs one read, not a queue.
	flight singleflight.Group
}

// read returns name's description: libvirtd's answer if it comes within
// r.after, else the snapshot if one may be used, else libvirtd's answer
// whenever it comes (bounded by ctx). A live read keeps going after a
// snapshot answered (bounded by the libvirt call deadlines) so the next
// read finds a fresh entry.
func (r *reader) read(ctx context.Context, name string, live func(context.Context, string) (*v1.VM, error)) (*v1.VM, error) {
	token := r.snaps.begin()
	ch := r.flight.DoChan(r.snaps.version(name), func() (any, error) {
		vm, err := live(context.WithoutCancel(ctx), name)
		switch {
		case err == nil:
			vm.Status.ObservedTime = timestamppb.New(r.now())
			r.snaps.put(name, token, vm, r.now())
		case fault.Is(err, fault.NotFound):
			r.snaps.invalidate(name)
		}
		return vm, err
	})
	var timer <-chan time.Time
	if r.after > 0 {
		t := time.NewTimer(r.after)
		defer t.Stop()
		timer = t.C
	}
	for {
		select {
		case res := <-ch:
			if res.Err != nil {
				if fault.Is(res.Err, fault.Unavailable) {
					if vm, ok := r.snaps.get(name, r.now()); ok {
						return vm, nil
					}
				}
				return nil, res.Err
			}
			// Shared with other callers: each gets its own copy.
			return proto.Clone(res.Val.(*v1.VM)).(*v1.VM), nil
		case <-timer:
			if vm, ok := r.snaps.get(name, r.now()); ok {
				return vm, nil
			}
			timer = nil // nothing to fall back on: wait for libvirtd
		case <-ctx.Done():
			return nil, fault.Wrap(ctx.Err(), "read VM %q", name)
		}
	}
}
