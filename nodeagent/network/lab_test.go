package network

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/debvisor/debvisor/testenv/netns"
)

// lab is a node in a network namespace ("a"), wired by veth pairs to a
// peer namespace ("b"):
//
//	a: va  <-> b: vb 10.99.0.2/24 (and 10.98.0.1/32 on lo, reached via a route)
//	a: vc  <-> b: vd            (vc is a port of br9, a bridge DebVisor does not manage)
//	a: ve  <-> b: vh
//
// br9 has 10.50.0.1/24. The manager works in "a"; its networkd directory
// and state are temporary directories.
type lab struct {
	a, b  *netns.Namespace
	h     *netlink.Handle
	dir   string
	state string
}

func newLab(t testing.TB) *lab {
	t.Helper()
	l := &lab{a: netns.Add(t, "neta"), b: netns.Add(t, "netb"), dir: t.TempDir(), state: t.TempDir()}
	for _, p := range [][2]string{{"va", "vb"}, {"vc", "vd"}, {"ve", "vh"}} {
		l.a.MustIP(t, "link", "add", p[0], "type", "veth", "peer", "name", p[1], "netns", l.b.Name)
		l.b.MustIP(t, "link", "set", p[1], "up")
	}
	l.b.MustIP(t, "addr", "add", "10.99.0.2/24", "dev", "vb")
	l.b.MustIP(t, "addr", "add", "fd00:99::2/64", "dev", "vb", "nodad")
	l.b.MustIP(t, "addr", "add", "10.98.0.1/32", "dev", "lo")
	l.b.MustIP(t, "route", "add", "10.97.0.0/24", "via", "10.99.0.1")
	l.a.MustIP(t, "link", "add", "br9", "type", "bridge")
	l.a.MustIP(t, "link", "set", "vc", "master", "br9")
	l.a.MustIP(t, "addr", "add", "10.50.0.1/24", "dev", "br9")
	ns, err := vnetns.GetFromName(l.a.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	l.h = h
	return l
}

// manager opens a Manager on the lab (a restart is another call).
func (l *lab) manager(t testing.TB, mods ...func(*Config)) *Manager {
	t.Helper()
	cfg := Config{Handle: l.h, NetworkdDir: l.dir, StateDir: l.state, Management: "va", Deadline: 5 * time.Second}
	for _, f := range mods {
		f(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func (l *lab) live(t testing.TB) liveState {
	t.Helper()
	st, err := readLive(l.h)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (l *lab) files(t testing.TB) map[string][]byte {
	t.Helper()
	f, err := readFiles(l.dir)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// reach opens a TCP connection from "a" to addr in "b" and reads a byte:
// the link, the addresses and (for 10.98.0.1) the route carry traffic.
func (l *lab) reach(t testing.TB, addr string) error {
	t.Helper()
	return l.reachWithin(t, addr, 6*time.Second)
}

// reachWithin is reach, giving up after total.
func (l *lab) reachWithin(t testing.TB, addr string, total time.Duration) error {
	t.Helper()
	var ln net.Listener
	if err := l.b.Do(func() (err error) { ln, err = net.Listen("tcp", addr+":0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = c.Write([]byte{42})
			c.Close()
		}
	}()
	// A link just brought up drops what it sends until the kernel's link
	// watch activates it (up to a second), so the first ARP or SYN may be
	// lost: dial again until a few seconds have passed.
	var c net.Conn
	var err error
	for end := time.Now().Add(total); time.Now().Before(end); {
		ctx, cancel := context.WithTimeout(context.Background(), min(2*time.Second, total))
		c, err = l.a.DialContext(ctx, "tcp", ln.Addr().String())
		cancel()
		if err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var b [1]byte
	_, err = io.ReadFull(c, b[:])
	return err
}

// sameNetwork fails unless the live state and the files are unchanged.
func (l *lab) sameNetwork(t testing.TB, before liveState, beforeFiles map[string][]byte) {
	t.Helper()
	after := l.live(t)
	if !reflect.DeepEqual(before.links, after.links) {
		t.Errorf("links changed:\nbefore %+v\nafter  %+v", before.links, after.links)
	}
	if !reflect.DeepEqual(before.routes, after.routes) {
		t.Errorf("routes changed:\nbefore %v\nafter  %v", before.routes, after.routes)
	}
	if f := l.files(t); !reflect.DeepEqual(beforeFiles, f) {
		t.Errorf("networkd files changed: %v -> %v", keys(beforeFiles), keys(f))
	}
	if _, err := os.Stat(filepath.Join(l.state, pendingFile)); !os.IsNotExist(err) {
		t.Errorf("a pending change was recorded: %v", err)
	}
}

func keys(m map[string][]byte) []string { return sortedKeys(m) }

// waitResolved waits until the pending change is confirmed or reverted.
func waitResolved(t testing.TB, m *Manager, ch <-chan struct{}, limit time.Duration) time.Time {
	t.Helper()
	select {
	case <-ch:
		return time.Now()
	case <-time.After(limit):
		t.Fatalf("no revert within %s", limit)
	}
	return time.Time{}
}
