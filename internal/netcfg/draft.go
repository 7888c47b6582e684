package netcfg

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// BondModes are the kernel's bond mode names, the first the default: it
// needs nothing of the switch.
var BondModes = []string{"active-backup", "802.3ad", "balance-rr", "balance-xor", "broadcast", "balance-tlb", "balance-alb"}

// The edits the screen makes to a configuration. Each returns a new value:
// the configuration the change started from stays as it was, for the diff.

func withBond(c *v1.NetworkConfig, b *v1.Bond) *v1.NetworkConfig {
	c = proto.CloneOf(c)
	c.Bonds = slices.DeleteFunc(c.Bonds, func(x *v1.Bond) bool { return x.GetName() == b.GetName() })
	c.Bonds = append(c.Bonds, b)
	return c
}

func withVLAN(c *v1.NetworkConfig, v *v1.Vlan) *v1.NetworkConfig {
	c = proto.CloneOf(c)
	c.Vlans = slices.DeleteFunc(c.Vlans, func(x *v1.Vlan) bool { return x.GetName() == v.GetName() })
	c.Vlans = append(c.Vlans, v)
	return c
}

// withAddressing sets how name gets its addresses: DHCP (v4 and v6), or
// one static address and an optional gateway. Its MTU is kept.
func withAddressing(c *v1.NetworkConfig, name string, dhcp bool, addr, gw string) *v1.NetworkConfig {
	c = proto.CloneOf(c)
	ic := &v1.InterfaceConfig{Name: name}
	for _, x := range c.Interfaces {
		if x.GetName() == name {
			ic.Mtu = x.GetMtu()
		}
	}
	if dhcp {
		ic.Dhcp4, ic.Dhcp6 = true, true
	} else {
		ic.Addresses = []string{addr}
		if strings.Contains(gw, ":") {
			ic.Gateway6 = gw
		} else {
			ic.Gateway4 = gw
		}
	}
	c.Interfaces = slices.DeleteFunc(c.Interfaces, func(x *v1.InterfaceConfig) bool { return x.GetName() == name })
	c.Interfaces = append(c.Interfaces, ic)
	return c
}

// without drops what c says about name: the bond or VLAN of that name,
// the VLANs on it, and its addressing. Applied, the API deletes what a
// configuration stops naming, so a dropped bond's members are released.
func without(c *v1.NetworkConfig, name string) *v1.NetworkConfig {
	c = proto.CloneOf(c)
	c.Bonds = slices.DeleteFunc(c.Bonds, func(x *v1.Bond) bool { return x.GetName() == name })
	c.Vlans = slices.DeleteFunc(c.Vlans, func(x *v1.Vlan) bool { return x.GetName() == name || x.GetParent() == name })
	c.Interfaces = slices.DeleteFunc(c.Interfaces, func(x *v1.InterfaceConfig) bool { return x.GetName() == name })
	return c
}

// declares reports whether c names the link (as a virtual link or an
// addressed one).
func declares(c *v1.NetworkConfig, name string) bool {
	return virtualKind(c, name) != "" || slices.ContainsFunc(c.GetInterfaces(), func(x *v1.InterfaceConfig) bool { return x.GetName() == name })
}

// virtualKind is "bond", "vlan" or "bridge" when c declares name as one.
func virtualKind(c *v1.NetworkConfig, name string) string {
	switch {
	case slices.ContainsFunc(c.GetBonds(), func(x *v1.Bond) bool { return x.GetName() == name }):
		return "bond"
	case slices.ContainsFunc(c.GetVlans(), func(x *v1.Vlan) bool { return x.GetName() == name }):
		return "vlan"
	case slices.ContainsFunc(c.GetBridges(), func(x *v1.Bridge) bool { return x.GetName() == name }):
		return "bridge"
	}
	return ""
}

// masterIn is the bond or bridge c enslaves name to ("" when none).
func masterIn(c *v1.NetworkConfig, name string) string {
	for _, b := range c.GetBonds() {
		if slices.Contains(b.GetMembers(), name) {
			return b.GetName()
		}
	}
	for _, b := range c.GetBridges() {
		if slices.Contains(b.GetPorts(), name) {
			return b.GetName()
		}
	}
	return ""
}

func addressing(ic *v1.InterfaceConfig) string {
	var parts []string
	switch {
	case ic.GetDhcp4() && ic.GetDhcp6():
		parts = append(parts, "DHCP")
	case ic.GetDhcp4():
		parts = append(parts, "DHCPv4")
	case ic.GetDhcp6():
		parts = append(parts, "DHCPv6")
	}
	parts = append(parts, ic.GetAddresses()...)
	if g := ic.GetGateway4(); g != "" {
		parts = append(parts, "via "+g)
	}
	if g := ic.GetGateway6(); g != "" {
		parts = append(parts, "via "+g)
	}
	if len(parts) == 0 {
		return "no addresses"
	}
	return strings.Join(parts, " ")
}

// describe is c in one line per link, in the order the API applies them.
func describe(c *v1.NetworkConfig) []string {
	var out []string
	for _, b := range c.GetBonds() {
		mode := b.GetMode()
		if mode == "" {
			mode = "balance-rr"
		}
		out = append(out, fmt.Sprintf("bond %s  %s  members %s", b.GetName(), mode, strings.Join(b.GetMembers(), ", ")))
	}
	for _, v := range c.GetVlans() {
		out = append(out, fmt.Sprintf("vlan %s  id %d on %s", v.GetName(), v.GetId(), v.GetParent()))
	}
	for _, b := range c.GetBridges() {
		out = append(out, fmt.Sprintf("bridge %s  ports %s", b.GetName(), strings.Join(b.GetPorts(), ", ")))
	}
	for _, ic := range c.GetInterfaces() {
		out = append(out, fmt.Sprintf("addr %s  %s", ic.GetName(), addressing(ic)))
	}
	for _, r := range c.GetRoutes() {
		out = append(out, fmt.Sprintf("route %s via %s dev %s", r.GetDestination(), r.GetGateway(), r.GetInterface()))
	}
	if len(c.GetDnsServers()) > 0 {
		out = append(out, "dns "+strings.Join(c.GetDnsServers(), ", "))
	}
	return out
}

// diff is what going from a to b adds (+) and removes (-), line by line of
// describe.
func diff(a, b *v1.NetworkConfig) []string {
	da, db := describe(a), describe(b)
	var out []string
	for _, l := range da {
		if !slices.Contains(db, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range db {
		if !slices.Contains(da, l) {
			out = append(out, "+ "+l)
		}
	}
	return out
}
