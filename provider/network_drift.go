package provider

import (
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/proto"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// The kernel's kinds of the virtual links a configuration declares.
const (
	linkBond   = "bond"
	linkVLAN   = "vlan"
	linkBridge = "bridge"
)

// liveDrift compares the node's persisted configuration with its live links and routes, and
// returns the configuration minus what is not live (a bridge someone deleted, an address taken
// away, a port released, a route gone, another MTU), with one line per difference. Read puts that
// into the state, so the plan shows the missing parts being added back and the apply (the same
// configuration again) repairs the node.
func liveDrift(st *v1.NetworkState) (*v1.NetworkConfig, []string) {
	c := proto.CloneOf(st.GetDesired())
	if c == nil {
		return &v1.NetworkConfig{}, nil
	}
	links := map[string]*v1.Link{}
	for _, l := range st.GetLinks() {
		links[l.GetName()] = l
	}
	var drift []string
	is := func(name, kind string) bool { l := links[name]; return l != nil && l.GetKind() == kind }
	enslaved := func(master string, slaves []string) []string {
		var keep []string
		for _, s := range slaves {
			if links[s].GetMaster() == master {
				keep = append(keep, s)
			} else {
				drift = append(drift, fmt.Sprintf("%s is not enslaved to %s", s, master))
			}
		}
		return keep
	}
	var bonds []*v1.Bond
	for _, b := range c.GetBonds() {
		if !is(b.GetName(), linkBond) {
			drift = append(drift, "bond "+b.GetName()+" does not exist")
			continue
		}
		b.Members = enslaved(b.GetName(), b.GetMembers())
		bonds = append(bonds, b)
	}
	var vlans []*v1.Vlan
	for _, v := range c.GetVlans() {
		if !is(v.GetName(), linkVLAN) {
			drift = append(drift, "VLAN "+v.GetName()+" does not exist")
			continue
		}
		vlans = append(vlans, v)
	}
	var bridges []*v1.Bridge
	for _, b := range c.GetBridges() {
		if !is(b.GetName(), linkBridge) {
			drift = append(drift, "bridge "+b.GetName()+" does not exist")
			continue
		}
		b.Ports = enslaved(b.GetName(), b.GetPorts())
		bridges = append(bridges, b)
	}
	c.Bonds, c.Vlans, c.Bridges = bonds, vlans, bridges
	for _, ic := range c.GetInterfaces() {
		l := links[ic.GetName()]
		if l == nil {
			// A missing virtual link is reported above; a missing NIC cannot be repaired.
			continue
		}
		live := map[netip.Prefix]bool{}
		for _, a := range l.GetAddresses() {
			if p, err := netip.ParsePrefix(a); err == nil {
				live[p] = true
			}
		}
		var keep []string
		for _, a := range ic.GetAddresses() {
			if p, err := netip.ParsePrefix(a); err == nil && !live[p] {
				drift = append(drift, fmt.Sprintf("%s does not have address %s", ic.GetName(), a))
				continue
			}
			keep = append(keep, a)
		}
		ic.Addresses = keep
		for _, gw := range []*string{&ic.Gateway4, &ic.Gateway6} {
			if *gw == "" {
				continue
			}
			dflt := "0.0.0.0/0"
			if a, err := netip.ParseAddr(*gw); err == nil && a.Is6() {
				dflt = "::/0"
			}
			if !hasLiveRoute(st.GetRoutes(), &v1.Route{Destination: dflt, Gateway: *gw, Interface: ic.GetName()}) {
				drift = append(drift, fmt.Sprintf("no default route via %s on %s", *gw, ic.GetName()))
				*gw = ""
			}
		}
		if ic.GetMtu() != 0 && l.GetMtu() != ic.GetMtu() {
			drift = append(drift, fmt.Sprintf("%s has MTU %d, not %d", ic.GetName(), l.GetMtu(), ic.GetMtu()))
			ic.Mtu = l.GetMtu()
		}
	}
	var routes []*v1.Route
	for _, r := range c.GetRoutes() {
		if hasLiveRoute(st.GetRoutes(), r) {
			routes = append(routes, r)
		} else {
			drift = append(drift, fmt.Sprintf("no route to %s via %q on %s", r.GetDestination(), r.GetGateway(), r.GetInterface()))
		}
	}
	c.Routes = routes
	return c, drift
}

// hasLiveRoute: the kernel routes r's destination through r's gateway and link (the metric is
// not compared: the kernel's default differs between IPv4 and IPv6).
func hasLiveRoute(live []*v1.LiveRoute, r *v1.Route) bool {
	dst, err := netip.ParsePrefix(r.GetDestination())
	if err != nil {
		return true // not ours to judge
	}
	gw, _ := netip.ParseAddr(r.GetGateway())
	for _, l := range live {
		ld, err := netip.ParsePrefix(l.GetDestination())
		if err != nil || ld != dst || l.GetInterface() != r.GetInterface() {
			continue
		}
		lg, _ := netip.ParseAddr(l.GetGateway())
		if lg == gw {
			return true
		}
	}
	return false
}
