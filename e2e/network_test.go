package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/qemu"
)

// The network test node's extra NICs, all on one QEMU hub: two bond
// members and the peer the bond talks to (moved into a network namespace
// of its own inside the node, with a VLAN on top).
var hubMACs = []string{"52:54:00:de:b0:01", "52:54:00:de:b0:02", "52:54:00:de:b0:03"}

const (
	bondAddr = "10.42.0.1/24"
	peerIP   = "10.42.0.2"
	vlanID   = 42
	vlanName = "bond0.42"
)

// testHostNetwork (TestSecondNode/HostNetwork) is NetworkService on a booted node with several NICs,
// under the node's own kernel (the host's lacks bonding and 802.1Q): an
// active-backup bond of two NICs with a VLAN on top comes up through the
// API and carries traffic to a peer, also after the active member's cable
// is pulled; a change that takes the management address away cuts the
// test off, is not confirmed, and heals itself at its deadline; the bond
// and the VLAN come back after a reboot from the networkd files the agent
// wrote.
func testHostNetwork(t *testing.T) {
	ctx := context.Background()
	img := build(ctx, t, "0.1.0", "")
	s := newSeed(t, map[string]string{"/etc/debvisor/agent.yaml": nodeAgentConfig})
	// SeaBIOS is the shorter boot under TCG; the firmware plays no part here.
	n := bootNode(ctx, t, img.Raw, "8G", s, func(c *qemu.Config) {
		c.Name, c.Firmware, c.Accel = "debvisor-e2e-net", qemu.FirmwareBIOS, qemu.AccelTCG
		c.MemoryMiB, c.CPUs = 1536, 2
		c.HubNICs, c.Monitor = hubMACs, true
	})
	n.waitAgent(ctx)
	n.waitSSH(ctx)
	nw := v1.NewNetworkServiceClient(n.client().Conn())

	st, err := nw.GetNetwork(ctx, &v1.GetNetworkRequest{})
	if err != nil {
		t.Fatal(err)
	}
	mgmt := st.GetManagementInterface()
	nics := nicsByMAC(t, st)
	memberA, memberB, peer := nics[hubMACs[0]], nics[hubMACs[1]], nics[hubMACs[2]]
	if mgmt == "" || slices.Contains([]string{memberA, memberB, peer}, mgmt) {
		t.Fatalf("management interface %q (hub NICs %s %s %s)", mgmt, memberA, memberB, peer)
	}
	t.Logf("management %s; bond members %s %s; peer %s", mgmt, memberA, memberB, peer)
	startPeer(ctx, t, n, peer)

	// Bond + VLAN + address, confirmed.
	bond := &v1.NetworkConfig{
		Bonds:      []*v1.Bond{{Name: "bond0", Mode: "active-backup", Members: []string{memberA, memberB}, MiimonMs: 100}},
		Vlans:      []*v1.Vlan{{Name: vlanName, Parent: "bond0", Id: vlanID}},
		Interfaces: []*v1.InterfaceConfig{{Name: vlanName, Addresses: []string{bondAddr}}},
	}
	res, err := nw.ApplyNetwork(ctx, &v1.ApplyNetworkRequest{Config: bond, ConfirmTimeout: durationpb.New(2 * time.Minute)})
	if err != nil {
		t.Fatalf("apply the bond: %v", err)
	}
	t.Logf("bond change %s, plan:\n  %s", res.GetChange().GetId(), strings.Join(res.GetChange().GetPlan(), "\n  "))
	if _, err := nw.ConfirmNetwork(ctx, &v1.ConfirmNetworkRequest{Id: res.GetChange().GetId()}); err != nil {
		t.Fatalf("confirm the bond: %v", err)
	}
	checkBond(ctx, t, n, memberA, memberB)
	pingPeer(ctx, t, n, "over the bond")

	// Pull the active member's cable: the bond fails over, traffic goes on.
	active := n.mustSSH(ctx, "cat /sys/class/net/bond0/bonding/active_slave")
	other, dev := memberB, qemu.HubNICID(0)
	if active == memberB {
		other, dev = memberA, qemu.HubNICID(1)
	} else if active != memberA {
		t.Fatalf("bond0's active member is %q, want %s or %s", active, memberA, memberB)
	}
	if err := n.m.SetLink(ctx, dev, false); err != nil {
		t.Fatal(err)
	}
	waitSSHOutput(ctx, t, n, "the bond to fail over to "+other, "cat /sys/class/net/bond0/bonding/active_slave", other)
	pingPeer(ctx, t, n, "after "+active+" lost its carrier")
	if err := n.m.SetLink(ctx, dev, true); err != nil {
		t.Fatal(err)
	}

	// Take the management address away (a static address elsewhere
	// instead of DHCP) and never confirm: the agent is cut off, then the
	// change reverts at its deadline and the agent answers again.
	cut := &v1.NetworkConfig{
		Bonds: bond.GetBonds(), Vlans: bond.GetVlans(),
		Interfaces: append(slices.Clone(bond.GetInterfaces()), &v1.InterfaceConfig{Name: mgmt, Addresses: []string{"192.0.2.10/24"}}),
	}
	const deadline = 30 * time.Second
	applied := time.Now()
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	res, err = v1.NewNetworkServiceClient(n.client().Conn()).ApplyNetwork(actx, &v1.ApplyNetworkRequest{Config: cut, ConfirmTimeout: durationpb.New(deadline)})
	cancel()
	// The answer may be lost with the address it would travel to.
	t.Logf("apply of the management change: %v (change %s)", err, res.GetChange().GetId())
	if err == nil && !res.GetChange().GetTouchesManagement() {
		t.Fatalf("the change of %s's addresses does not count as touching the management interface", mgmt)
	}
	if !cutOff(ctx, n, applied.Add(deadline)) {
		t.Fatal("the agent stayed reachable after its management address was taken away")
	}
	t.Logf("cut off %s after the apply", time.Since(applied).Round(time.Second))
	n.waitAgent(ctx)
	back := time.Since(applied)
	st, err = v1.NewNetworkServiceClient(n.client().Conn()).GetNetwork(ctx, &v1.GetNetworkRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetPending() != nil || st.GetLast().GetState() != v1.NetworkChange_STATE_REVERTED || !strings.Contains(st.GetLast().GetReason(), "deadline") {
		t.Fatalf("after the deadline: pending %v, last %v", st.GetPending(), st.GetLast())
	}
	if got := st.GetDesired(); len(got.GetInterfaces()) != 1 || got.GetInterfaces()[0].GetName() != vlanName {
		t.Fatalf("desired configuration after the revert: %v", got)
	}
	t.Logf("the agent answered again %s after the apply (deadline %s)", back.Round(time.Second), deadline)
	checkBond(ctx, t, n, memberA, memberB)
	pingPeer(ctx, t, n, "after the revert")

	// A reboot: networkd brings bond and VLAN back from the agent's files.
	bootID := n.mustSSH(ctx, "cat /proc/sys/kernel/random/boot_id")
	_, _ = n.ssh(ctx, "systemctl reboot")
	if err := n.m.WaitFor(ctx, 2*time.Second, "the node to go down", func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := n.ssh(cctx, "true"); err == nil {
			return fmt.Errorf("SSH still answers")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	n.waitAgent(ctx)
	n.waitSSH(ctx)
	if id := n.mustSSH(ctx, "cat /proc/sys/kernel/random/boot_id"); id == bootID {
		t.Fatalf("boot id %s unchanged: the node did not reboot", id)
	}
	checkBond(ctx, t, n, memberA, memberB)
	startPeer(ctx, t, n, peer) // the namespace went with the reboot
	pingPeer(ctx, t, n, "after the reboot")
}

// nicsByMAC maps the hub NICs' MAC addresses to their names in the node.
func nicsByMAC(t *testing.T, st *v1.NetworkState) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, l := range st.GetLinks() {
		if slices.Contains(hubMACs, strings.ToLower(l.GetMac())) {
			m[strings.ToLower(l.GetMac())] = l.GetName()
		}
	}
	if len(m) != len(hubMACs) {
		t.Fatalf("the node shows %d of the %d hub NICs: %v", len(m), len(hubMACs), st.GetLinks())
	}
	return m
}

// startPeer moves the peer NIC into a network namespace of its own with a
// VLAN on top and the peer's address: the other end of the bond's cable.
func startPeer(ctx context.Context, t *testing.T, n *node, nic string) {
	t.Helper()
	n.mustSSH(ctx, fmt.Sprintf(`set -e
ip netns add peer
ip link set %[1]s netns peer
ip -n peer link set lo up
ip -n peer link set %[1]s up
ip -n peer link add link %[1]s name %[1]s.%[2]d type vlan id %[2]d
ip -n peer addr add %[3]s/24 dev %[1]s.%[2]d
ip -n peer link set %[1]s.%[2]d up`, nic, vlanID, peerIP))
}

// pingPeer sends pings from the node's VLAN address to the peer and back.
func pingPeer(ctx context.Context, t *testing.T, n *node, when string) {
	t.Helper()
	// The first pings may go while ARP and the bond settle.
	ctx2, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := n.m.WaitFor(ctx2, time.Second, "the peer to answer pings "+when, func(ctx context.Context) error {
		out, err := n.ssh(ctx, "ping -c 3 -i 0.5 -W 2 -I "+vlanName+" "+peerIP)
		if err != nil {
			return fmt.Errorf("%w: %s", err, tail(out, 1))
		}
		return nil
	}); err != nil {
		out, _ := n.ssh(ctx, "cat /proc/net/bonding/bond0; ip -d addr; ip neigh; networkctl --no-pager; echo '--- peer'; ip -n peer -d addr; ip -n peer neigh; echo '--- journal'; journalctl -b --no-pager -u systemd-networkd -u debvisor-rpcd | tail -40")
		t.Fatalf("%v\nthe node's network:\n%s", err, out)
	}
	out := n.mustSSH(ctx, "ip netns exec peer ping -c 3 -i 0.5 -W 2 "+strings.Split(bondAddr, "/")[0])
	t.Logf("%s: %s", when, tail(out, 1))
}

// checkBond checks bond0 and its VLAN in the node, live: both members
// enslaved, the mode, the VLAN's id and address, and what the API reports.
func checkBond(ctx context.Context, t *testing.T, n *node, a, b string) {
	t.Helper()
	mode := n.mustSSH(ctx, "cat /sys/class/net/bond0/bonding/mode")
	slaves := strings.Fields(n.mustSSH(ctx, "cat /sys/class/net/bond0/bonding/slaves"))
	slices.Sort(slaves)
	want := []string{a, b}
	slices.Sort(want)
	if !strings.HasPrefix(mode, "active-backup") || !slices.Equal(slaves, want) {
		t.Fatalf("bond0: mode %q, members %v, want active-backup of %v", mode, slaves, want)
	}
	vlan := n.mustSSH(ctx, "ip -d -o link show "+vlanName)
	if !strings.Contains(vlan, fmt.Sprintf("vlan protocol 802.1Q id %d", vlanID)) || !strings.Contains(vlan, "@bond0") {
		t.Fatalf("%s: %s", vlanName, vlan)
	}
	st, err := v1.NewNetworkServiceClient(n.client().Conn()).GetNetwork(ctx, &v1.GetNetworkRequest{})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]*v1.Link{}
	for _, l := range st.GetLinks() {
		kinds[l.GetName()] = l
	}
	if kinds["bond0"].GetKind() != "bond" || kinds[vlanName].GetKind() != "vlan" || !slices.Contains(kinds[vlanName].GetAddresses(), bondAddr) ||
		kinds[a].GetMaster() != "bond0" || kinds[b].GetMaster() != "bond0" {
		t.Fatalf("GetNetwork: bond0 %v, %s %v, %s %v, %s %v", kinds["bond0"], vlanName, kinds[vlanName], a, kinds[a], b, kinds[b])
	}
}

// waitSSHOutput runs command until its output is want.
func waitSSHOutput(ctx context.Context, t *testing.T, n *node, what, command, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := n.m.WaitFor(ctx, time.Second, what, func(ctx context.Context) error {
		out, err := n.ssh(ctx, command)
		if err != nil {
			return fmt.Errorf("%q: %w: %s", command, err, out)
		}
		if out != want {
			return fmt.Errorf("%q: %s", command, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// cutOff reports whether a fresh connection to the agent failed at least
// once before until.
func cutOff(ctx context.Context, n *node, until time.Time) bool {
	for time.Now().Before(until) {
		c := n.client()
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := c.Node.GetNode(cctx, &v1.GetNodeRequest{})
		cancel()
		c.Close()
		if err != nil {
			return true
		}
		time.Sleep(time.Second)
	}
	return false
}
