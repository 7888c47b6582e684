package firstboot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/osimage"
)

// joinSection is a preseed's cluster section for a joining node.
const joinSection = `cluster:
  token: abcdef.0123456789abcdef
  ca_cert_hash: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  join: [192.0.2.5:7443]
`

// TestPreseedNetwork applies preseeds with a network section: a valid one
// becomes networkd files and the agent's desired configuration (the API's
// schema, nothing applied live), next to the cluster enrollment that makes
// the node join on its first start; an invalid one fails the preseed with
// the field named, and nothing at all is written.
func TestPreseedNetwork(t *testing.T) {
	bridge := &v1.NetworkConfig{
		Bridges: []*v1.Bridge{{Name: "br0", Ports: []string{"enp1s0"}}},
		Interfaces: []*v1.InterfaceConfig{
			{Name: "br0", Addresses: []string{"192.0.2.10/24"}, Gateway4: "192.0.2.1", Mtu: 9000},
			{Name: "enp2s0", Dhcp4: true, Dhcp6: true},
		},
		Routes:     []*v1.Route{{Destination: "10.20.0.0/16", Gateway: "192.0.2.254", Interface: "br0", Metric: 50}},
		DnsServers: []string{"192.0.2.53", "2001:db8::53"},
	}
	bridgeYAML := `network:
  bridges: [{name: br0, ports: [enp1s0]}]
  interfaces:
    - {name: br0, addresses: [192.0.2.10/24], gateway4: 192.0.2.1, mtu: 9000}
    - {name: enp2s0, dhcp4: true, dhcp6: true}
  routes: [{destination: 10.20.0.0/16, gateway: 192.0.2.254, interface: br0, metric: 50}]
  dns_servers: [192.0.2.53, "2001:db8::53"]
`
	tests := []struct {
		name    string
		preseed string
		want    *v1.NetworkConfig // nil: the preseed is refused
		state   string            // where the desired configuration goes
		files   map[string]string // networkd file → a line it must hold
		wantErr string
	}{
		{
			name:    "bridge, static address, DHCP NIC, route, DNS, cluster join",
			preseed: bridgeYAML + joinSection,
			want:    bridge, state: osimage.NetworkStateDir,
			files: map[string]string{
				"10-debvisor-br0.netdev":     "Kind=bridge",
				"10-debvisor-br0.network":    "Gateway=192.0.2.1",
				"10-debvisor-enp1s0.network": "Bridge=br0",
				"10-debvisor-enp2s0.network": "DHCP=yes",
			},
		},
		{
			name: "bond and VLAN",
			preseed: `network:
  bonds: [{name: bond0, mode: 802.3ad, members: [enp1s0, enp2s0], miimon_ms: 200}]
  vlans: [{name: vlan20, parent: bond0, id: 20}]
  interfaces: [{name: vlan20, addresses: ["10.20.0.10/24"]}]
`,
			want: &v1.NetworkConfig{
				Bonds:      []*v1.Bond{{Name: "bond0", Mode: "802.3ad", Members: []string{"enp1s0", "enp2s0"}, MiimonMs: 200}},
				Vlans:      []*v1.Vlan{{Name: "vlan20", Parent: "bond0", Id: 20}},
				Interfaces: []*v1.InterfaceConfig{{Name: "vlan20", Addresses: []string{"10.20.0.10/24"}}},
			},
			state: osimage.NetworkStateDir,
			files: map[string]string{"10-debvisor-bond0.netdev": "Mode=802.3ad", "10-debvisor-vlan20.netdev": "Id=20", "10-debvisor-bond0.network": "VLAN=vlan20"},
		},
		{
			name:    "the agent's state_dir from agent_config",
			preseed: "agent_config: \"state_dir: /var/lib/dv2\\n\"\n" + bridgeYAML,
			want:    bridge, state: "/var/lib/dv2/network",
			files: map[string]string{"10-debvisor-br0.network": "Address=192.0.2.10/24"},
		},
		{name: "VLAN 4095", preseed: "network:\n  vlans: [{name: v0, parent: enp1s0, id: 4095}]\n", wantErr: "network.vlans[0].id: 4095 is not a VLAN id"},
		{name: "VLAN 0", preseed: "network:\n  vlans: [{name: v0, parent: enp1s0}]\n", wantErr: "network.vlans[0].id: 0 is not a VLAN id"},
		{name: "bond mode", preseed: "network:\n  bonds: [{name: bond0, mode: fast, members: [enp1s0]}]\n", wantErr: `network.bonds[0].mode: "fast" is not a bonding mode`},
		{name: "address not CIDR", preseed: "network:\n  interfaces: [{name: enp1s0, addresses: [192.0.2.10]}]\n", wantErr: `network.interfaces[0].addresses[0]: "192.0.2.10" is not an address in CIDR form`},
		{name: "interface name", preseed: "network:\n  bridges: [{name: a-name-far-too-long}]\n", wantErr: "network.bridges[0].name"},
		{name: "unknown key", preseed: "network:\n  interfaces: [{name: enp1s0, adresses: [192.0.2.10/24]}]\n", wantErr: "adresses"},
		// Caught by the agent's own validation, which firstboot runs before writing.
		{name: "route through an unconfigured link", preseed: "network:\n  routes: [{destination: 10.0.0.0/8, interface: enp9s0}]\n", wantErr: "routes[0].interface"},
		{name: "gateway outside the subnet", preseed: "network:\n  interfaces: [{name: enp1s0, addresses: [192.0.2.10/24], gateway4: 198.51.100.1}]\n", wantErr: "interfaces[0].gateway4"},
		{name: "NIC in two bridges", preseed: "network:\n  bridges: [{name: br0, ports: [enp1s0]}, {name: br1, ports: [enp1s0]}]\n", wantErr: "bridges[1].ports[0]"},
		{name: "relative state_dir in agent_config", preseed: "agent_config: \"state_dir: relative\\n\"\n" + bridgeYAML, wantErr: "agent_config: state_dir"},
		{name: "unknown key in agent_config", preseed: "agent_config: \"stat_dir: /x\\n\"\n" + bridgeYAML, wantErr: "agent_config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			data := []byte("version: 1\nhostname: node9\n" + tt.preseed)
			p, err := osimage.ParsePreseed(data)
			if err == nil {
				err = Apply(root, root, p)
			}
			if tt.want == nil {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one with %q", err, tt.wantErr)
				}
				if ents, _ := os.ReadDir(root); len(ents) != 0 {
					t.Errorf("a refused preseed wrote %v", ents)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(root, tt.state, "desired.json"))
			if err != nil {
				t.Fatal(err)
			}
			got := &v1.NetworkConfig{}
			if err := protojson.Unmarshal(b, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tt.want) {
				t.Errorf("desired = %v\nwant %v", got, tt.want)
			}
			// The same schema: the section, read as the API's JSON, is the same configuration.
			var doc struct {
				Network any `yaml:"network"`
			}
			if err := yaml.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			js, err := yaml.MarshalWithOptions(doc.Network, yaml.JSON())
			if err != nil {
				t.Fatal(err)
			}
			api := &v1.NetworkConfig{}
			if err := protojson.Unmarshal(js, api); err != nil {
				t.Fatalf("the network section is not the API's schema: %v\n%s", err, js)
			}
			if !proto.Equal(api, tt.want) {
				t.Errorf("as the API reads it: %v\nwant %v", api, tt.want)
			}
			for f, line := range tt.files {
				b, err := os.ReadFile(filepath.Join(root, osimage.NetworkdDir, f))
				if err != nil {
					t.Error(err)
					continue
				}
				if !strings.Contains(string(b), line+"\n") {
					t.Errorf("%s lacks %q:\n%s", f, line, b)
				}
			}
			if strings.Contains(tt.preseed, "cluster:") {
				b, err := os.ReadFile(filepath.Join(root, osimage.ClusterEnrollPath))
				if err != nil {
					t.Fatal(err)
				}
				e, err := osimage.ParseClusterEnrollment(b)
				if err != nil || e.Token != "abcdef.0123456789abcdef" || len(e.Join) != 1 || e.Join[0] != "192.0.2.5:7443" {
					t.Errorf("enrollment %+v, %v", e, err)
				}
			}
		})
	}
}
