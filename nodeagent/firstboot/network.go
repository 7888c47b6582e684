package firstboot

import (
	"fmt"
	"path/filepath"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/config"
	"github.com/debvisor/debvisor/nodeagent/network"
	"github.com/debvisor/debvisor/osimage"
)

// networkConfig is a preseed's network section as the API's configuration.
func networkConfig(n *osimage.PreseedNetwork) *v1.NetworkConfig {
	c := &v1.NetworkConfig{DnsServers: n.DNSServers}
	for _, b := range n.Bonds {
		c.Bonds = append(c.Bonds, &v1.Bond{Name: b.Name, Mode: b.Mode, Members: b.Members, MiimonMs: b.MiimonMs})
	}
	for _, v := range n.Vlans {
		c.Vlans = append(c.Vlans, &v1.Vlan{Name: v.Name, Parent: v.Parent, Id: v.ID})
	}
	for _, b := range n.Bridges {
		c.Bridges = append(c.Bridges, &v1.Bridge{Name: b.Name, Ports: b.Ports})
	}
	for _, ic := range n.Interfaces {
		c.Interfaces = append(c.Interfaces, &v1.InterfaceConfig{
			Name: ic.Name, Dhcp4: ic.DHCP4, Dhcp6: ic.DHCP6, Addresses: ic.Addresses,
			Gateway4: ic.Gateway4, Gateway6: ic.Gateway6, Mtu: ic.MTU,
		})
	}
	for _, r := range n.Routes {
		c.Routes = append(c.Routes, &v1.Route{Destination: r.Destination, Gateway: r.Gateway, Interface: r.Interface, Metric: r.Metric})
	}
	return c
}

// networkPlan is what the preseed's network section becomes: the
// configuration, checked with the agent's own validation, and where the
// agent will look for it (its config's networkd_dir and state_dir, from
// the preseed's agent_config when it has one).
type networkPlan struct {
	cfg             *v1.NetworkConfig
	networkd, state string
}

func planNetwork(p *osimage.Preseed) (*networkPlan, error) {
	if p.Network == nil {
		return nil, nil
	}
	np := &networkPlan{cfg: networkConfig(p.Network), networkd: osimage.NetworkdDir, state: osimage.NetworkStateDir}
	if err := network.CheckConfig(np.cfg); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if p.AgentConfig != "" {
		c, err := config.Parse([]byte(p.AgentConfig))
		if err != nil {
			return nil, fmt.Errorf("agent_config (read for where the network configuration goes): %w", err)
		}
		if !filepath.IsAbs(c.StateDir) {
			return nil, fmt.Errorf("agent_config: state_dir %q must be an absolute path", c.StateDir)
		}
		np.networkd, np.state = c.Network.NetworkdDir, filepath.Join(c.StateDir, "network")
	}
	return np, nil
}

// write seeds the configuration under root: networkd files and the
// agent's desired configuration, nothing live.
func (np *networkPlan) write(root string) error {
	if err := network.Seed(filepath.Join(root, np.networkd), filepath.Join(root, np.state), np.cfg); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}
