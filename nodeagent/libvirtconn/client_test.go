package libvirtconn

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/debvisor/debvisor/nodeagent/fault"
)

// stuck is a libvirtd call that does not answer until released.
type stuck chan struct{}

func (s stuck) call(*libvirt.Libvirt) error { <-s; return nil }

func testClient(ctx context.Context, name string, timeout time.Duration, bounded bool, slots int) *Client {
	return &Client{ctx: ctx, lane: &lane{name: name, timeout: timeout, boundedQueue: bounded, slots: make(chan struct{}, slots)}}
}

// TestCallDeadlines: every call returns by its deadline with an error that says libvirtd is the
// slow party; reads wait for a slot only within their deadline, mutations for as long as their
// context allows; an abandoned call keeps its slot until libvirtd answers it.
func TestCallDeadlines(t *testing.T) {
	const timeout = 50 * time.Millisecond
	ctx := context.Background()

	t.Run("a call libvirtd does not answer", func(t *testing.T) {
		s := make(stuck)
		defer close(s)
		c := testClient(ctx, "read", timeout, true, 5)
		err := call0(c, "DomainGetState", false, s.call)
		if !fault.Is(err, fault.Unavailable) || !strings.Contains(err.Error(), "libvirtd did not answer DomainGetState within") ||
			!strings.Contains(err.Error(), "libvirtd is overloaded or stuck") {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("reads wait for a slot only within their deadline", func(t *testing.T) {
		s := make(stuck)
		defer close(s)
		c := testClient(ctx, "read", timeout, true, 1)
		_ = call0(c, "DomainGetXMLDesc", false, s.call) // abandoned, holds the only slot
		err := call0(c, "DomainLookupByName", false, func(*libvirt.Libvirt) error { return nil })
		if !fault.Is(err, fault.Unavailable) || !strings.Contains(err.Error(), "all 1 calls the agent may have in flight on its read connection are still unanswered") {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("mutations queue for a slot until it frees", func(t *testing.T) {
		s := make(stuck)
		c := testClient(ctx, "write", timeout, false, 1)
		_ = call0(c, "DomainCreateWithFlags", false, s.call) // abandoned after the timeout
		go func() { time.Sleep(3 * timeout); close(s) }()
		ran := false
		if err := call0(c, "DomainDefineXMLFlags", false, func(*libvirt.Libvirt) error { ran = true; return nil }); err != nil || !ran {
			t.Fatalf("queued mutation: ran=%v err=%v", ran, err)
		}
	})

	t.Run("the caller's context ends the wait", func(t *testing.T) {
		s := make(stuck)
		defer close(s)
		cctx, cancel := context.WithCancel(ctx)
		c := testClient(cctx, "write", time.Hour, false, 5)
		go func() { time.Sleep(timeout); cancel() }()
		err := call0(c, "DomainShutdownFlags", false, s.call)
		if !errors.Is(err, context.Canceled) || !fault.Is(err, fault.Canceled) || !strings.Contains(err.Error(), "DomainShutdownFlags") {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("long calls have no deadline of their own", func(t *testing.T) {
		s := make(stuck)
		c := testClient(ctx, "write", timeout, false, 5)
		go func() { time.Sleep(3 * timeout); close(s) }()
		if err := call0(c, "StorageVolCreateXMLFrom", true, s.call); err != nil {
			t.Fatalf("long call: %v", err)
		}
	})

	t.Run("results of an abandoned call are dropped, values of an answered one kept", func(t *testing.T) {
		c := testClient(ctx, "read", timeout, true, 5)
		v, err := call1(c, "ConnectGetLibVersion", func(*libvirt.Libvirt) (uint64, error) { return 9000000, nil })
		if err != nil || v != 9000000 {
			t.Fatalf("got %d, %v", v, err)
		}
		s := make(stuck)
		defer close(s)
		v, err = call1(c, "ConnectGetLibVersion", func(*libvirt.Libvirt) (uint64, error) { <-s; return 1, nil })
		if err == nil || v != 0 {
			t.Fatalf("abandoned: got %d, %v", v, err)
		}
	})
}

// TestStatusKinds: libvirt's error numbers map to fault kinds; a broken connection is Unavailable.
func TestStatusKinds(t *testing.T) {
	tests := []struct {
		err  error
		want fault.Kind
	}{
		{libvirt.Error{Code: uint32(libvirt.ErrNoDomain), Message: "no domain"}, fault.NotFound},
		{libvirt.Error{Code: uint32(libvirt.ErrDomExist), Message: "exists"}, fault.AlreadyExists},
		{libvirt.Error{Code: uint32(libvirt.ErrOperationInvalid), Message: "not running"}, fault.FailedPrecondition},
		{libvirt.Error{Code: uint32(libvirt.ErrXMLError), Message: "bad xml"}, fault.Invalid},
		{libvirt.Error{Code: uint32(libvirt.ErrInternalError), Message: "oops"}, fault.Internal},
		{libvirt.ErrInterrupted, fault.Unavailable},
		{fault.Errorf(fault.Unavailable, "libvirtd did not answer"), fault.Unavailable},
		{context.DeadlineExceeded, fault.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			err := Status(tt.err, "look up VM %q", "web")
			if fault.KindOf(err) != tt.want || !strings.HasPrefix(err.Error(), `look up VM "web": `) {
				t.Fatalf("Status(%v) = %v (%s), want kind %s", tt.err, err, fault.KindOf(err), tt.want)
			}
		})
	}
}
