package network

import (
	"context"
	"embed"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// bridgeConfig is the VM bridge br0 with va as its port, 10.99.0.1/24, a
// route to the peer's 10.98.0.1 and DNS servers.
func bridgeConfig() *v1.NetworkConfig {
	return &v1.NetworkConfig{
		Bridges:    []*v1.Bridge{{Name: "br0", Ports: []string{"va"}}},
		Interfaces: []*v1.InterfaceConfig{{Name: "br0", Addresses: []string{"10.99.0.1/24", "fd00:99::1/64"}}},
		Routes: []*v1.Route{
			{Destination: "10.98.0.0/24", Gateway: "10.99.0.2", Interface: "br0", Metric: 50},
			{Destination: "fd00:98::/64", Gateway: "fd00:99::2", Interface: "br0"},
		},
		DnsServers: []string{"10.99.0.53", "2001:db8::53"},
	}
}

func TestApplyBridgeConfirmed(t *testing.T) {
	l := newLab(t)
	m := l.manager(t)
	ctx := context.Background()
	if err := l.reach(t, "10.99.0.2"); err == nil {
		t.Fatal("va has no address yet, but the peer answered")
	}
	ch, err := m.Apply(ctx, Request{Config: bridgeConfig(), Timeout: 2 * time.Second, RequestedBy: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if ch.GetState() != v1.NetworkChange_STATE_PENDING || !strings.HasPrefix(ch.GetId(), "net-") {
		t.Fatalf("change = %v", ch)
	}
	t.Logf("plan:\n  %s", strings.Join(ch.GetPlan(), "\n  "))
	st := l.live(t)
	br := st.links["br0"]
	if br.Kind != "bridge" || !br.Up || !slices.Equal(br.Addrs, []string{"10.99.0.1/24", "fd00:99::1/64"}) {
		t.Errorf("br0 = %+v", br)
	}
	if st.links["va"].Master != "br0" || !st.links["va"].Up {
		t.Errorf("va = %+v, want a port of br0, up", st.links["va"])
	}
	for _, r := range []routeState{{Dst: "10.98.0.0/24", Gw: "10.99.0.2", Dev: "br0", Metric: 50}, {Dst: "fd00:98::/64", Gw: "fd00:99::2", Dev: "br0", Metric: 1024}} {
		if !slices.Contains(st.routes, r) {
			t.Errorf("route %s missing: %v", r, st.routes)
		}
	}
	compareGolden(t, "bridge", l.files(t))

	got, err := m.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetPending().GetId() != ch.GetId() || !proto.Equal(got.GetDesired(), bridgeConfig()) {
		t.Errorf("Get: pending %v desired %v", got.GetPending(), got.GetDesired())
	}
	for _, lk := range got.GetLinks() {
		if lk.GetName() == "va" && (lk.GetMaster() != "br0" || !lk.GetCarrier() || lk.GetMac() == "") {
			t.Errorf("live va = %v", lk)
		}
	}

	confirmedAt := time.Now()
	if _, err := m.Confirm(ctx, ch.GetId(), "test"); err != nil {
		t.Fatal(err)
	}
	// Traffic flows over the bridge, and through the route.
	for _, addr := range []string{"10.99.0.2", "10.98.0.1"} {
		if err := l.reach(t, addr); err != nil {
			t.Errorf("reach %s from a: %v", addr, err)
		}
	}
	time.Sleep(time.Until(confirmedAt.Add(2500 * time.Millisecond))) // past the deadline: nothing may revert
	if st2 := l.live(t); st2.links["br0"].Kind != "bridge" || st2.links["va"].Master != "br0" {
		t.Errorf("confirmed change was undone: %+v", st2.links)
	}
	if _, err := m.Confirm(ctx, ch.GetId(), "test"); !fault.Is(err, fault.FailedPrecondition) || !strings.Contains(err.Error(), "confirmed") {
		t.Errorf("second confirm: %v, want FailedPrecondition saying it was confirmed", err)
	}

	// A later change that drops the bridge undoes it: br0 deleted, va
	// released, the route gone, the files removed.
	ch2, err := m.Apply(ctx, Request{Config: &v1.NetworkConfig{}, NoConfirm: true, RequestedBy: "test"})
	if err == nil {
		t.Fatalf("dropping the management interface's bridge without confirm was accepted: %v", ch2)
	}
	ch2, err = m.Apply(ctx, Request{Config: &v1.NetworkConfig{}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st3 := l.live(t)
	if _, ok := st3.links["br0"]; ok || st3.links["va"].Master != "" || len(l.files(t)) != 0 {
		t.Errorf("after removing the config: br0 present=%v va=%+v files=%v", ok, st3.links["va"], keys(l.files(t)))
	}
	if _, err := m.Confirm(ctx, ch2.GetId(), "test"); err != nil {
		t.Fatal(err)
	}
}

func TestUnconfirmedChangeReverts(t *testing.T) {
	l := newLab(t)
	// The state before: va addressed by hand with a route through it, and
	// a confirmed earlier configuration's file in place.
	l.a.MustIP(t, "addr", "add", "10.99.0.1/24", "dev", "va")
	l.a.MustIP(t, "link", "set", "va", "up")
	l.a.MustIP(t, "route", "add", "10.98.0.0/24", "via", "10.99.0.2", "dev", "va")
	m := l.manager(t)
	ctx := context.Background()
	if _, err := m.Apply(ctx, Request{Config: &v1.NetworkConfig{Interfaces: []*v1.InterfaceConfig{{Name: "ve", Mtu: 1400}}}, NoConfirm: true}); err != nil {
		t.Fatal(err)
	}
	before, beforeFiles := l.live(t), l.files(t)
	if err := l.reach(t, "10.98.0.1"); err != nil {
		t.Fatalf("before: %v", err)
	}

	const deadline = 2 * time.Second
	changed := m.Changed()
	start := time.Now()
	ch, err := m.Apply(ctx, Request{Config: bridgeConfig(), Timeout: deadline})
	if err != nil {
		t.Fatal(err)
	}
	if st := l.live(t); st.links["va"].Master != "br0" || len(st.links["va"].Addrs) != 0 {
		t.Fatalf("not applied: va = %+v", st.links["va"])
	}
	// Never before the deadline; how soon after it is the benchmark's
	// business (BenchmarkRevertTiming), not an assertion on a busy machine.
	done := waitResolved(t, m, changed, deadline+3*time.Second)
	if took := done.Sub(start); took < deadline {
		t.Errorf("reverted after %s, before the %s deadline", took, deadline)
	}
	l.sameNetwork(t, before, beforeFiles)
	if err := l.reach(t, "10.98.0.1"); err != nil {
		t.Errorf("after the revert: %v", err)
	}
	got, err := m.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetPending() != nil || got.GetLast().GetId() != ch.GetId() || got.GetLast().GetState() != v1.NetworkChange_STATE_REVERTED ||
		got.GetLast().GetReason() != "confirm deadline passed" {
		t.Errorf("after the revert: pending %v last %v", got.GetPending(), got.GetLast())
	}
	if got.GetDesired().GetInterfaces()[0].GetMtu() != 1400 {
		t.Errorf("desired config not restored: %v", got.GetDesired())
	}
	if _, err := m.Confirm(ctx, ch.GetId(), "late"); !fault.Is(err, fault.FailedPrecondition) || !strings.Contains(err.Error(), "confirm deadline passed") {
		t.Errorf("late confirm: %v", err)
	}
}

// TestCutOffHealsItself: a change that takes the address the peer uses
// away from the management link cuts the peer off; nobody can confirm it,
// and the node is reachable again once the deadline passes.
func TestCutOffHealsItself(t *testing.T) {
	l := newLab(t)
	l.a.MustIP(t, "addr", "add", "10.99.0.1/24", "dev", "va")
	l.a.MustIP(t, "link", "set", "va", "up")
	m := l.manager(t)
	if err := l.reach(t, "10.99.0.2"); err != nil {
		t.Fatalf("before: %v", err)
	}
	const deadline = 3 * time.Second
	changed := m.Changed()
	mistake := &v1.NetworkConfig{
		Bridges:    []*v1.Bridge{{Name: "br0", Ports: []string{"va"}}},
		Interfaces: []*v1.InterfaceConfig{{Name: "br0", Addresses: []string{"10.55.0.1/24"}}},
	}
	if _, err := m.Apply(context.Background(), Request{Config: mistake, Timeout: deadline}); err != nil {
		t.Fatal(err)
	}
	if err := l.reachWithin(t, "10.99.0.2", 500*time.Millisecond); err == nil {
		t.Fatal("the peer is still reachable: the change did not cut it off")
	}
	waitResolved(t, m, changed, deadline+3*time.Second)
	if err := l.reach(t, "10.99.0.2"); err != nil {
		t.Errorf("after the deadline: %v", err)
	}
}

func TestExplicitRevert(t *testing.T) {
	l := newLab(t)
	m := l.manager(t)
	ctx := context.Background()
	before, beforeFiles := l.live(t), l.files(t)
	ch, err := m.Apply(ctx, Request{Config: bridgeConfig()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(ctx, Request{Config: &v1.NetworkConfig{}}); !fault.Is(err, fault.FailedPrecondition) || !strings.Contains(err.Error(), ch.GetId()) {
		t.Errorf("second apply while pending: %v", err)
	}
	if _, err := m.Revert(ctx, "net-0000000000000000", "test"); !fault.Is(err, fault.NotFound) {
		t.Errorf("revert of an unknown id: %v", err)
	}
	r, err := m.Revert(ctx, ch.GetId(), "admin-user")
	if err != nil {
		t.Fatal(err)
	}
	if r.GetState() != v1.NetworkChange_STATE_REVERTED || r.GetReason() != "reverted by admin-user" {
		t.Errorf("revert = %v", r)
	}
	l.sameNetwork(t, before, beforeFiles)
}

// TestRevertAfterRestart: the agent stops while a change is pending; the
// next agent reverts it at the deadline.
func TestRevertAfterRestart(t *testing.T) {
	l := newLab(t)
	before, beforeFiles := l.live(t), l.files(t)
	m1 := l.manager(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m1.Run(ctx) }()
	if _, err := m1.Apply(context.Background(), Request{Config: bridgeConfig(), Timeout: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	m1.Close()
	if _, ok := l.live(t).links["br0"]; !ok {
		t.Fatal("stopping the agent undid the change")
	}

	m2 := l.manager(t)
	changed := m2.Changed()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() { _ = m2.Run(ctx2) }()
	waitResolved(t, m2, changed, 4*time.Second)
	l.sameNetwork(t, before, beforeFiles)
}

func TestRefusedInputs(t *testing.T) {
	l := newLab(t)
	m := l.manager(t)
	ctx := context.Background()
	// A confirmed configuration, so that "nothing changed" covers files
	// and the desired state too.
	if _, err := m.Apply(ctx, Request{Config: &v1.NetworkConfig{Interfaces: []*v1.InterfaceConfig{{Name: "ve", Addresses: []string{"10.60.0.1/24"}}}}, NoConfirm: true}); err != nil {
		t.Fatal(err)
	}
	bridge := func(ports ...string) []*v1.Bridge { return []*v1.Bridge{{Name: "br0", Ports: ports}} }
	iface := func(name string, addrs ...string) *v1.InterfaceConfig {
		return &v1.InterfaceConfig{Name: name, Addresses: addrs}
	}
	tests := []struct {
		name      string
		cfg       *v1.NetworkConfig
		noConfirm bool
		timeout   time.Duration
		kind      fault.Kind
		want      string
	}{
		{"unknown NIC as bridge port", &v1.NetworkConfig{Bridges: bridge("eth9")}, false, 0, fault.Invalid, `bridges[0].ports[0]: no network interface "eth9"`},
		{"unknown NIC as bond member", &v1.NetworkConfig{Bonds: []*v1.Bond{{Name: "bond0", Mode: "802.3ad", Members: []string{"ve", "eth9"}}}}, false, 0, fault.Invalid, `bonds[0].members[1]: no network interface "eth9"`},
		{"unknown NIC addressed", &v1.NetworkConfig{Interfaces: []*v1.InterfaceConfig{iface("eth9", "10.1.0.1/24")}}, false, 0, fault.Invalid, `interfaces[0].name: no network interface "eth9"`},
		{"VLAN id 0", &v1.NetworkConfig{Vlans: []*v1.Vlan{{Name: "vlan0", Parent: "ve", Id: 0}}}, false, 0, fault.Invalid, "vlans[0].id: 0 is not a VLAN id (1-4094"},
		{"VLAN id 4095", &v1.NetworkConfig{Vlans: []*v1.Vlan{{Name: "vlan4095", Parent: "ve", Id: 4095}}}, false, 0, fault.Invalid, "vlans[0].id: 4095 is not a VLAN id"},
		{"VLAN on an unknown parent", &v1.NetworkConfig{Vlans: []*v1.Vlan{{Name: "v10", Parent: "eth9", Id: 10}}}, false, 0, fault.Invalid, `vlans[0].parent: no network interface "eth9"`},
		{"overlapping addresses", &v1.NetworkConfig{Bridges: bridge("va"), Interfaces: []*v1.InterfaceConfig{iface("br0", "10.99.0.1/24"), iface("ve", "10.99.0.7/25")}}, false, 0, fault.Invalid, "interfaces[1].addresses[0]: 10.99.0.7/25 overlaps 10.99.0.1/24 (interfaces[0].addresses[0] on br0)"},
		{"overlap with an unmanaged link", &v1.NetworkConfig{Interfaces: []*v1.InterfaceConfig{iface("ve", "10.50.0.2/24")}}, false, 0, fault.FailedPrecondition, "overlaps 10.50.0.1/24 on br9, which this configuration does not manage"},
		{"NIC already enslaved", &v1.NetworkConfig{Bridges: bridge("va", "vc")}, false, 0, fault.FailedPrecondition, "bridges[0].ports[1]: vc is already enslaved to br9"},
		{"NIC in two masters", &v1.NetworkConfig{Bridges: bridge("ve"), Bonds: []*v1.Bond{{Name: "bond0", Mode: "active-backup", Members: []string{"ve"}}}}, false, 0, fault.Invalid, "ve is already enslaved by bonds[0].members[0]"},
		{"bond of the management NIC without confirm", &v1.NetworkConfig{Bonds: []*v1.Bond{{Name: "bond0", Mode: "active-backup", Members: []string{"va"}, MiimonMs: 100}}}, true, 0, fault.FailedPrecondition, "no_confirm: the change touches the management interface va"},
		{"bridge of the management NIC without confirm", &v1.NetworkConfig{Bridges: bridge("va")}, true, 0, fault.FailedPrecondition, "management interface va"},
		{"unknown bond mode", &v1.NetworkConfig{Bonds: []*v1.Bond{{Name: "bond0", Mode: "lacp", Members: []string{"ve"}}}}, false, 0, fault.Invalid, `bonds[0].mode: "lacp" is not a bonding mode`},
		{"address on a bridge port", &v1.NetworkConfig{Bridges: bridge("ve"), Interfaces: []*v1.InterfaceConfig{iface("ve", "10.7.0.1/24")}}, false, 0, fault.Invalid, "ve is enslaved to br0: configure addresses on br0 instead"},
		{"gateway outside the subnets", &v1.NetworkConfig{Interfaces: []*v1.InterfaceConfig{{Name: "ve", Addresses: []string{"10.7.0.1/24"}, Gateway4: "10.8.0.1"}}}, false, 0, fault.Invalid, "interfaces[0].gateway4: 10.8.0.1 is in none of the link's subnets"},
		{"route with host bits", &v1.NetworkConfig{Interfaces: []*v1.InterfaceConfig{iface("ve", "10.7.0.1/24")}, Routes: []*v1.Route{{Destination: "10.9.0.5/16", Gateway: "10.7.0.254", Interface: "ve"}}}, false, 0, fault.Invalid, "routes[0].destination: 10.9.0.5/16 has host bits set"},
		{"not CIDR", &v1.NetworkConfig{Interfaces: []*v1.InterfaceConfig{iface("ve", "10.7.0.1")}}, false, 0, fault.Invalid, `interfaces[0].addresses[0]: "10.7.0.1" is not an address in CIDR form`},
		{"bad interface name", &v1.NetworkConfig{Bridges: []*v1.Bridge{{Name: "a-very-long-bridge-name"}}}, false, 0, fault.Invalid, "bridges[0].name:"},
		{"bridge over an existing veth", &v1.NetworkConfig{Bridges: []*v1.Bridge{{Name: "ve"}}}, false, 0, fault.FailedPrecondition, "ve: a veth exists with that name; it is not a bridge"},
		{"deadline too short", &v1.NetworkConfig{}, false, 100 * time.Millisecond, fault.Invalid, "confirm_timeout: 100ms is not between 1s and 1h0m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, beforeFiles := l.live(t), l.files(t)
			desired, _ := m.Get(ctx)
			_, err := m.Apply(ctx, Request{Config: tt.cfg, NoConfirm: tt.noConfirm, Timeout: tt.timeout})
			if err == nil {
				t.Fatal("accepted")
			}
			if got := fault.KindOf(err); got != tt.kind {
				t.Errorf("kind = %v, want %v (%v)", got, tt.kind, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			l.sameNetwork(t, before, beforeFiles)
			after, _ := m.Get(ctx)
			if !proto.Equal(desired.GetDesired(), after.GetDesired()) || after.GetPending() != nil {
				t.Errorf("desired or pending changed: %v", after)
			}
		})
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	l := newLab(t)
	m := l.manager(t)
	before, beforeFiles := l.live(t), l.files(t)
	ch, err := m.Apply(context.Background(), Request{Config: bridgeConfig(), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"write 10-debvisor-br0.netdev", "write 10-debvisor-br0.network", "write 10-debvisor-va.network",
		"create bridge br0", "enslave va to br0", "add address 10.99.0.1/24 to br0", "add address fd00:99::1/64 to br0",
		"bring br0 up", "bring va up",
		"add route 10.98.0.0/24 via 10.99.0.2 dev br0 metric 50", "add route fd00:98::/64 via fd00:99::2 dev br0 metric 1024",
	}
	if ch.GetState() != v1.NetworkChange_STATE_PLANNED || !slices.Equal(ch.GetPlan(), want) || !ch.GetTouchesManagement() {
		t.Errorf("dry run = %v\nplan %q\nwant %q", ch, ch.GetPlan(), want)
	}
	l.sameNetwork(t, before, beforeFiles)
}

// TestRenderGolden covers what the host kernel cannot create (bonds and
// VLANs): their networkd files.
func TestRenderGolden(t *testing.T) {
	cfg := &v1.NetworkConfig{
		Bonds: []*v1.Bond{
			{Name: "bond0", Mode: "802.3ad", Members: []string{"enp1s0", "enp2s0"}, MiimonMs: 100},
			{Name: "bond1", Mode: "active-backup", Members: []string{"enp3s0", "enp4s0"}},
		},
		Vlans:   []*v1.Vlan{{Name: "vlan10", Parent: "bond0", Id: 10}, {Name: "vlan20", Parent: "bond0", Id: 20}},
		Bridges: []*v1.Bridge{{Name: "br-vm", Ports: []string{"vlan10"}}, {Name: "br-host"}},
		Interfaces: []*v1.InterfaceConfig{
			{Name: "br-vm", Addresses: []string{"192.0.2.10/24", "2001:db8::10/64"}, Gateway4: "192.0.2.1", Gateway6: "2001:db8::1", Mtu: 9000},
			{Name: "vlan20", Dhcp4: true, Dhcp6: true},
			{Name: "bond1", Dhcp4: true},
		},
		Routes:     []*v1.Route{{Destination: "198.51.100.0/24", Gateway: "192.0.2.254", Interface: "br-vm", Metric: 100}},
		DnsServers: []string{"192.0.2.53", "2001:db8::53"},
	}
	if err := validateShape(cfg); err != nil {
		t.Fatal(err)
	}
	compareGolden(t, "full", render(cfg))
}

//go:embed testdata
var golden embed.FS

// compareGolden compares files with testdata/<name>/ (-update rewrites it,
// for the next build to embed).
func compareGolden(t *testing.T, name string, files map[string][]byte) {
	t.Helper()
	dir := filepath.Join("testdata", name)
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := writeFiles(dir, files); err != nil {
			t.Fatal(err)
		}
		return
	}
	ents, err := fs.ReadDir(golden, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for _, e := range ents {
		if want[e.Name()], err = fs.ReadFile(golden, dir+"/"+e.Name()); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(keys(files), keys(want)) {
		t.Fatalf("files %v, golden %v", keys(files), keys(want))
	}
	for n, b := range files {
		if string(b) != string(want[n]) {
			t.Errorf("%s differs from %s:\n%s", n, filepath.Join(dir, n), b)
		}
	}
}

// TestReloadRunsAfterLiveSteps: networkd is told about new files only
// once the agent's own netlink steps are done, on apply and on revert.
// Reloaded earlier, networkd creates the bonds, VLANs and bridges from the
// files itself and the agent's "create" finds them there (a booted node's
// first bond failed so).
func TestReloadRunsAfterLiveSteps(t *testing.T) {
	l := newLab(t)
	type seen struct {
		br0, vaInBr0 bool
		files        int
	}
	var calls []seen
	m := l.manager(t, func(c *Config) {
		c.Reload = func(context.Context) error {
			st := l.live(t)
			calls = append(calls, seen{br0: st.links["br0"].Exists, vaInBr0: st.links["va"].Master == "br0", files: len(l.files(t))})
			return nil
		}
	})
	changed := m.Changed()
	if _, err := m.Apply(context.Background(), Request{Config: bridgeConfig(), Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	waitResolved(t, m, changed, 5*time.Second)
	want := []seen{{br0: true, vaInBr0: true, files: len(render(bridgeConfig()))}, {}}
	if !slices.Equal(calls, want) {
		t.Fatalf("networkd reloads saw %+v, want %+v (apply: bridge built and files written; revert: bridge gone, files removed)", calls, want)
	}
}

// TestAddLinkAdoptsTheSameLink: a link created meanwhile by someone else
// is taken over when it is what the step would have made, and is an error
// naming the conflict when it is not.
func TestAddLinkAdoptsTheSameLink(t *testing.T) {
	l := newLab(t)
	l.a.MustIP(t, "link", "add", "br7", "type", "bridge")
	if err := addLink(&linkTarget{name: "br7", kind: kindBridge})(l.h); err != nil {
		t.Fatalf("creating an existing bridge of the same name: %v", err)
	}
	err := addLink(&linkTarget{name: "va", kind: kindBridge})(l.h)
	if err == nil || !strings.Contains(err.Error(), "va exists and is not the bridge asked for") {
		t.Fatalf("creating a bridge where a veth is: %v", err)
	}
}
