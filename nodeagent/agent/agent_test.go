package agent

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/debvisor/debvisor/internal/pki"
	"github.com/debvisor/debvisor/nodeagent/config"
	"github.com/debvisor/debvisor/nodeagent/server"
)

func testConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("test", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	node, err := ca.IssueNode("node1", []string{"127.0.0.1"}, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		files pki.Files
		is    *pki.Issued
	}{{pki.Files{Cert: filepath.Join(dir, "ca.crt"), Key: filepath.Join(dir, "ca.key")}, &pki.Issued{Cert: ca.Cert, Key: ca.Key}},
		{pki.Files{Cert: filepath.Join(dir, "node.crt"), Key: filepath.Join(dir, "node.key")}, node}} {
		if err := pki.Save(f.files, f.is.Cert, f.is.Key, false); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Default()
	cfg.Listen, cfg.RESTListen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.Socket = filepath.Join(dir, "agent.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.ShutdownTimeout = "2s"
	cfg.Libvirt.Socket = ""
	cfg.TLS = config.TLS{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "node.crt"), Key: filepath.Join(dir, "node.key")}
	return cfg
}

// runAgent starts a and returns its API addresses and the channel Run's
// result arrives on.
func runAgent(t *testing.T, ctx context.Context, a *Agent) (server.Addrs, chan error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-a.Server.Ready():
	case err := <-done:
		t.Fatalf("agent stopped before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("agent not serving after 30s")
	}
	return a.Server.Addrs(), done
}

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestFailingBackgroundStopsEverythingAndIsNamed(t *testing.T) {
	a, err := New(testConfig(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("lost the gossip socket")
	fail := make(chan struct{})
	a.Background = append(a.Background, Background{Name: "discovery", Run: func(ctx context.Context) error {
		select {
		case <-fail:
			return boom
		case <-ctx.Done():
			return nil
		}
	}})
	addrs, done := runAgent(t, context.Background(), a)
	if !dialable(addrs.GRPC) || !dialable(addrs.REST) {
		t.Fatal("API not reachable while running")
	}
	close(fail)
	select {
	case err := <-done:
		if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "discovery: ") {
			t.Fatalf("Run = %v, want the discovery failure, named", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent still running 30s after a background service failed")
	}
	for _, addr := range []string{addrs.GRPC, addrs.REST} {
		if dialable(addr) {
			t.Errorf("%s still accepts connections after the agent stopped", addr)
		}
	}
}

func TestListenerThatCannotBindStopsTheOthers(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testConfig(t)
	grpcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = grpcLn.Addr().String()
	grpcLn.Close()
	cfg.RESTListen = taken.Addr().String()
	a, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = a.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "listen REST "+cfg.RESTListen) {
		t.Fatalf("Run = %v, want the REST listener named", err)
	}
	if dialable(cfg.Listen) {
		t.Errorf("the gRPC listener %s kept serving after REST failed to bind", cfg.Listen)
	}
}

func TestCancelStopsCleanly(t *testing.T) {
	a, err := New(testConfig(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs, done := runAgent(t, ctx, a)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop within 30s of cancel")
	}
	if dialable(addrs.GRPC) {
		t.Error("gRPC still listening after a clean stop")
	}
}

func TestWithoutLibvirtVMsAndStorageAreAbsentNotNil(t *testing.T) {
	a, err := New(testConfig(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.VMs != nil || a.Storage != nil {
		t.Fatal("VM/storage managers built without a libvirt socket")
	}
	var names []string
	for _, b := range a.Background {
		names = append(names, b.Name)
	}
	if strings.Join(names, ",") != "health loop,systemd notify" {
		t.Fatalf("background services = %v", names)
	}
}
