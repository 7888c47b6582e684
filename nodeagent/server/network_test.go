package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/network"
	"github.com/debvisor/debvisor/testenv/netns"
)

// TestNetworkServiceThroughAPI drives NetworkService over mTLS gRPC and
// REST against a manager that owns a network namespace with a veth.
func TestNetworkServiceThroughAPI(t *testing.T) {
	a, b := netns.Add(t, "apia"), netns.Add(t, "apib")
	a.MustIP(t, "link", "add", "eth1", "type", "veth", "peer", "name", "peer1", "netns", b.Name)
	nsh, err := vnetns.GetFromName(a.Name)
	must(t, err)
	t.Cleanup(func() { nsh.Close() })
	h, err := netlink.NewHandleAt(nsh)
	must(t, err)
	t.Cleanup(h.Close)
	m, err := network.New(network.Config{Handle: h, NetworkdDir: t.TempDir(), StateDir: t.TempDir(), Management: "eth1"})
	must(t, err)
	t.Cleanup(m.Close)
	ag := startAgentWithNetwork(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := v1.NewNetworkServiceClient(ag.dial(t, "admin"))
	reader := v1.NewNetworkServiceClient(ag.dial(t, "reader"))
	cfg := &v1.NetworkConfig{
		Bridges:    []*v1.Bridge{{Name: "br0", Ports: []string{"eth1"}}},
		Interfaces: []*v1.InterfaceConfig{{Name: "br0", Addresses: []string{"10.77.0.1/24"}}},
	}

	if _, err := reader.ApplyNetwork(ctx, &v1.ApplyNetworkRequest{Config: cfg, DryRun: true}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("reader apply: %v, want PermissionDenied", err)
	}
	bad := &v1.NetworkConfig{Vlans: []*v1.Vlan{{Name: "v0", Parent: "eth1", Id: 4095}}}
	if _, err := admin.ApplyNetwork(ctx, &v1.ApplyNetworkRequest{Config: bad}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "vlans[0].id") {
		t.Errorf("VLAN 4095: %v, want InvalidArgument naming vlans[0].id", err)
	}
	if _, err := admin.ApplyNetwork(ctx, &v1.ApplyNetworkRequest{Config: cfg, NoConfirm: true}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("management bridge without confirm: %v, want FailedPrecondition", err)
	}
	resp, err := admin.ApplyNetwork(ctx, &v1.ApplyNetworkRequest{Config: cfg, ConfirmTimeout: durationpb.New(10 * time.Second)})
	must(t, err)
	ch := resp.GetChange()
	if ch.GetState() != v1.NetworkChange_STATE_PENDING || !ch.GetTouchesManagement() || ch.GetRequestedBy() != "admin-user" {
		t.Errorf("apply = %v", ch)
	}
	st, err := reader.GetNetwork(ctx, &v1.GetNetworkRequest{})
	must(t, err)
	if st.GetPending().GetId() != ch.GetId() || st.GetManagementInterface() != "eth1" {
		t.Errorf("GetNetwork: pending %v mgmt %q", st.GetPending(), st.GetManagementInterface())
	}
	found := false
	for _, l := range st.GetLinks() {
		if l.GetName() == "eth1" && l.GetMaster() == "br0" {
			found = true
		}
	}
	if !found {
		t.Errorf("eth1 is not a port of br0 in %v", st.GetLinks())
	}

	// Confirm over REST, from a new connection (as dvctl does).
	hc := restClient(t, ag, "admin")
	req, _ := http.NewRequest("POST", "https://"+ag.addr.REST+"/v1/network/changes/"+ch.GetId()+":confirm", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	r, err := hc.Do(req)
	must(t, err)
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	var confirmed struct{ State string }
	_ = json.Unmarshal(body, &confirmed)
	if r.StatusCode != http.StatusOK || confirmed.State != "STATE_CONFIRMED" {
		t.Errorf("REST confirm: %d %s", r.StatusCode, body)
	}

	// Undo it with a change that is reverted on request.
	resp, err = admin.ApplyNetwork(ctx, &v1.ApplyNetworkRequest{Config: &v1.NetworkConfig{}})
	must(t, err)
	if _, err := admin.RevertNetwork(ctx, &v1.RevertNetworkRequest{Id: "nope"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("revert with a malformed id: %v", err)
	}
	rv, err := admin.RevertNetwork(ctx, &v1.RevertNetworkRequest{Id: resp.GetChange().GetId()})
	must(t, err)
	if rv.GetState() != v1.NetworkChange_STATE_REVERTED || rv.GetReason() != "reverted by admin-user" {
		t.Errorf("revert = %v", rv)
	}
	if _, err := admin.ConfirmNetwork(ctx, &v1.ConfirmNetworkRequest{Id: rv.GetId()}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("confirming a reverted change: %v, want FailedPrecondition", err)
	}
}
