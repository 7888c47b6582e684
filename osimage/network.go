package osimage

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/debvisor/debvisor/api/rules"
)

// Where a preseed's network section goes: systemd-networkd's directory in
// the /etc overlay, and the agent's network state directory (its default
// state_dir plus "network"), where the agent reads the configuration as
// the desired one it manages from then on.
const (
	NetworkdDir     = "/etc/systemd/network"
	NetworkStateDir = "/var/lib/debvisor/network"
)

// PreseedNetwork is a preseed's "network" section: the node's host network
// in the schema of the agent's NetworkService (api/debvisor/v1
// NetworkConfig, with the proto field names as keys), so that a
// configuration can move between a preseed, `dvctl network apply` and the
// debvisor_network Terraform resource unchanged. Validate checks what the
// rules package knows; firstboot checks the rest with the agent's own
// validation before it writes anything.
type PreseedNetwork struct {
	Bonds      []PreseedBond      `yaml:"bonds,omitempty"`
	Vlans      []PreseedVlan      `yaml:"vlans,omitempty"`
	Bridges    []PreseedBridge    `yaml:"bridges,omitempty"`
	Interfaces []PreseedInterface `yaml:"interfaces,omitempty"`
	Routes     []PreseedRoute     `yaml:"routes,omitempty"`
	DNSServers []string           `yaml:"dns_servers,omitempty"`
}

// PreseedBond is NetworkConfig's Bond.
type PreseedBond struct {
	Name     string   `yaml:"name"`
	Mode     string   `yaml:"mode"`
	Members  []string `yaml:"members"`
	MiimonMs uint32   `yaml:"miimon_ms,omitempty"`
}

// PreseedVlan is NetworkConfig's Vlan.
type PreseedVlan struct {
	Name   string `yaml:"name"`
	Parent string `yaml:"parent"`
	ID     uint32 `yaml:"id"`
}

// PreseedBridge is NetworkConfig's Bridge.
type PreseedBridge struct {
	Name  string   `yaml:"name"`
	Ports []string `yaml:"ports,omitempty"`
}

// PreseedInterface is NetworkConfig's InterfaceConfig.
type PreseedInterface struct {
	Name      string   `yaml:"name"`
	DHCP4     bool     `yaml:"dhcp4,omitempty"`
	DHCP6     bool     `yaml:"dhcp6,omitempty"`
	Addresses []string `yaml:"addresses,omitempty"`
	Gateway4  string   `yaml:"gateway4,omitempty"`
	Gateway6  string   `yaml:"gateway6,omitempty"`
	MTU       uint32   `yaml:"mtu,omitempty"`
}

// PreseedRoute is NetworkConfig's Route.
type PreseedRoute struct {
	Destination string `yaml:"destination"`
	Gateway     string `yaml:"gateway,omitempty"`
	Interface   string `yaml:"interface"`
	Metric      uint32 `yaml:"metric,omitempty"`
}

// Validate checks names, VLAN ids, bonding modes, MTUs and addresses, each
// error naming its field ("network.vlans[0].id: …"). Whether the links
// fit together (a route's interface is configured, addresses do not
// overlap) is the agent's validation, which firstboot runs.
func (n *PreseedNetwork) Validate() error {
	var errs []error
	add := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("network.%s: %w", field, err))
		}
	}
	for i, b := range n.Bonds {
		f := fmt.Sprintf("bonds[%d]", i)
		add(f+".name", rules.CheckInterfaceName(b.Name))
		add(f+".mode", rules.CheckBondMode(b.Mode))
		if len(b.Members) == 0 {
			add(f+".members", errors.New("a bond needs at least one member NIC"))
		}
		for j, m := range b.Members {
			add(fmt.Sprintf("%s.members[%d]", f, j), rules.CheckInterfaceName(m))
		}
		if b.MiimonMs > rules.MaxMiimonMs {
			add(f+".miimon_ms", fmt.Errorf("%d is above %d ms", b.MiimonMs, rules.MaxMiimonMs))
		}
	}
	for i, v := range n.Vlans {
		f := fmt.Sprintf("vlans[%d]", i)
		add(f+".name", rules.CheckInterfaceName(v.Name))
		add(f+".parent", rules.CheckInterfaceName(v.Parent))
		add(f+".id", rules.CheckVLANID(v.ID))
	}
	for i, b := range n.Bridges {
		f := fmt.Sprintf("bridges[%d]", i)
		add(f+".name", rules.CheckInterfaceName(b.Name))
		for j, p := range b.Ports {
			add(fmt.Sprintf("%s.ports[%d]", f, j), rules.CheckInterfaceName(p))
		}
	}
	for i, ic := range n.Interfaces {
		f := fmt.Sprintf("interfaces[%d]", i)
		add(f+".name", rules.CheckInterfaceName(ic.Name))
		for j, a := range ic.Addresses {
			if _, err := netip.ParsePrefix(a); err != nil {
				add(fmt.Sprintf("%s.addresses[%d]", f, j), fmt.Errorf("%q is not an address in CIDR form (192.0.2.10/24)", a))
			}
		}
		add(f+".gateway4", checkAddr(ic.Gateway4, true))
		add(f+".gateway6", checkAddr(ic.Gateway6, false))
		add(f+".mtu", rules.CheckMTU(ic.MTU))
	}
	for i, r := range n.Routes {
		f := fmt.Sprintf("routes[%d]", i)
		if p, err := netip.ParsePrefix(r.Destination); err != nil || p != p.Masked() {
			add(f+".destination", fmt.Errorf("%q is not a network in CIDR form (10.20.0.0/16)", r.Destination))
		}
		if r.Gateway != "" {
			if _, err := netip.ParseAddr(r.Gateway); err != nil {
				add(f+".gateway", fmt.Errorf("%q is not an IP address", r.Gateway))
			}
		}
		add(f+".interface", rules.CheckInterfaceName(r.Interface))
	}
	for i, d := range n.DNSServers {
		if _, err := netip.ParseAddr(d); err != nil {
			add(fmt.Sprintf("dns_servers[%d]", i), fmt.Errorf("%q is not an IP address", d))
		}
	}
	return errors.Join(errs...)
}

// checkAddr accepts "" and addresses of one family.
func checkAddr(s string, v4 bool) error {
	if s == "" {
		return nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Is4() != v4 {
		fam := map[bool]string{true: "IPv4", false: "IPv6"}[v4]
		return fmt.Errorf("%q is not an %s address", s, fam)
	}
	return nil
}
