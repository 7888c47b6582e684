package provider

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/testenv/agent"
	"github.com/debvisor/debvisor/testenv/netns"
)

// networkNode is a real debvisor-agent that owns the networking of a network namespace the test
// made: it runs inside it (so its NetworkService manages the namespace's links), believes it
// booted slot A of a DebVisor node (the network API is only served on a node), and writes its
// systemd-networkd files into a temporary directory. The namespace has a veth, eth1, whose peer
// lives in a second namespace. The agent listens on the namespace's loopback; endpoint relays
// to it from the host's loopback, each connection a new one.
//
// Bonds and VLANs are not exercised live: the test host's kernel cannot create them (no bonding
// or 8021q modules); the agent's planner and renderer tests cover them.
type networkNode struct {
	agent    *agent.Agent
	ns       *netns.Namespace
	h        *netlink.Handle
	networkd string
	endpoint string
}

func newNetworkNode(t *testing.T) *networkNode {
	t.Helper()
	ns, peer := netns.Add(t, "node"), netns.Add(t, "peer")
	ns.MustIP(t, "link", "add", "eth1", "type", "veth", "peer", "name", "peer1", "netns", peer.Name)
	nsh, err := vnetns.GetFromName(ns.Name)
	must(t, err)
	t.Cleanup(func() { nsh.Close() })
	h, err := netlink.NewHandleAt(nsh)
	must(t, err)
	t.Cleanup(h.Close)

	work := t.TempDir()
	node := filepath.Join(work, "node")
	must(t, os.MkdirAll(filepath.Join(node, "esp"), 0o755))
	must(t, bootenv.NewStore(bootenv.DirFS{Root: filepath.Join(node, "esp")}).Save(context.Background(), bootenv.New()))
	for _, f := range []string{"slot-a", "slot-b"} {
		must(t, os.WriteFile(filepath.Join(node, f), nil, 0o644))
	}
	must(t, os.WriteFile(filepath.Join(node, "cmdline"), []byte("ro debvisor.slot=A debvisor.fallback=0\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(node, "release"), osimage.Release{Version: "1.0.0", Arch: osimage.Arch}.Marshal(), 0o644))
	n := &networkNode{ns: ns, h: h, networkd: filepath.Join(work, "networkd")}
	n.agent, err = agent.Start(context.Background(), agent.Options{
		Binary: agentBinary(t), Dir: filepath.Join(work, "agent"), NodeName: "acc-net-node", NoLibvirt: true, Netns: ns.Name,
		ExtraConfig: fmt.Sprintf(`upgrade:
  esp: %[1]s/esp
  slot_a: %[1]s/slot-a
  slot_b: %[1]s/slot-b
  cmdline_file: %[1]s/cmdline
  release_file: %[1]s/release
network:
  enabled: true
  networkd_dir: %[2]s
  management_interface: eth1
  reload_networkd: false
  resolv_conf: %[1]s/resolv.conf
`, node, n.networkd)})
	must(t, err)
	t.Cleanup(func() {
		n.agent.Stop()
		if t.Failed() {
			t.Logf("debvisor-agent log (%s):\n%s", n.agent.LogFile, n.agent.Log())
		}
	})
	n.endpoint = ns.Forward(t, n.agent.Endpoint)
	return n
}

// clientConfig reaches the agent with the admin certificate.
func (n *networkNode) clientConfig() client.Config {
	a := n.agent
	return client.Config{Endpoint: n.endpoint, CAFile: a.Admin.CAFile, CertFile: a.Admin.CertFile, KeyFile: a.Admin.KeyFile}
}

// config is a provider block for this agent and body as the debvisor_network's.
func (n *networkNode) config(body string) string {
	a := n.agent
	return fmt.Sprintf(`
provider "debvisor" {
  endpoint  = %q
  ca_file   = %q
  cert_file = %q
  key_file  = %q
}

resource "debvisor_network" "this" {
%s}
`, n.endpoint, a.Admin.CAFile, a.Admin.CertFile, a.Admin.KeyFile, body)
}

// bridgeConfig is br0 with eth1 as its port and addrs on br0, plus extra.
func bridgeConfig(addrs, extra string) string {
	return fmt.Sprintf(`  bridges = [{ name = "br0", ports = ["eth1"] }]
  interfaces = [{ name = "br0", addresses = [%s] }]
%s`, addrs, extra)
}

// hasBridge checks the namespace's live state: br0 is a bridge with eth1 in it and exactly addrs.
func (n *networkNode) hasBridge(addrs ...string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		br, err := n.h.LinkByName("br0")
		if err != nil {
			return fmt.Errorf("br0: %w", err)
		}
		if br.Type() != "bridge" {
			return fmt.Errorf("br0 is a %s", br.Type())
		}
		eth1, err := n.h.LinkByName("eth1")
		if err != nil {
			return err
		}
		if eth1.Attrs().MasterIndex != br.Attrs().Index {
			return fmt.Errorf("eth1 is not a port of br0 (master index %d)", eth1.Attrs().MasterIndex)
		}
		list, err := n.h.AddrList(br, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var got []string
		for _, a := range list {
			got = append(got, a.IPNet.String())
		}
		if strings.Join(got, ",") != strings.Join(addrs, ",") {
			return fmt.Errorf("br0 has addresses %v, want %v", got, addrs)
		}
		for _, f := range []string{"10-debvisor-br0.netdev", "10-debvisor-br0.network", "10-debvisor-eth1.network"} {
			if _, err := os.Stat(filepath.Join(n.networkd, f)); err != nil {
				return fmt.Errorf("networkd file: %w", err)
			}
		}
		return nil
	}
}

// hasRoute checks that the main table routes dst via gw.
func (n *networkNode) hasRoute(dst, gw string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		routes, err := n.h.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == dst && r.Gw.Equal(net.ParseIP(gw)) {
				return nil
			}
		}
		return fmt.Errorf("no route to %s via %s in %v", dst, gw, routes)
	}
}

// clean checks that nothing of the configuration is left: no br0, eth1 free, no networkd files.
func (n *networkNode) clean(*terraform.State) error {
	if _, err := n.h.LinkByName("br0"); err == nil {
		return fmt.Errorf("br0 still exists")
	}
	eth1, err := n.h.LinkByName("eth1")
	if err != nil {
		return fmt.Errorf("eth1 is gone: %w", err)
	}
	if eth1.Attrs().MasterIndex != 0 {
		return fmt.Errorf("eth1 is still enslaved (master index %d)", eth1.Attrs().MasterIndex)
	}
	files, _ := filepath.Glob(filepath.Join(n.networkd, "10-debvisor-*"))
	if len(files) > 0 {
		return fmt.Errorf("networkd files left: %v", files)
	}
	return nil
}

func TestAccNetworkResource(t *testing.T) {
	n := newNetworkNode(t)
	addr := "debvisor_network.this"
	first := bridgeConfig(`"10.77.0.1/24"`, "")
	second := bridgeConfig(`"10.77.0.2/24"`, `  routes = [{ destination = "10.90.0.0/16", gateway = "10.77.0.254", interface = "br0" }]
  dns_servers = ["10.77.0.53"]
`)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             n.clean,
		Steps: []resource.TestStep{
			// A bridge with the veth as its port and a static address: applied, confirmed through a
			// new connection, live in the namespace and persisted as networkd files. The test
			// framework's plan after the apply must be empty.
			{
				Config: n.config(first),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact(n.agent.NodeName)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("confirm_timeout"), knownvalue.StringExact("1m0s")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("last_change"), knownvalue.StringRegexp(regexp.MustCompile(`^net-[0-9a-f]{16}$`))),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("interfaces").AtSliceIndex(0), knownvalue.ObjectExact(map[string]knownvalue.Check{
						"name": knownvalue.StringExact("br0"), "dhcp4": knownvalue.Bool(false), "dhcp6": knownvalue.Bool(false),
						"addresses": knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("10.77.0.1/24")}),
						"gateway4":  knownvalue.StringExact(""), "gateway6": knownvalue.StringExact(""), "mtu": knownvalue.Int64Exact(0),
					})),
				},
				Check: n.hasBridge("10.77.0.1/24"),
			},
			// Import by the node's name reads the persisted configuration back.
			{
				ResourceName:      addr,
				ImportState:       true,
				ImportStateId:     n.agent.NodeName,
				ImportStateVerify: true,
			},
			// Another address, a route and a DNS server: an update in place.
			{
				Config: n.config(second),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("dns_servers"), knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("10.77.0.53")})),
				},
				Check: resource.ComposeAggregateTestCheckFunc(n.hasBridge("10.77.0.2/24"), n.hasRoute("10.90.0.0/16", "10.77.0.254")),
			},
			// Refused at plan time, by the provider (VLAN 4095) or by the agent's dry run (a NIC
			// the node does not have): nothing changes.
			{
				Config:      n.config(second + "  vlans = [{ name = \"v0\", parent = \"eth1\", id = 4095 }]\n"),
				ExpectError: regexp.MustCompile(`(?s)Invalid VLAN id.*4095 is not a VLAN id`),
			},
			{
				Config:      n.config(strings.Replace(second, `ports = ["eth1"]`, `ports = ["eth1", "eth9"]`, 1)),
				ExpectError: regexp.MustCompile(`(?s)The node refuses this network configuration.*bridges\[0\]\.ports\[1\].*no\s+network\s+interface\s+"eth9".*Nothing was changed`),
			},
			{
				Config:      n.config(second + "  confirm_timeout = \"2h\"\n"),
				ExpectError: regexp.MustCompile(`(?s)Invalid confirm_timeout.*between 1s and 1h0m0s`),
			},
			// Nothing changed: the node still has the second configuration.
			{
				Config: n.config(second),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: resource.ComposeAggregateTestCheckFunc(n.hasBridge("10.77.0.2/24"), n.hasRoute("10.90.0.0/16", "10.77.0.254")),
			},
			// Drift behind the provider's back: the address taken away (and the route with it),
			// then the whole bridge deleted. The refresh sees the live state, the plan adds the
			// missing parts back, and the apply repairs the node.
			{
				PreConfig: func() { n.ns.MustIP(t, "addr", "del", "10.77.0.2/24", "dev", "br0") },
				Config:    n.config(second),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeAggregateTestCheckFunc(n.hasBridge("10.77.0.2/24"), n.hasRoute("10.90.0.0/16", "10.77.0.254")),
			},
			{
				PreConfig: func() { n.ns.MustIP(t, "link", "del", "br0") },
				Config:    n.config(second),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeAggregateTestCheckFunc(n.hasBridge("10.77.0.2/24"), n.hasRoute("10.90.0.0/16", "10.77.0.254")),
			},
		},
	})
}

// TestNetworkResourceUnreachable applies a change and then cannot reach the node through a new
// connection (the fresh dial goes to a closed port, as when a change cut the provider off): the
// apply fails saying the node reverts the change, and at the deadline the node has.
func TestNetworkResourceUnreachable(t *testing.T) {
	n := newNetworkNode(t)
	c, err := client.New(n.clientConfig())
	must(t, err)
	t.Cleanup(func() { c.Close() })
	dead := n.clientConfig()
	dead.Endpoint = "127.0.0.1:1"
	r := &NetworkResource{p: &providerData{client: c, cfg: dead, endpoint: n.endpoint, requestTimeout: 5 * time.Second}}
	ctx := context.Background()
	data := NetworkResourceModel{}
	resp := &v1.NetworkConfig{Bridges: []*v1.Bridge{{Name: "br0", Ports: []string{"eth1"}}}}
	// The model from a configuration, as the framework would hand it over.
	if d := data.fromAPI(&v1.NetworkState{Desired: resp}); d.HasError() {
		t.Fatal(d)
	}
	data.ConfirmTimeout = types.StringValue("2s")
	_, err = r.apply(ctx, &data)
	if err == nil || !regexp.MustCompile(`(?s)was applied, but the provider could not confirm it.*could not be reached through a new connection.*reverts the change`).MatchString(err.Error()) {
		t.Fatalf("apply = %v, want an error saying the node reverts the change", err)
	}
	if _, lerr := n.h.LinkByName("br0"); lerr != nil {
		t.Fatalf("br0 should exist until the deadline: %v", lerr)
	}
	api := v1.NewNetworkServiceClient(c.Conn())
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := api.GetNetwork(ctx, &v1.GetNetworkRequest{})
		must(t, err)
		if st.GetPending() == nil && st.GetLast().GetState() == v1.NetworkChange_STATE_REVERTED {
			if !strings.Contains(st.GetLast().GetReason(), "deadline") {
				t.Errorf("reverted because %q", st.GetLast().GetReason())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the change was not reverted: %v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := n.clean(nil); err != nil {
		t.Errorf("after the revert: %v", err)
	}
}
