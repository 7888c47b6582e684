package network

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

// TestSeed writes a configuration for a node that is not running: the
// networkd files are the renderer's (the same golden files as ApplyNetwork
// writes), other files are left alone, DebVisor's stale ones go, and the
// desired configuration is where the agent reads it.
func TestSeed(t *testing.T) {
	nd, state := t.TempDir(), filepath.Join(t.TempDir(), "network")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(nd, "80-debvisor-dhcp.network"), []byte("image default"), 0o644))
	must(os.WriteFile(filepath.Join(nd, FilePrefix+"old.network"), []byte("stale"), 0o644))
	cfg := &v1.NetworkConfig{
		Bridges:    []*v1.Bridge{{Name: "br0", Ports: []string{"enp1s0"}}},
		Interfaces: []*v1.InterfaceConfig{{Name: "br0", Addresses: []string{"192.0.2.10/24"}, Gateway4: "192.0.2.1"}},
		DnsServers: []string{"192.0.2.53"},
	}
	must(Seed(nd, state, cfg))
	files, err := readFiles(nd)
	must(err)
	want := render(cfg)
	if len(files) != len(want) {
		t.Errorf("files %v, want %v", keys(files), keys(want))
	}
	for n, b := range want {
		if string(files[n]) != string(b) {
			t.Errorf("%s = %q, want %q", n, files[n], b)
		}
	}
	if b, err := os.ReadFile(filepath.Join(nd, "80-debvisor-dhcp.network")); err != nil || string(b) != "image default" {
		t.Errorf("the image's file was touched: %q %v", b, err)
	}
	b, err := os.ReadFile(filepath.Join(state, desiredFile))
	must(err)
	got := &v1.NetworkConfig{}
	must(protojson.Unmarshal(b, got))
	if !proto.Equal(got, cfg) {
		t.Errorf("desired = %v, want %v", got, cfg)
	}

	// A configuration ApplyNetwork would refuse is refused, and nothing is written.
	bad := &v1.NetworkConfig{Vlans: []*v1.Vlan{{Name: "v0", Parent: "enp1s0", Id: 4095}}}
	if err := Seed(nd, state, bad); !fault.Is(err, fault.Invalid) {
		t.Errorf("VLAN 4095: %v, want InvalidArgument", err)
	}
	if after, _ := readFiles(nd); len(after) != len(want) {
		t.Errorf("a refused seed changed the files: %v", keys(after))
	}
}
