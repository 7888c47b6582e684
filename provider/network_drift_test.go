package provider

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

func TestLiveDrift(t *testing.T) {
	desired := &v1.NetworkConfig{
		Bridges:    []*v1.Bridge{{Name: "br0", Ports: []string{"eth1"}}},
		Interfaces: []*v1.InterfaceConfig{{Name: "br0", Addresses: []string{"10.0.0.2/24", "2001:DB8::2/64"}, Gateway4: "10.0.0.1", Mtu: 9000}},
		Routes:     []*v1.Route{{Destination: "10.9.0.0/16", Gateway: "10.0.0.254", Interface: "br0", Metric: 10}},
	}
	inSync := func() *v1.NetworkState {
		return &v1.NetworkState{
			Desired: proto.CloneOf(desired),
			Links: []*v1.Link{
				{Name: "eth1", Kind: "veth", Master: "br0"},
				{Name: "br0", Kind: "bridge", Mtu: 9000, Addresses: []string{"10.0.0.2/24", "2001:db8::2/64", "fe80::1/64"}},
			},
			Routes: []*v1.LiveRoute{
				{Destination: "0.0.0.0/0", Gateway: "10.0.0.1", Interface: "br0"},
				{Destination: "10.9.0.0/16", Gateway: "10.0.0.254", Interface: "br0", Metric: 10},
			},
		}
	}
	tests := []struct {
		name   string
		change func(*v1.NetworkState)
		want   func(*v1.NetworkConfig)
		drift  string
	}{
		{name: "in sync", change: func(*v1.NetworkState) {}, want: func(*v1.NetworkConfig) {}},
		{
			name:   "bridge deleted",
			change: func(s *v1.NetworkState) { s.Links = s.Links[:1]; s.Links[0].Master = "" },
			want:   func(c *v1.NetworkConfig) { c.Bridges = nil },
			drift:  "bridge br0 does not exist",
		},
		{
			name:   "port released",
			change: func(s *v1.NetworkState) { s.Links[0].Master = "" },
			want:   func(c *v1.NetworkConfig) { c.Bridges[0].Ports = nil },
			drift:  "eth1 is not enslaved to br0",
		},
		{
			name:   "address taken away",
			change: func(s *v1.NetworkState) { s.Links[1].Addresses = []string{"2001:db8::2/64"} },
			want:   func(c *v1.NetworkConfig) { c.Interfaces[0].Addresses = []string{"2001:DB8::2/64"} },
			drift:  "br0 does not have address 10.0.0.2/24",
		},
		{
			name:   "MTU changed",
			change: func(s *v1.NetworkState) { s.Links[1].Mtu = 1500 },
			want:   func(c *v1.NetworkConfig) { c.Interfaces[0].Mtu = 1500 },
			drift:  "br0 has MTU 1500, not 9000",
		},
		{
			name:   "route and default route gone",
			change: func(s *v1.NetworkState) { s.Routes = nil },
			want:   func(c *v1.NetworkConfig) { c.Routes = nil; c.Interfaces[0].Gateway4 = "" },
			drift:  "no default route via 10.0.0.1 on br0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := inSync()
			tt.change(st)
			want := proto.CloneOf(desired)
			tt.want(want)
			got, drift := liveDrift(st)
			if !proto.Equal(got, want) {
				t.Errorf("config = %v\nwant %v", got, want)
			}
			if tt.drift == "" && len(drift) > 0 || !strings.Contains(strings.Join(drift, "; "), tt.drift) {
				t.Errorf("drift = %q, want %q", drift, tt.drift)
			}
			if !proto.Equal(st.GetDesired(), desired) {
				t.Error("liveDrift changed its input")
			}
		})
	}
}
