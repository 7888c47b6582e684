package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// linkState is what the package reads, and restores, of one link. It is
// also the form a snapshot takes on disk (the pending change's file).
type linkState struct {
	Name   string `json:"name"`
	Exists bool   `json:"exists"`
	// Kind is netlink's type: "device", "veth", "bridge", "bond", "vlan"...
	Kind   string `json:"kind,omitempty"`
	Master string `json:"master,omitempty"`
	Up     bool   `json:"up,omitempty"`
	MTU    int    `json:"mtu,omitempty"`
	// Addrs are the static (permanent, not link-local IPv6) addresses in
	// canonical CIDR form, sorted: the ones DebVisor manages. DHCP and
	// SLAAC addresses belong to their clients.
	Addrs    []string `json:"addrs,omitempty"`
	BondMode string   `json:"bond_mode,omitempty"`
	Miimon   int      `json:"miimon,omitempty"`
	Parent   string   `json:"parent,omitempty"`
	VLANID   int      `json:"vlan_id,omitempty"`
}

// routeState is a static route of the main table.
type routeState struct {
	Dst    string `json:"dst"`
	Gw     string `json:"gw,omitempty"`
	Dev    string `json:"dev"`
	Metric int    `json:"metric,omitempty"`
}

func (r routeState) key() string {
	return r.Dst + "|" + r.Gw + "|" + r.Dev + "|" + strconv.Itoa(r.Metric)
}

func (r routeState) String() string {
	s := r.Dst
	if r.Gw != "" {
		s += " via " + r.Gw
	}
	s += " dev " + r.Dev
	if r.Metric != 0 {
		s += " metric " + strconv.Itoa(r.Metric)
	}
	return s
}

// liveState is every link of the namespace and its static routes.
type liveState struct {
	links  map[string]linkState
	routes []routeState
}

// snapshot is the part of the live state a change may touch, kept until
// the change is confirmed so that it can be restored exactly.
type snapshot struct {
	Links  []linkState  `json:"links"`
	Routes []routeState `json:"routes"`
}

// snapshotOf keeps the named links (absent ones as Exists=false) and the
// static routes through them.
func (s liveState) snapshotOf(names []string) snapshot {
	var snap snapshot
	in := map[string]bool{}
	for _, n := range names {
		in[n] = true
		l, ok := s.links[n]
		if !ok {
			l = linkState{Name: n}
		}
		snap.Links = append(snap.Links, l)
	}
	for _, r := range s.routes {
		if in[r.Dev] {
			snap.Routes = append(snap.Routes, r)
		}
	}
	return snap
}

// Protocols of routes DebVisor treats as static: "ip route add" makes
// boot, networkd and this package make static.
func staticProto(p netlink.RouteProtocol) bool {
	return p == unix.RTPROT_BOOT || p == unix.RTPROT_STATIC
}

// retry repeats a dump the kernel interrupted (a link or address changed
// while it was read).
func retry[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range 5 {
		if v, err = f(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

func ipOf(s string) net.IP {
	if s == "" {
		return nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return nil
	}
	return net.IP(a.AsSlice())
}

// staticAddr reports whether an address is one DebVisor manages.
func staticAddr(a netlink.Addr) bool {
	p, ok := prefixOf(a.IPNet)
	if !ok || a.Flags&unix.IFA_F_PERMANENT == 0 {
		return false
	}
	return !p.Addr().Is6() || !p.Addr().IsLinkLocalUnicast()
}

// readLive reads every link, its static addresses and the static routes.
func readLive(h *netlink.Handle) (liveState, error) {
	links, err := retry(h.LinkList)
	if err != nil {
		return liveState{}, fmt.Errorf("list links: %w", err)
	}
	byIndex := map[int]string{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	st := liveState{links: map[string]linkState{}}
	for _, l := range links {
		a := l.Attrs()
		ls := linkState{
			Name: a.Name, Exists: true, Kind: l.Type(), Master: byIndex[a.MasterIndex],
			Up: a.Flags&net.FlagUp != 0, MTU: a.MTU,
		}
		switch v := l.(type) {
		case *netlink.Bond:
			ls.BondMode, ls.Miimon = v.Mode.String(), v.Miimon
		case *netlink.Vlan:
			ls.Parent, ls.VLANID = byIndex[a.ParentIndex], v.VlanId
		}
		addrs, err := retry(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_ALL) })
		if err != nil {
			return liveState{}, fmt.Errorf("list addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			if staticAddr(ad) {
				p, _ := prefixOf(ad.IPNet)
				ls.Addrs = append(ls.Addrs, p.String())
			}
		}
		sort.Strings(ls.Addrs)
		st.links[a.Name] = ls
	}
	routes, err := listRoutes(h)
	if err != nil {
		return liveState{}, err
	}
	for _, r := range routes {
		if !staticProto(r.Protocol) || r.LinkIndex == 0 || len(r.MultiPath) > 0 {
			continue
		}
		st.routes = append(st.routes, routeFrom(r, byIndex))
	}
	return st, nil
}

func listRoutes(h *netlink.Handle) ([]netlink.Route, error) {
	routes, err := retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	return slices.DeleteFunc(routes, func(r netlink.Route) bool { return r.Type != unix.RTN_UNICAST }), nil
}

func routeFrom(r netlink.Route, byIndex map[int]string) routeState {
	rs := routeState{Dev: byIndex[r.LinkIndex], Metric: r.Priority}
	if p, ok := prefixOf(r.Dst); ok {
		rs.Dst = p.Masked().String()
	} else if r.Family == netlink.FAMILY_V6 {
		rs.Dst = "::/0"
	} else {
		rs.Dst = "0.0.0.0/0"
	}
	if a, ok := netip.AddrFromSlice(r.Gw); ok {
		rs.Gw = a.Unmap().String()
	}
	return rs
}

var protoNames = map[netlink.RouteProtocol]string{
	unix.RTPROT_KERNEL: "kernel", unix.RTPROT_BOOT: "boot", unix.RTPROT_STATIC: "static",
	unix.RTPROT_RA: "ra", unix.RTPROT_DHCP: "dhcp",
}

// liveView is the namespace as GetNetwork reports it: every link and
// address (dynamic ones too) and every unicast route of the main table.
func liveView(h *netlink.Handle) ([]*v1.Link, []*v1.LiveRoute, error) {
	links, err := retry(h.LinkList)
	if err != nil {
		return nil, nil, fmt.Errorf("list links: %w", err)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
	byIndex := map[int]string{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	var out []*v1.Link
	for _, l := range links {
		a := l.Attrs()
		vl := &v1.Link{
			Name: a.Name, Kind: l.Type(), Up: a.Flags&net.FlagUp != 0, OperState: a.OperState.String(),
			Carrier: a.RawFlags&unix.IFF_LOWER_UP != 0, Mac: a.HardwareAddr.String(), Mtu: uint32(max(a.MTU, 0)),
			Master: byIndex[a.MasterIndex],
		}
		addrs, err := retry(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_ALL) })
		if err != nil {
			return nil, nil, fmt.Errorf("list addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			if p, ok := prefixOf(ad.IPNet); ok {
				vl.Addresses = append(vl.Addresses, p.String())
			}
		}
		out = append(out, vl)
	}
	routes, err := listRoutes(h)
	if err != nil {
		return nil, nil, err
	}
	var rs []*v1.LiveRoute
	for _, r := range routes {
		s := routeFrom(r, byIndex)
		proto, ok := protoNames[r.Protocol]
		if !ok {
			proto = strconv.Itoa(int(r.Protocol))
		}
		rs = append(rs, &v1.LiveRoute{Destination: s.Dst, Gateway: s.Gw, Interface: s.Dev, Metric: uint32(max(s.Metric, 0)), Protocol: proto})
	}
	return out, rs, nil
}

// DefaultRouteInterface names the link of the first IPv4 (else IPv6)
// default route: the management interface when none is configured.
// A nil h reads the agent's own namespace.
func DefaultRouteInterface(h *netlink.Handle) (string, error) {
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(); err != nil {
			return "", err
		}
		defer h.Close()
	}
	links, err := retry(h.LinkList)
	if err != nil {
		return "", fmt.Errorf("list links: %w", err)
	}
	byIndex := map[int]string{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	routes, err := listRoutes(h)
	if err != nil {
		return "", err
	}
	var v6 string
	for _, r := range routes {
		s := routeFrom(r, byIndex)
		switch {
		case s.Dst == "0.0.0.0/0" && s.Dev != "":
			return s.Dev, nil
		case s.Dst == "::/0" && s.Dev != "" && v6 == "":
			v6 = s.Dev
		}
	}
	return v6, nil
}
