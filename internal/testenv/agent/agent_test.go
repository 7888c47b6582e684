package agent_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/testenv/agent"
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
