package network

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkTarget is what one link should look like after a plan runs. Nil
// pointers and zero values leave that aspect as it is.
type linkTarget struct {
	name   string
	absent bool
	// kind is set for virtual links (bond, bridge, vlan), which are
	// created when missing and recreated when their definition differs.
	kind     string
	bondMode string
	miimon   int
	parent   string
	vlanID   int

	master      *string
	up          *bool
	mtu         int
	manageAddrs bool
	addrs       []string // canonical CIDR
}

// target is the state a plan leads to: links by name, and the exact set
// of static routes through routeDevs.
type target struct {
	links     map[string]*linkTarget
	routeDevs map[string]bool
	routes    []routeState
}

func ptr[T any](v T) *T { return &v }

func (t *target) link(name string) *linkTarget {
	if l, ok := t.links[name]; ok {
		return l
	}
	l := &linkTarget{name: name}
	t.links[name] = l
	return l
}

// desiredTarget is the target of applying next over prev on cur: what next
// names is configured; what prev named and next does not is undone.
func desiredTarget(next, prev model, cur liveState) target {
	t := target{links: map[string]*linkTarget{}, routeDevs: map[string]bool{}}
	for _, n := range next.names() {
		l := t.link(n)
		l.up = ptr(true)
		l.master = ptr(next.master[n])
		switch next.kind[n] {
		case kindBond:
			b := next.bonds[n]
			l.kind, l.bondMode, l.miimon = kindBond, b.GetMode(), next.miimon(b)
		case kindBridge:
			l.kind = kindBridge
		case kindVLAN:
			v := next.vlans[n]
			l.kind, l.parent, l.vlanID = kindVLAN, v.GetParent(), int(v.GetId())
		}
		if ic, ok := next.ifaces[n]; ok {
			l.mtu = int(ic.GetMtu())
			l.manageAddrs = true
			for _, p := range next.prefixes(n) {
				l.addrs = append(l.addrs, p.String())
			}
		} else if next.master[n] != "" {
			l.manageAddrs = true // enslaved links carry no addresses
		} else if _, had := prev.ifaces[n]; had {
			l.manageAddrs, l.addrs = true, without(cur.links[n].Addrs, prefixStrings(prev.prefixes(n)))
		}
		t.routeDevs[n] = true
	}
	for _, n := range prev.names() {
		if _, still := t.links[n]; still {
			continue
		}
		l := t.link(n)
		if prev.kind[n] != "" {
			l.absent = true
			continue
		}
		if prev.master[n] != "" {
			l.master = ptr("")
		}
		if _, had := prev.ifaces[n]; had {
			l.manageAddrs, l.addrs = true, without(cur.links[n].Addrs, prefixStrings(prev.prefixes(n)))
		}
		t.routeDevs[n] = true
	}
	prevRoutes := map[string]bool{}
	for _, r := range prev.routes() {
		prevRoutes[r.key()] = true
	}
	for _, r := range cur.routes {
		if t.routeDevs[r.Dev] && !prevRoutes[r.key()] {
			t.routes = append(t.routes, r)
		}
	}
	t.routes = append(t.routes, next.routes()...)
	return t
}

// restoreTarget leads back to a snapshot.
func restoreTarget(s snapshot) target {
	t := target{links: map[string]*linkTarget{}, routeDevs: map[string]bool{}}
	for _, ls := range s.Links {
		l := t.link(ls.Name)
		t.routeDevs[ls.Name] = true
		if !ls.Exists {
			l.absent = true
			continue
		}
		switch ls.Kind {
		case kindBond, kindBridge, kindVLAN:
			l.kind = ls.Kind
		}
		l.bondMode, l.miimon, l.parent, l.vlanID = ls.BondMode, ls.Miimon, ls.Parent, ls.VLANID
		l.master, l.up, l.mtu = ptr(ls.Master), ptr(ls.Up), ls.MTU
		l.manageAddrs, l.addrs = true, ls.Addrs
	}
	t.routes = s.Routes
	return t
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func without(have, drop []string) []string {
	var out []string
	for _, a := range have {
		if !slices.Contains(drop, a) {
			out = append(out, a)
		}
	}
	return out
}

// step is one change to the namespace, described for people.
type step struct {
	desc string
	do   func(h *netlink.Handle) error
}

func descs(steps []step) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.desc
	}
	return out
}

// plan orders the steps from cur to t: route removals, link deletions and
// (re)creations, releases, enslavements, MTUs, address removals then
// additions, links up or down, route additions. Removing before adding lets
// an address or route move between links.
func plan(cur liveState, t target) []step {
	var steps []step
	add := func(desc string, do func(h *netlink.Handle) error) { steps = append(steps, step{desc, do}) }
	names := make([]string, 0, len(t.links))
	for n := range t.links {
		names = append(names, n)
	}
	sort.Strings(names)

	// Links that go away, and virtual links whose definition changed
	// (recreated: a bond's mode cannot change while it has members).
	gone := map[string]bool{}
	var create []*linkTarget
	for _, n := range names {
		l, c := t.links[n], cur.links[n]
		switch {
		case l.absent && c.Exists && virtual(c.Kind):
			gone[n] = true
			add(fmt.Sprintf("delete %s %s", c.Kind, n), delLink(n))
		case l.absent:
		case l.kind != "" && !c.Exists:
			create = append(create, l)
		case l.kind != "" && differs(l, c):
			gone[n] = true
			add(fmt.Sprintf("delete %s %s (its definition changes)", c.Kind, n), delLink(n))
			create = append(create, l)
		}
	}
	// A VLAN dies with its parent.
	for n, c := range cur.links {
		if c.Kind == kindVLAN && gone[c.Parent] && !gone[n] {
			gone[n] = true
			if l, ok := t.links[n]; ok && !l.absent && l.kind != "" {
				create = append(create, l)
			}
		}
	}
	exists := func(n string) bool {
		return (cur.links[n].Exists && !gone[n]) || slices.ContainsFunc(create, func(l *linkTarget) bool { return l.name == n })
	}
	// Routes first: those through links that go away vanish on their own.
	want := map[string]bool{}
	for _, r := range t.routes {
		want[r.key()] = true
	}
	have := map[string]bool{}
	for _, r := range cur.routes {
		if !t.routeDevs[r.Dev] || gone[r.Dev] {
			continue
		}
		have[r.key()] = true
		if !want[r.key()] {
			steps = slices.Insert(steps, 0, step{"remove route " + r.String(), delRoute(r)})
		}
	}
	sort.SliceStable(create, func(i, j int) bool { return create[i].kind != kindVLAN && create[j].kind == kindVLAN })
	for _, l := range create {
		add(createDesc(l), addLink(l))
	}
	// Masters: everything released first, then enslaved.
	masterOf := func(n string) string {
		if !exists(n) || gone[n] || !cur.links[n].Exists || gone[cur.links[n].Master] {
			return ""
		}
		return cur.links[n].Master
	}
	var enslave []string
	for _, n := range names {
		l := t.links[n]
		if l.absent || l.master == nil || !exists(n) {
			continue
		}
		if m := masterOf(n); m != *l.master {
			if m != "" {
				add(fmt.Sprintf("release %s from %s", n, m), noMaster(n))
			}
			if *l.master != "" {
				enslave = append(enslave, n)
			}
		}
	}
	for _, n := range enslave {
		m := *t.links[n].master
		bond := t.links[m] != nil && t.links[m].kind == kindBond || cur.links[m].Kind == kindBond
		add(fmt.Sprintf("enslave %s to %s", n, m), setMaster(n, m, bond))
	}
	for _, n := range names {
		l := t.links[n]
		if l.absent || l.mtu == 0 || !exists(n) {
			continue
		}
		if fresh(n, cur, gone) || cur.links[n].MTU != l.mtu {
			add(fmt.Sprintf("set MTU of %s to %d", n, l.mtu), setMTU(n, l.mtu))
		}
	}
	var adds []step
	for _, n := range names {
		l := t.links[n]
		if l.absent || !l.manageAddrs || !exists(n) {
			continue
		}
		var now []string
		if !fresh(n, cur, gone) {
			now = cur.links[n].Addrs
		}
		for _, a := range now {
			if !slices.Contains(l.addrs, a) {
				add(fmt.Sprintf("remove address %s from %s", a, n), addrOp(n, a, false))
			}
		}
		for _, a := range l.addrs {
			if !slices.Contains(now, a) {
				adds = append(adds, step{fmt.Sprintf("add address %s to %s", a, n), addrOp(n, a, true)})
			}
		}
	}
	steps = append(steps, adds...)
	for _, n := range names {
		l := t.links[n]
		if l.absent || l.up == nil || !exists(n) {
			continue
		}
		isUp := !fresh(n, cur, gone) && cur.links[n].Up
		if slices.Contains(enslave, n) && t.links[*l.master] != nil && t.links[*l.master].kind == kindBond {
			isUp = true // enslaving to a bond brings the member up
		}
		if *l.up != isUp {
			add(fmt.Sprintf("bring %s %s", n, map[bool]string{true: "up", false: "down"}[*l.up]), setUp(n, *l.up))
		}
	}
	for _, r := range t.routes {
		if !have[r.key()] {
			add("add route "+r.String(), addRoute(r))
			have[r.key()] = true
		}
	}
	return steps
}

func virtual(kind string) bool { return kind == kindBond || kind == kindBridge || kind == kindVLAN }

func fresh(n string, cur liveState, gone map[string]bool) bool {
	return !cur.links[n].Exists || gone[n]
}

func differs(l *linkTarget, c linkState) bool {
	switch {
	case l.kind != c.Kind:
		return true
	case l.kind == kindBond:
		return l.bondMode != c.BondMode || (l.miimon != 0 && l.miimon != c.Miimon)
	case l.kind == kindVLAN:
		return l.parent != c.Parent || l.vlanID != c.VLANID
	}
	return false
}

func createDesc(l *linkTarget) string {
	switch l.kind {
	case kindBond:
		return fmt.Sprintf("create bond %s (%s, miimon %d ms)", l.name, l.bondMode, l.miimon)
	case kindVLAN:
		return fmt.Sprintf("create vlan %s (id %d on %s)", l.name, l.vlanID, l.parent)
	}
	return "create bridge " + l.name
}

func byName(h *netlink.Handle, n string) (netlink.Link, error) {
	l, err := h.LinkByName(n)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", n, err)
	}
	return l, nil
}

func delLink(n string) func(*netlink.Handle) error {
	return func(h *netlink.Handle) error {
		l, err := byName(h, n)
		if err != nil {
			return err
		}
		if !virtual(l.Type()) {
			return fmt.Errorf("refusing to delete %s: it is a %s, not a link DebVisor creates", n, l.Type())
		}
		return h.LinkDel(l)
	}
}

func addLink(t *linkTarget) func(*netlink.Handle) error {
	return func(h *netlink.Handle) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = t.name
		var l netlink.Link
		switch t.kind {
		case kindBond:
			b := netlink.NewLinkBond(attrs)
			b.Mode = netlink.StringToBondMode(t.bondMode)
			if t.miimon != 0 {
				b.Miimon = t.miimon
			}
			l = b
		case kindVLAN:
			p, err := byName(h, t.parent)
			if err != nil {
				return err
			}
			attrs.ParentIndex = p.Attrs().Index
			l = &netlink.Vlan{LinkAttrs: attrs, VlanId: t.vlanID, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}
		case kindBridge:
			l = &netlink.Bridge{LinkAttrs: attrs}
		default:
			return fmt.Errorf("cannot create %s: it is not a bond, bridge or vlan", t.name)
		}
		err := h.LinkAdd(l)
		if !errors.Is(err, unix.EEXIST) {
			return err
		}
		// Made meanwhile by someone else (networkd from the files, or
		// the bonding module's own bond0): the same link is adopted,
		// anything else is in the way.
		cur, rerr := readLive(h)
		if rerr != nil {
			return fmt.Errorf("%w (and reading it: %w)", err, rerr)
		}
		if c := cur.links[t.name]; c.Exists && !differs(t, c) {
			return nil
		}
		return fmt.Errorf("%s exists and is not the %s asked for: %w", t.name, t.kind, err)
	}
}

func noMaster(n string) func(*netlink.Handle) error {
	return func(h *netlink.Handle) error {
		l, err := byName(h, n)
		if err != nil {
			return err
		}
		return h.LinkSetNoMaster(l)
	}
}

func setMaster(n, m string, bond bool) func(*netlink.Handle) error {
	return func(h *netlink.Handle) error {
		l, err := byName(h, n)
		if err != nil {
			return err
		}
		ml, err := byName(h, m)
		if err != nil {
			return err
		}
		if bond {
			// The kernel enslaves only links that are down.
			if err := h.LinkSetDown(l); err != nil {
				return err
			}
		}
		if err := h.LinkSetMaster(l, ml); err != nil {
			return err
		}
		if bond {
			return h.LinkSetUp(l)
		}
		return nil
	}
}

func setMTU(n string, mtu int) func(*netlink.Handle) error {
	return func(h *netlink.Handle) error {
		l, err := byName(h, n)
		if err != nil {
			return err
		}
		return h.LinkSetMTU(l, mtu)
	}
}

func setUp(n string, up bool) func(*netlink.Handle) error {
	return func(h *netlink.Handle) error {
		l, err := byName(h, n)
		if err != nil {
			return err
		}
		if up {
			return h.LinkSetUp(l)
		}
		return h.LinkSetDown(l)
	}
}

func addrOp(n, cidr string, add bool) func(*netlink.Handle) error {
	return func(h *netlink.Handle) error {
		l, err := byName(h, n)
		if err != nil {
			return err
		}
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			return err
		}
		a := &netlink.Addr{IPNet: ipNet(p)}
		if add {
			return h.AddrAdd(l, a)
		}
		return h.AddrDel(l, a)
	}
}

func routeOf(h *netlink.Handle, r routeState) (*netlink.Route, error) {
	l, err := byName(h, r.Dev)
	if err != nil {
		return nil, err
	}
	p, err := netip.ParsePrefix(r.Dst)
	if err != nil {
		return nil, err
	}
	nr := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(p), Gw: ipOf(r.Gw), Priority: r.Metric, Table: unix.RT_TABLE_MAIN}
	return nr, nil
}

func addRoute(r routeState) func(*netlink.Handle) error {
	return func(h *netlink.Handle) error {
		nr, err := routeOf(h, r)
		if err != nil {
			return err
		}
		nr.Protocol = unix.RTPROT_STATIC
		if nr.Gw == nil {
			nr.Scope = netlink.SCOPE_LINK
		}
		if err := h.RouteAdd(nr); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		return nil
	}
}

func delRoute(r routeState) func(*netlink.Handle) error {
	return func(h *netlink.Handle) error {
		nr, err := routeOf(h, r)
		if err != nil {
			return err
		}
		nr.Scope = netlink.SCOPE_NOWHERE
		if err := h.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
		return nil
	}
}

// run executes steps in order. Applying stops at the first failure;
// restoring (bestEffort) goes on and reports every failure.
func run(h *netlink.Handle, steps []step, bestEffort bool) error {
	var errs []error
	for _, s := range steps {
		if err := s.do(h); err != nil {
			err = fmt.Errorf("%s: %w", s.desc, err)
			if !bestEffort {
				return err
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
