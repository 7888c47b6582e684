package network

import (
	"fmt"
	"net/netip"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

// MaxDNSServers is how many name servers a configuration may list (glibc
// uses three; networkd passes more on to resolved).
const MaxDNSServers = 8

// validate checks next against itself (InvalidArgument: the request is
// wrong whatever the node's state) and then against the live state and the
// configuration it replaces (FailedPrecondition: the node is not in a
// state that allows it). The first broken rule is returned, naming the
// field and the rule.
func validate(next *v1.NetworkConfig, cur liveState, prev model) error {
	if err := validateShape(next); err != nil {
		return err
	}
	return validateAgainst(newModel(next), cur, prev)
}

type addrUse struct {
	p     netip.Prefix
	field string
	link  string
}

func validateShape(c *v1.NetworkConfig) error {
	declared := map[string]string{} // virtual link name → field
	declare := func(field, name string) error {
		if err := rules.CheckInterfaceName(name); err != nil {
			return fault.Invalidf(field, "%v", err)
		}
		if name == "lo" {
			return fault.Invalidf(field, "the loopback interface is not configurable")
		}
		if f, dup := declared[name]; dup {
			return fault.Invalidf(field, "%s is already declared by %s: link names must be unique", name, f)
		}
		declared[name] = field
		return nil
	}
	linkName := func(field, name string) error {
		if err := rules.CheckInterfaceName(name); err != nil {
			return fault.Invalidf(field, "%v", err)
		}
		if name == "lo" {
			return fault.Invalidf(field, "the loopback interface is not configurable")
		}
		return nil
	}
	enslaved := map[string]string{} // member or port → field
	enslave := func(field, name, master string) error {
		if err := linkName(field, name); err != nil {
			return err
		}
		if name == master {
			return fault.Invalidf(field, "%s cannot be enslaved to itself", name)
		}
		if f, dup := enslaved[name]; dup {
			return fault.Invalidf(field, "%s is already enslaved by %s: a link has at most one master", name, f)
		}
		enslaved[name] = field
		return nil
	}
	for i, b := range c.GetBonds() {
		f := fmt.Sprintf("bonds[%d]", i)
		if err := declare(f+".name", b.GetName()); err != nil {
			return err
		}
		if err := rules.CheckBondMode(b.GetMode()); err != nil {
			return fault.Invalidf(f+".mode", "%v", err)
		}
		if b.GetMiimonMs() > rules.MaxMiimonMs {
			return fault.Invalidf(f+".miimon_ms", "%d is above %d ms", b.GetMiimonMs(), rules.MaxMiimonMs)
		}
		if len(b.GetMembers()) == 0 {
			return fault.Invalidf(f+".members", "a bond needs at least one member NIC")
		}
		for j, m := range b.GetMembers() {
			if err := enslave(fmt.Sprintf("%s.members[%d]", f, j), m, b.GetName()); err != nil {
				return err
			}
		}
	}
	for i, v := range c.GetVlans() {
		f := fmt.Sprintf("vlans[%d]", i)
		if err := declare(f+".name", v.GetName()); err != nil {
			return err
		}
		if err := rules.CheckVLANID(v.GetId()); err != nil {
			return fault.Invalidf(f+".id", "%v", err)
		}
		if err := linkName(f+".parent", v.GetParent()); err != nil {
			return err
		}
	}
	for i, br := range c.GetBridges() {
		f := fmt.Sprintf("bridges[%d]", i)
		if err := declare(f+".name", br.GetName()); err != nil {
			return err
		}
		for j, p := range br.GetPorts() {
			if err := enslave(fmt.Sprintf("%s.ports[%d]", f, j), p, br.GetName()); err != nil {
				return err
			}
		}
	}
	m := newModel(c)
	seenVLAN := map[string]string{}
	for i, v := range c.GetVlans() {
		f := fmt.Sprintf("vlans[%d]", i)
		if m.kind[v.GetParent()] == kindVLAN || m.kind[v.GetParent()] == kindBridge {
			return fault.Invalidf(f+".parent", "%s is a %s: a VLAN's parent is a NIC or a bond", v.GetParent(), m.kind[v.GetParent()])
		}
		if mst := m.master[v.GetParent()]; mst != "" && m.kind[mst] == kindBond {
			return fault.Invalidf(f+".parent", "%s is a member of bond %s: put the VLAN on the bond", v.GetParent(), mst)
		}
		key := fmt.Sprintf("%s.%d", v.GetParent(), v.GetId())
		if other, dup := seenVLAN[key]; dup {
			return fault.Invalidf(f+".id", "VLAN %d on %s is already %s", v.GetId(), v.GetParent(), other)
		}
		seenVLAN[key] = v.GetName()
	}
	for name, mst := range m.master {
		if m.kind[name] == kindBridge {
			return fault.Invalidf(enslaved[name], "%s is a bridge: bridges cannot be enslaved", name)
		}
		if m.kind[mst] == kindBond && m.kind[name] != "" {
			return fault.Invalidf(enslaved[name], "%s is a %s: bond members are NICs", name, m.kind[name])
		}
		if m.kind[mst] == kindBridge && m.master[mst] != "" {
			return fault.Invalidf(enslaved[name], "bridge %s is itself enslaved", mst)
		}
	}
	// A bond inside a bridge is fine; a NIC in a bond that is also a bridge
	// port is caught above (one master).
	var addrs []addrUse
	seenIface := map[string]bool{}
	gw4 := 0
	for i, ic := range c.GetInterfaces() {
		f := fmt.Sprintf("interfaces[%d]", i)
		if err := linkName(f+".name", ic.GetName()); err != nil {
			return err
		}
		if seenIface[ic.GetName()] {
			return fault.Invalidf(f+".name", "%s is listed twice", ic.GetName())
		}
		seenIface[ic.GetName()] = true
		if mst := m.master[ic.GetName()]; mst != "" && (len(ic.GetAddresses()) > 0 || ic.GetDhcp4() || ic.GetDhcp6() || ic.GetGateway4() != "" || ic.GetGateway6() != "") {
			return fault.Invalidf(f, "%s is enslaved to %s: configure addresses on %s instead", ic.GetName(), mst, mst)
		}
		if err := rules.CheckMTU(ic.GetMtu()); err != nil {
			return fault.Invalidf(f+".mtu", "%v", err)
		}
		for j, a := range ic.GetAddresses() {
			af := fmt.Sprintf("%s.addresses[%d]", f, j)
			p, err := netip.ParsePrefix(a)
			if err != nil {
				return fault.Invalidf(af, "%q is not an address in CIDR form (192.0.2.10/24, 2001:db8::10/64)", a)
			}
			ad := p.Addr()
			if ad.Zone() != "" || ad.IsUnspecified() || ad.IsLoopback() || ad.IsMulticast() || (ad.Is6() && ad.IsLinkLocalUnicast()) {
				return fault.Invalidf(af, "%s is not a host address (unspecified, loopback, multicast and IPv6 link-local are not)", a)
			}
			if ad.Is4() && p.Bits() < 31 && (ad == p.Masked().Addr() || ad == broadcast(p)) {
				return fault.Invalidf(af, "%s is the network's own or broadcast address", a)
			}
			for _, o := range addrs {
				if o.p.Overlaps(p) {
					return fault.Invalidf(af, "%s overlaps %s (%s on %s): addresses on different links must not share a subnet", a, o.p, o.field, o.link)
				}
			}
			addrs = append(addrs, addrUse{p: p, field: af, link: ic.GetName()})
		}
		if err := checkGateway(f+".gateway4", ic.GetGateway4(), true, ic.GetDhcp4(), m.prefixes(ic.GetName())); err != nil {
			return err
		}
		if err := checkGateway(f+".gateway6", ic.GetGateway6(), false, ic.GetDhcp6(), m.prefixes(ic.GetName())); err != nil {
			return err
		}
		if ic.GetGateway4() != "" {
			gw4++
			if gw4 > 1 {
				return fault.Invalidf(f+".gateway4", "only one interface may have an IPv4 default gateway")
			}
		}
	}
	seenRoute := map[string]string{}
	for i, r := range c.GetRoutes() {
		f := fmt.Sprintf("routes[%d]", i)
		p, err := netip.ParsePrefix(r.GetDestination())
		if err != nil {
			return fault.Invalidf(f+".destination", "%q is not a network in CIDR form (10.20.0.0/16)", r.GetDestination())
		}
		if p != p.Masked() {
			return fault.Invalidf(f+".destination", "%s has host bits set: the network is %s", p, p.Masked())
		}
		ic, ok := m.ifaces[r.GetInterface()]
		if !ok {
			return fault.Invalidf(f+".interface", "%q is not in interfaces: a route leaves through a configured link", r.GetInterface())
		}
		if r.GetGateway() != "" {
			if err := checkGateway(f+".gateway", r.GetGateway(), p.Addr().Is4(), dhcpFor(ic, p.Addr().Is4()), m.prefixes(ic.GetName())); err != nil {
				return err
			}
		}
	}
	for i, r := range m.routes() {
		if other, dup := seenRoute[r.key()]; dup {
			return fault.Invalidf("routes", "%s is given twice (%s)", r, other)
		}
		seenRoute[r.key()] = fmt.Sprint(i)
	}
	if len(c.GetDnsServers()) > MaxDNSServers {
		return fault.Invalidf("dns_servers", "%d servers; at most %d", len(c.GetDnsServers()), MaxDNSServers)
	}
	for i, d := range c.GetDnsServers() {
		a, err := netip.ParseAddr(d)
		if err != nil || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
			return fault.Invalidf(fmt.Sprintf("dns_servers[%d]", i), "%q is not a name server's IP address", d)
		}
	}
	return nil
}

func dhcpFor(ic *v1.InterfaceConfig, v4 bool) bool {
	if v4 {
		return ic.GetDhcp4()
	}
	return ic.GetDhcp6()
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// checkGateway: a gateway of the right family, reachable through one of
// the link's subnets (or whatever DHCP gives it).
func checkGateway(field, gw string, v4, dhcp bool, on []netip.Prefix) error {
	if gw == "" {
		return nil
	}
	a, err := netip.ParseAddr(gw)
	if err != nil || a.Zone() != "" {
		return fault.Invalidf(field, "%q is not an IP address", gw)
	}
	if a.Is4() != v4 {
		fam := map[bool]string{true: "IPv4", false: "IPv6"}[v4]
		return fault.Invalidf(field, "%s is not an %s address", gw, fam)
	}
	if a.Is6() && a.IsLinkLocalUnicast() {
		return nil // reachable on any IPv6 link
	}
	for _, p := range on {
		if p.Masked().Contains(a) {
			if p.Addr() == a {
				return fault.Invalidf(field, "%s is the link's own address", gw)
			}
			return nil
		}
	}
	if dhcp {
		return nil
	}
	return fault.Invalidf(field, "%s is in none of the link's subnets, so the kernel could not reach it", gw)
}

// validateAgainst checks a configuration against the live links and the
// configuration it replaces.
func validateAgainst(next model, cur liveState, prev model) error {
	exists := func(name string) bool { _, ok := cur.links[name]; return ok || next.kind[name] != "" }
	unknown := func(field, name string) error {
		return fault.Invalidf(field, "no network interface %q on this node (and the configuration does not declare it)", name)
	}
	c := next.cfg
	for i, b := range c.GetBonds() {
		for j, mem := range b.GetMembers() {
			if err := checkSlave(fmt.Sprintf("bonds[%d].members[%d]", i, j), mem, b.GetName(), cur, prev, exists, unknown); err != nil {
				return err
			}
		}
	}
	for i, br := range c.GetBridges() {
		for j, p := range br.GetPorts() {
			if err := checkSlave(fmt.Sprintf("bridges[%d].ports[%d]", i, j), p, br.GetName(), cur, prev, exists, unknown); err != nil {
				return err
			}
		}
	}
	for i, v := range c.GetVlans() {
		if !exists(v.GetParent()) {
			return unknown(fmt.Sprintf("vlans[%d].parent", i), v.GetParent())
		}
	}
	for i, ic := range c.GetInterfaces() {
		if !exists(ic.GetName()) {
			return unknown(fmt.Sprintf("interfaces[%d].name", i), ic.GetName())
		}
	}
	for name, kind := range next.kind {
		if l, ok := cur.links[name]; ok && l.Kind != kind {
			return fault.Errorf(fault.FailedPrecondition, "%s: a %s exists with that name; it is not a %s", name, l.Kind, kind)
		}
	}
	// Addresses must not overlap those of links this change leaves alone.
	touched := map[string]bool{}
	for _, n := range append(next.names(), prev.names()...) {
		touched[n] = true
	}
	for i, ic := range c.GetInterfaces() {
		for j, p := range next.prefixes(ic.GetName()) {
			for _, l := range cur.links {
				if touched[l.Name] || l.Name == "lo" {
					continue
				}
				for _, a := range l.Addrs {
					o, err := netip.ParsePrefix(a)
					if err == nil && o.Overlaps(p) {
						return fault.Errorf(fault.FailedPrecondition, "interfaces[%d].addresses[%d]: %s overlaps %s on %s, which this configuration does not manage", i, j, p, o, l.Name)
					}
				}
			}
		}
	}
	return nil
}

// checkSlave: a member or port exists and is not enslaved elsewhere (to a
// master this configuration or the previous one does not manage).
func checkSlave(field, name, master string, cur liveState, prev model, exists func(string) bool, unknown func(string, string) error) error {
	if !exists(name) {
		return unknown(field, name)
	}
	l, ok := cur.links[name]
	if !ok || l.Master == "" || l.Master == master || prev.kind[l.Master] != "" {
		return nil
	}
	return fault.Errorf(fault.FailedPrecondition, "%s: %s is already enslaved to %s, which DebVisor does not manage: release it first", field, name, l.Master)
}
