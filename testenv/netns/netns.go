// Package netns gives tests network namespaces joined by a bridge: each
// namespace is a "host" with its own interfaces, addresses and port space,
// so several real agents can run side by side with mDNS multicast, gossip and
// fixed ports, without touching the host's own interfaces. Everything is
// created inside namespaces the test made (veth pairs are born there; the
// bridge lives in a "switch" namespace), named with the test process's pid,
// and removed by t.Cleanup; namespaces left by a killed test run are swept
// the next time.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// prefix starts every namespace name this package makes: "dvt<pid>-".
const prefix = "dvt"

// Namespace is a network namespace made by the test.
type Namespace struct {
	Name string
}

// Require fails the test when namespaces cannot be made here (not root, no
// iproute2): the tests that need them are the point, so they never skip.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("network namespace tests need root (ip netns add)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("network namespace tests need iproute2's ip: %v", err)
	}
	sweepOnce.Do(sweep)
}

var sweepOnce sync.Once

// sweep deletes namespaces named by this package for processes that no
// longer exist (a test run killed before its cleanup).
func sweep() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if unix.Kill(pid, 0) == nil {
			continue // still running: another test's
		}
		_ = exec.Command("ip", "netns", "del", name).Run()
	}
}

// Add makes a namespace with the loopback up; t.Cleanup deletes it.
func Add(t testing.TB, label string) *Namespace {
	t.Helper()
	Require(t)
	var b [3]byte
	_, _ = rand.Read(b[:])
	n := &Namespace{Name: fmt.Sprintf("%s%d-%s-%s", prefix, os.Getpid(), hex.EncodeToString(b[:]), label)}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
		}
	})
	n.MustIP(t, "link", "set", "lo", "up")
	return n
}

// IP runs `ip -n NAME args...`.
func (n *Namespace) IP(args ...string) error {
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s %s: %w: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// MustIP is IP failing the test on error.
func (n *Namespace) MustIP(t testing.TB, args ...string) {
	t.Helper()
	if err := n.IP(args...); err != nil {
		t.Fatal(err)
	}
}

// Command returns name args... to be run inside the namespace.
func (n *Namespace) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Do runs f on an OS thread that has entered the namespace: sockets f
// creates (listeners, connections, multicast sockets) belong to the
// namespace and stay there after f returns. Goroutines f starts do not run
// in the namespace.
func (n *Namespace) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is unlocked (returned to the pool) only if it got back
		// into the original namespace; otherwise it dies with the goroutine.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + n.Name)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// DialContext connects from inside the namespace (for gRPC's
// WithContextDialer and http.Transport).
func (n *Namespace) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// LAN is an Ethernet segment: a bridge in its own namespace that other
// namespaces plug into with veth pairs.
type LAN struct {
	Switch *Namespace
	bridge string
	ports  int
	mu     sync.Mutex
}

// NewLAN makes the switch namespace and its bridge (multicast snooping
// off, so mDNS reaches every port without an IGMP querier).
func NewLAN(t testing.TB, label string) *LAN {
	t.Helper()
	l := &LAN{Switch: Add(t, label), bridge: "br0"}
	l.Switch.MustIP(t, "link", "add", l.bridge, "type", "bridge", "mcast_snooping", "0")
	l.Switch.MustIP(t, "link", "set", l.bridge, "up")
	return l
}

// Plug connects ns to the LAN as interface ifname with address cidr
// (e.g. "10.77.0.2/24"), brings it up, and routes multicast through it.
func (l *LAN) Plug(t testing.TB, ns *Namespace, ifname, cidr string) {
	t.Helper()
	l.mu.Lock()
	l.ports++
	port := fmt.Sprintf("p%d", l.ports)
	l.mu.Unlock()
	// Born in the switch namespace with its peer directly in ns: the veth
	// never exists in the host's namespace.
	l.Switch.MustIP(t, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns.Name)
	l.Switch.MustIP(t, "link", "set", port, "master", l.bridge)
	l.Switch.MustIP(t, "link", "set", port, "up")
	ns.MustIP(t, "addr", "add", cidr, "dev", ifname)
	ns.MustIP(t, "link", "set", ifname, "up")
	if err := ns.IP("route", "add", "224.0.0.0/4", "dev", ifname); err != nil && !strings.Contains(err.Error(), "File exists") {
		t.Fatal(err)
	}
}

// Gateway gives the switch namespace an address on the bridge and turns
// on forwarding, so it routes between LANs whose switches share the
// namespace (see AddBridge).
func (l *LAN) Gateway(t testing.TB, cidr string) {
	t.Helper()
	l.Switch.MustIP(t, "addr", "add", cidr, "dev", l.bridge)
	if out, err := l.Switch.Command("sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("enable forwarding in %s: %v: %s", l.Switch.Name, err, out)
	}
}

// AddBridge makes a second segment switched by the same namespace (so the
// namespace can route between the two with Gateway addresses on both).
func (l *LAN) AddBridge(t testing.TB, name string) *LAN {
	t.Helper()
	other := &LAN{Switch: l.Switch, bridge: name}
	l.Switch.MustIP(t, "link", "add", name, "type", "bridge", "mcast_snooping", "0")
	l.Switch.MustIP(t, "link", "set", name, "up")
	l.mu.Lock()
	other.ports = l.ports + 1000 // port names stay unique in the shared namespace
	l.mu.Unlock()
	return other
}

// Forward relays connections from the host's loopback into the namespace:
// it listens on 127.0.0.1 (a free port) and connects every accepted
// connection to addr from inside the namespace. A client in the test
// process (the Terraform CLI, a provider) thus reaches a server that runs
// in the namespace, and each of its connections is a new one there, so
// "can a new connection reach it" keeps its meaning. t.Cleanup stops it.
func (n *Namespace) Forward(t testing.TB, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("forward to %s in %s: %v", addr, n.Name, err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			c.Close()
			return false
		}
		conns[c] = true
		return true
	}
	t.Cleanup(func() {
		// Clients may keep connections open for ever (gRPC does): end them.
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !track(c) {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := n.DialContext(context.Background(), "tcp", addr)
				if err != nil || !track(up) {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
				<-done // one side ended: closing both ends the other copy
			}()
		}
	}()
	return l.Addr().String()
}
