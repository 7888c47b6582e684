package server

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/pki"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestCARotation rotates the cluster CA without restarting the agent: the
// bundle first holds old+new (both accepted), then only the new CA (old
// certificates refused).
func TestCARotation(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	a := startAgent(t, func(d *Deps) { d.Now = clock.Now })
	newCA, err := pki.NewCA("test-2", pki.Options{})
	must(t, err)
	newAdmin, err := newCA.IssueClient("new-admin", pki.RoleAdmin, pki.Options{})
	must(t, err)
	a.pki.clients["new-admin"] = newAdmin

	call := func(who string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := v1.NewNodeServiceClient(a.dial(t, who)).GetNode(ctx, &v1.GetNodeRequest{})
		return err
	}
	// The test's client trusts the node certificate through the old CA; the
	// node certificate is not rotated here.
	if err := call("new-admin"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("certificate from a CA not yet trusted: %v", err)
	}
	bundle := filepath.Join(a.pki.dir, "ca.crt")
	writeBundle := func(cas ...*pki.CA) {
		var data []byte
		for _, c := range cas {
			data = append(data, pki.EncodeCert(c.Cert)...)
		}
		tmp := bundle + ".new"
		must(t, os.WriteFile(tmp, data, 0o644))
		must(t, os.Rename(tmp, bundle))
		clock.Advance(6 * time.Second) // past the reload interval
	}
	writeBundle(a.pki.ca, newCA)
	if err := call("new-admin"); err != nil {
		t.Errorf("new CA not accepted after the bundle gained it: %v", err)
	}
	if err := call("admin"); err != nil {
		t.Errorf("old CA refused while still in the bundle: %v", err)
	}
	writeBundle(newCA)
	if err := call("admin"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("old CA still accepted after it left the bundle: %v", err)
	}
	if err := call("new-admin"); err != nil {
		t.Errorf("new CA refused: %v", err)
	}
}
