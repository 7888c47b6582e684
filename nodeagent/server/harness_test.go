package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/debvisor/debvisor/internal/pki"
	"github.com/debvisor/debvisor/nodeagent/config"
	"github.com/debvisor/debvisor/nodeagent/health"
	"github.com/debvisor/debvisor/nodeagent/network"
	"github.com/debvisor/debvisor/nodeagent/operation"
	"github.com/debvisor/debvisor/nodeagent/sysinfo"
)

// testPKI is a cluster CA, a foreign CA, and client certificates for every case.
type testPKI struct {
	dir     string
	ca      *pki.CA
	clients map[string]*pki.Issued // admin, operator, reader, norole-less, foreign, expired
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("test", pki.Options{})
	must(t, err)
	must(t, pki.Save(pki.Files{Cert: filepath.Join(dir, "ca.crt"), Key: filepath.Join(dir, "ca.key")}, ca.Cert, ca.Key, false))
	node, err := ca.IssueNode("node1", []string{"127.0.0.1", "localhost"}, pki.Options{})
	must(t, err)
	must(t, pki.Save(pki.Files{Cert: filepath.Join(dir, "node.crt"), Key: filepath.Join(dir, "node.key")}, node.Cert, node.Key, false))

	p := &testPKI{dir: dir, ca: ca, clients: map[string]*pki.Issued{}}
	for _, r := range []pki.Role{pki.RoleReader, pki.RoleOperator, pki.RoleAdmin} {
		c, err := ca.IssueClient(r.String()+"-user", r, pki.Options{})
		must(t, err)
		p.clients[r.String()] = c
	}
	other, err := pki.NewCA("other", pki.Options{})
	must(t, err)
	foreign, err := other.IssueClient("mallory", pki.RoleAdmin, pki.Options{})
	must(t, err)
	p.clients["foreign"] = foreign
	past := func() time.Time { return time.Now().Add(-48 * time.Hour) }
	expired, err := ca.IssueClient("old-admin", pki.RoleAdmin, pki.Options{Now: past, Validity: time.Hour})
	must(t, err)
	p.clients["expired"] = expired
	// A node certificate used as a client grants no role.
	p.clients["node"] = node
	return p
}

func (p *testPKI) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.Cert)
	return pool
}

// tlsConfig returns a client config presenting the named certificate ("" = none).
func (p *testPKI) tlsConfig(t testing.TB, who string) *tls.Config {
	t.Helper()
	tc := &tls.Config{RootCAs: p.roots(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	if who != "" {
		is, ok := p.clients[who]
		if !ok {
			t.Fatalf("no test certificate %q", who)
		}
		tc.Certificates = []tls.Certificate{{Certificate: [][]byte{is.Cert.Raw}, PrivateKey: is.Key, Leaf: is.Cert}}
	}
	return tc
}

type testAgent struct {
	srv  *Server
	cfg  config.Config
	pki  *testPKI
	addr Addrs
}

func startAgent(t testing.TB, mods ...func(*Deps)) *testAgent {
	t.Helper()
	return startAgentWithNetwork(t, nil, mods...)
}

// startAgentWithNetwork is startAgent with a NetworkService on net (nil:
// the agent does not manage the host's network).
func startAgentWithNetwork(t testing.TB, net *network.Manager, mods ...func(*Deps)) *testAgent {
	t.Helper()
	p := newTestPKI(t)
	state := t.TempDir()
	sockDir, err := os.MkdirTemp("", "dvsock") // short path: unix sockets are limited to 108 bytes
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	cfg := config.Default()
	cfg.NodeName = "node1"
	cfg.Listen = "127.0.0.1:0"
	cfg.RESTListen = "127.0.0.1:0"
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.Socket = filepath.Join(sockDir, "agent.sock")
	cfg.StateDir = state
	cfg.ShutdownTimeout = "5s"
	cfg.TLS = config.TLS{CA: filepath.Join(p.dir, "ca.crt"), Cert: filepath.Join(p.dir, "node.crt"), Key: filepath.Join(p.dir, "node.key")}

	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	deps := Deps{Log: log, Ops: operation.NewManager(log), Health: health.NewRegistry(nil), SysInfo: sysinfo.Reader{Root: "/"}}
	for _, m := range mods {
		m(&deps)
	}
	srv, err := New(cfg, deps)
	must(t, err)
	// No libvirt here: the VM and storage services answer FailedPrecondition.
	// Not in a cluster either: the cluster service answers FailedPrecondition.
	must(t, srv.Register(NewStorageService(nil, deps.Ops), NewVMService(nil, deps.Ops), NewUpgradeService(nil, deps.Ops), NewClusterService(nil, nil), NewNetworkService(net)))
	must(t, DefaultChecks(srv))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("agent did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("agent Run: %v", err)
		}
	})
	return &testAgent{srv: srv, cfg: cfg, pki: p, addr: srv.Addrs()}
}

// dial returns a gRPC connection presenting who's certificate.
func (a *testAgent) dial(t testing.TB, who string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+a.addr.GRPC, grpc.WithTransportCredentials(credentials.NewTLS(a.pki.tlsConfig(t, who))))
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
