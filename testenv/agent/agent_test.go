package agent_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/testenv/agent"
)

// TestStart checks what the harness promises: a serving agent on loopback that answers the admin
// and reader certificates it hands out and refuses the foreign one.
func TestStart(t *testing.T) {
	a := agent.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	call := func(cr agent.Credentials) (*v1.Node, error) {
		c, err := client.New(client.Config{Endpoint: a.Endpoint, CAPEM: cr.CAPEM, CertPEM: cr.CertPEM, KeyPEM: cr.KeyPEM})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.Node.GetNode(ctx, &v1.GetNodeRequest{})
	}
	for name, cr := range map[string]agent.Credentials{"admin": a.Admin, "reader": a.Reader} {
		n, err := call(cr)
		if err != nil {
			t.Fatalf("%s: GetNode: %v", name, err)
		}
		if n.GetName() != a.NodeName {
			t.Errorf("%s: node name %q, want %q", name, n.GetName(), a.NodeName)
		}
	}
	if _, err := call(a.Foreign); status.Code(err) != codes.Unauthenticated && status.Code(err) != codes.Unavailable {
		t.Errorf("foreign certificate: got %v, want Unauthenticated or Unavailable", err)
	}
}

// TestKillRestart: a killed agent stops answering at once, and Restart brings it back on the same
// endpoint with the same PKI, so a client keeps working across it as it would across a crash.
func TestKillRestart(t *testing.T) {
	a := agent.New(t)
	c, err := client.New(client.Config{Endpoint: a.Endpoint, CAPEM: a.Admin.CAPEM, CertPEM: a.Admin.CertPEM, KeyPEM: a.Admin.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Node.GetNode(ctx, &v1.GetNodeRequest{})
		return err
	}
	if err := get(); err != nil {
		t.Fatalf("before kill: %v", err)
	}
	endpoint := a.Endpoint
	a.Kill()
	if err := get(); status.Code(err) != codes.Unavailable {
		t.Fatalf("after kill: got %v, want Unavailable", err)
	}
	if err := a.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.Endpoint != endpoint {
		t.Fatalf("restarted on %s, want the same endpoint %s", a.Endpoint, endpoint)
	}
	// The client reconnects on its own (within its reconnect back-off of at most 5 s).
	deadline := time.Now().Add(15 * time.Second)
	for err := get(); err != nil; err = get() {
		if time.Now().After(deadline) {
			t.Fatalf("after restart: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
