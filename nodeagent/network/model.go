package network

import (
	"net/netip"
	"slices"
	"sort"

	"google.golang.org/protobuf/proto"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// Virtual link kinds the package creates and deletes. Nothing else is
// ever deleted: NICs, veths and taps belong to the hardware or to others.
const (
	kindBond   = "bond"
	kindBridge = "bridge"
	kindVLAN   = "vlan"
)

// DefaultMiimonMs is a bond's MII monitoring interval when none is given.
const DefaultMiimonMs = 100

// model indexes a (validated) configuration by link name.
type model struct {
	cfg     *v1.NetworkConfig
	kind    map[string]string // virtual links: name → kind
	master  map[string]string // bond members and bridge ports → their master
	bonds   map[string]*v1.Bond
	vlans   map[string]*v1.Vlan
	ifaces  map[string]*v1.InterfaceConfig
	parents map[string][]string // VLAN parent → its VLANs, sorted
}

func newModel(c *v1.NetworkConfig) model {
	if c == nil {
		c = &v1.NetworkConfig{}
	}
	m := model{
		cfg: c, kind: map[string]string{}, master: map[string]string{}, bonds: map[string]*v1.Bond{},
		vlans: map[string]*v1.Vlan{}, ifaces: map[string]*v1.InterfaceConfig{}, parents: map[string][]string{},
	}
	for _, b := range c.GetBonds() {
		m.kind[b.GetName()], m.bonds[b.GetName()] = kindBond, b
		for _, mem := range b.GetMembers() {
			m.master[mem] = b.GetName()
		}
	}
	for _, br := range c.GetBridges() {
		m.kind[br.GetName()] = kindBridge
		for _, p := range br.GetPorts() {
			m.master[p] = br.GetName()
		}
	}
	for _, v := range c.GetVlans() {
		m.kind[v.GetName()], m.vlans[v.GetName()] = kindVLAN, v
		m.parents[v.GetParent()] = append(m.parents[v.GetParent()], v.GetName())
	}
	for _, vs := range m.parents {
		sort.Strings(vs)
	}
	for _, i := range c.GetInterfaces() {
		m.ifaces[i.GetName()] = i
	}
	return m
}

// names is every link the configuration names, in any role, sorted.
func (m model) names() []string {
	set := map[string]bool{}
	for n := range m.kind {
		set[n] = true
	}
	for n := range m.master {
		set[n] = true
	}
	for n := range m.parents {
		set[n] = true
	}
	for n := range m.ifaces {
		set[n] = true
	}
	for _, r := range m.cfg.GetRoutes() {
		set[r.GetInterface()] = true
	}
	delete(set, "")
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (m model) miimon(b *v1.Bond) int {
	if b.GetMiimonMs() == 0 {
		return DefaultMiimonMs
	}
	return int(b.GetMiimonMs())
}

// prefixes returns an interface's static addresses (skipping any that do
// not parse: validation reports those).
func (m model) prefixes(name string) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range m.ifaces[name].GetAddresses() {
		if p, err := netip.ParsePrefix(a); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// routes is every route the configuration asks for: its routes and a
// default route per gateway, metrics as the kernel stores them.
func (m model) routes() []routeState {
	var out []routeState
	add := func(dst, gw, dev string, metric uint32) {
		p, err := netip.ParsePrefix(dst)
		if err != nil {
			return
		}
		r := routeState{Dst: p.Masked().String(), Dev: dev, Metric: int(metric)}
		if gw != "" {
			if a, err := netip.ParseAddr(gw); err == nil {
				r.Gw = a.String()
			}
		}
		// The kernel gives IPv6 routes without a metric 1024.
		if p.Addr().Is6() && r.Metric == 0 {
			r.Metric = 1024
		}
		out = append(out, r)
	}
	for _, i := range m.cfg.GetInterfaces() {
		if i.GetGateway4() != "" {
			add("0.0.0.0/0", i.GetGateway4(), i.GetName(), 0)
		}
		if i.GetGateway6() != "" {
			add("::/0", i.GetGateway6(), i.GetName(), 0)
		}
	}
	for _, r := range m.cfg.GetRoutes() {
		add(r.GetDestination(), r.GetGateway(), r.GetInterface(), r.GetMetric())
	}
	return out
}

// chain is name and the masters above it (a NIC, its bond, the bridge
// holding the bond).
func (m model) chain(name string) []string {
	out := []string{name}
	for n := name; m.master[n] != "" && len(out) < 4; n = m.master[n] {
		out = append(out, m.master[n])
	}
	return out
}

// touches reports whether going from prev to next changes anything on
// the link name or the links it is enslaved to: its role, the masters'
// definitions, addresses, gateways or routes.
func touches(prev, next model, name string) bool {
	if name == "" {
		return false
	}
	pc, nc := prev.chain(name), next.chain(name)
	if !slices.Equal(pc, nc) {
		return true
	}
	if !slices.Equal(prev.parents[name], next.parents[name]) {
		return true
	}
	for _, n := range nc {
		if !proto.Equal(prev.bonds[n], next.bonds[n]) || !proto.Equal(prev.ifaces[n], next.ifaces[n]) {
			return true
		}
		if !slices.Equal(routeKeys(prev.routes(), n), routeKeys(next.routes(), n)) {
			return true
		}
	}
	return false
}

func routeKeys(rs []routeState, dev string) []string {
	var out []string
	for _, r := range rs {
		if r.Dev == dev {
			out = append(out, r.key())
		}
	}
	sort.Strings(out)
	return out
}
