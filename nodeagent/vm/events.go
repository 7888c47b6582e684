package vm

import (
	"context"
	"errors"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/debvisor/debvisor/nodeagent/libvirtconn"
)

// eventRetry is how long WatchEvents waits before subscribing again.
const eventRetry = 5 * time.Second

var errEventsClosed = errors.New("libvirtd closed the event stream")

// WatchEvents follows libvirt's domain lifecycle events on a connection of
// its own until ctx ends, dropping a VM's snapshot whenever libvirt reports
// a change to it (define, undefine, start, stop, suspend, resume, crash),
// including changes made outside the agent. Snapshots are only used while
// the subscription stands; when it breaks (libvirtd restarted) all are
// dropped and it subscribes again.
func (m *Manager) WatchEvents(ctx context.Context) error {
	for {
		err := m.watchOnce(ctx)
		m.snaps.arm(false)
		if ctx.Err() != nil {
			return nil
		}
		m.log.Warn("libvirt domain events interrupted; VM reads answer from libvirtd only until resubscribed", "err", err, "retry_in", eventRetry)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(eventRetry):
		}
	}
}

func (m *Manager) watchOnce(ctx context.Context) error {
	lv, err := m.conn.Dedicated(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = lv.Disconnect() }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Registering is one RPC without a deadline of its own: bound it, and
	// close the connection (which unblocks it) when ctx ends first.
	type sub struct {
		ch  <-chan libvirt.DomainEventLifecycleMsg
		err error
	}
	subscribed := make(chan sub, 1)
	go func() {
		ch, err := lv.LifecycleEvents(ctx)
		subscribed <- sub{ch, err}
	}()
	var events <-chan libvirt.DomainEventLifecycleMsg
	select {
	case s := <-subscribed:
		if s.err != nil {
			return libvirtconn.Status(s.err, "subscribe to libvirt domain events")
		}
		events = s.ch
	case <-time.After(libvirtconn.DefaultReadTimeout):
		return errors.New("libvirtd did not answer the event subscription in time")
	case <-ctx.Done():
		return ctx.Err()
	}
	// go-libvirt's forwarding goroutine sends without watching ctx: keep
	// receiving until it has seen the cancellation and closed the channel.
	defer func() {
		go func() {
			for range events { //nolint:revive // draining
			}
		}()
	}()
	m.snaps.arm(true)
	m.log.Debug("following libvirt domain events")
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return errEventsClosed
			}
			m.snaps.invalidate(ev.Dom.Name)
		case <-lv.Disconnected():
			return errEventsClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
