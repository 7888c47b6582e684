package dvctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

func TestReadNetworkConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := readNetworkConfig(write("net.yaml", `
bonds:
  - {name: bond0, mode: 802.3ad, members: [enp1s0, enp2s0], miimon_ms: 100}
vlans:
  - {name: vlan10, parent: bond0, id: 10}
bridges:
  - name: br0
    ports: [vlan10]
interfaces:
  - name: br0
    addresses: [192.0.2.10/24]
    gateway4: 192.0.2.1
    mtu: 9000
routes:
  - {destination: 198.51.100.0/24, gateway: 192.0.2.254, interface: br0}
dns_servers: [192.0.2.53]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &v1.NetworkConfig{
		Bonds:      []*v1.Bond{{Name: "bond0", Mode: "802.3ad", Members: []string{"enp1s0", "enp2s0"}, MiimonMs: 100}},
		Vlans:      []*v1.Vlan{{Name: "vlan10", Parent: "bond0", Id: 10}},
		Bridges:    []*v1.Bridge{{Name: "br0", Ports: []string{"vlan10"}}},
		Interfaces: []*v1.InterfaceConfig{{Name: "br0", Addresses: []string{"192.0.2.10/24"}, Gateway4: "192.0.2.1", Mtu: 9000}},
		Routes:     []*v1.Route{{Destination: "198.51.100.0/24", Gateway: "192.0.2.254", Interface: "br0"}},
		DnsServers: []string{"192.0.2.53"},
	}
	if !proto.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	if _, err := readNetworkConfig(write("typo.yaml", "bridges:\n  - name: br0\n    port: [eth0]\n")); err == nil || !strings.Contains(err.Error(), "not a network configuration") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestNetworkUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "apply"}, "accepts 1 arg"},
		{[]string{"network", "apply", "x.yaml", "--no-confirm", "--confirm"}, "none of the others can be"},
		{[]string{"network", "apply", "/nonexistent.yaml"}, "no such file"},
	} {
		_, err := run(t, append([]string{"--config", filepath.Join(t.TempDir(), "c.yaml")}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
}
