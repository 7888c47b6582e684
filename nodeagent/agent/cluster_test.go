package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/pki"
)

// clusterBackground lists the agent's cluster background services.
func clusterBackground(a *Agent) []string {
	var out []string
	for _, b := range a.Background {
		if b.Name == "cluster gossip" || b.Name == "mDNS discovery" {
			out = append(out, b.Name)
		}
	}
	return out
}

// TestClusterWiring: an agent with a pending bootstrap in its enroll file
// enrolls before serving, then runs gossip (and mDNS when on) as background
// services and answers ClusterService; with clustering off nothing of it
// runs; an agent not enrolled serves standalone.
func TestClusterWiring(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		a, err := New(testConfig(t), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if got := clusterBackground(a); len(got) != 0 {
			t.Fatalf("standalone: cluster services %v", got)
		}
	})

	cfg := testConfig(t)
	cfg.NodeName = "node1"
	cfg.Cluster.Bind, cfg.Cluster.MDNS = "127.0.0.1:0", false
	cfg.Cluster.EnrollFile = filepath.Join(t.TempDir(), "enroll.yaml")
	if err := os.WriteFile(cfg.Cluster.EnrollFile, []byte("bootstrap: true\nname: lab\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := Enroll(ctx, cfg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.Cluster.EnrollFile); !os.IsNotExist(err) {
		t.Fatalf("enroll file not removed: %v", err)
	}

	off := cfg
	off.Cluster.Enabled = false
	a, err := New(off, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := clusterBackground(a); len(got) != 0 {
		t.Fatalf("clustering off: cluster services %v", got)
	}
	a.Close()

	withMDNS := cfg
	withMDNS.Cluster.MDNS = true
	a, err = New(withMDNS, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := clusterBackground(a); !slices.Equal(got, []string{"cluster gossip", "mDNS discovery"}) {
		t.Fatalf("with mDNS: cluster services %v", got)
	}
	a.Close()

	a, err = New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	addrs, done := runAgent(t, ctx, a)
	// The harness CA is beside tls.ca with its key: the bootstrap used it.
	ca, err := pki.LoadCA(pki.Files{Cert: cfg.TLS.CA, Key: filepath.Join(filepath.Dir(cfg.TLS.CA), "ca.key")})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := ca.IssueClient("admin", pki.RoleAdmin, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := pki.EncodeKey(admin.Key)
	c, err := client.New(client.Config{Endpoint: addrs.GRPC, CAPEM: pki.EncodeCert(ca.Cert), CertPEM: pki.EncodeCert(admin.Cert), KeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var members *v1.ListMembersResponse
	deadline := time.Now().Add(10 * time.Second)
	for {
		members, err = c.Cluster.ListMembers(ctx, &v1.ListMembersRequest{})
		if err == nil && len(members.GetMembers()) == 1 && members.GetMembers()[0].GetApiAddress() != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ListMembers: %v %v", members, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := members.GetMembers()[0]
	if m.GetName() != "node1" || !m.GetSelf() || !m.GetHoldsCa() || m.GetApiAddress() != addrs.GRPC {
		t.Fatalf("member %v (API %s)", m, addrs.GRPC)
	}
	info, err := c.Cluster.GetCluster(ctx, &v1.GetClusterRequest{})
	if err != nil || info.GetId() != "lab" || info.GetCaCertHash() != pki.CAHash(ca.Cert) {
		t.Fatalf("GetCluster: %v %v", info, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
