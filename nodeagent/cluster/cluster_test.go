package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/pki"
	"github.com/debvisor/debvisor/nodeagent/discovery"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

const testToken = "abcdef.0123456789abcdef"

func testConfig(t *testing.T, name string, clk *fakeClock) Config {
	t.Helper()
	dir := t.TempDir()
	c := Config{
		NodeName: name, StateDir: filepath.Join(dir, "state"),
		CAFile: filepath.Join(dir, "pki", "ca.crt"), CertFile: filepath.Join(dir, "pki", "node.crt"), KeyFile: filepath.Join(dir, "pki", "node.key"),
		Bind: "127.0.0.1:0", Version: "test",
		Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", name),
	}
	if clk != nil {
		c.Now = clk.Now
	}
	return c
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// member is a running node: gossip plus a gRPC server answering Join the
// way the agent's ClusterService does, on a TLS listener that presents the
// node certificate with the CA behind it.
type member struct {
	cfg  Config
	node *Node
	addr string
	stop context.CancelFunc
	done chan error
	srv  *grpc.Server
}

type joinServer struct {
	v1.UnimplementedClusterServiceServer
	n *Node
}

func (s joinServer) Join(ctx context.Context, r *v1.JoinRequest) (*v1.JoinResponse, error) {
	res, err := s.n.Join(ctx, JoinRequestFromProto(r))
	if err != nil {
		return nil, err
	}
	return res.Proto(), nil
}

func startMember(t *testing.T, cfg Config) *member {
	t.Helper()
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(cfg.CAFile)
	cas, _ := pki.ParseCerts(caPEM)
	for _, c := range cas {
		kp.Certificate = append(kp.Certificate, c.Raw)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{kp}, ClientAuth: tls.RequestClientCert})))
	v1.RegisterClusterServiceServer(srv, joinServer{n: n})
	go func() { _ = srv.Serve(ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{cfg: cfg, node: n, addr: ln.Addr().String(), stop: cancel, done: make(chan error, 1), srv: srv}
	go func() {
		m.done <- n.Run(ctx, func(context.Context) (string, error) { return m.addr, nil })
	}()
	select {
	case <-n.Ready():
	case err := <-m.done:
		t.Fatalf("%s: gossip did not start: %v", cfg.NodeName, err)
	}
	t.Cleanup(m.shutdown)
	return m
}

func (m *member) shutdown() {
	m.stop()
	if m.done != nil {
		<-m.done
		m.done = nil
	}
	m.srv.Stop()
}

func names(ms []Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func waitMembers(t *testing.T, n *Node, want []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := names(n.Members())
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sees %v, want %v", n.Name(), got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func bootstrap(t *testing.T, name string, clk *fakeClock) Config {
	t.Helper()
	cfg := testConfig(t, name, clk)
	if _, err := Bootstrap(context.Background(), cfg, BootstrapOptions{ClusterID: "lab", Token: testToken, TokenTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestBootstrap(t *testing.T) {
	cfg := bootstrap(t, "n1", nil)
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n.ClusterID() != "lab" || !n.HoldsCA() || len(n.Members()) != 1 {
		t.Fatalf("cluster %s holds CA %v members %v", n.ClusterID(), n.HoldsCA(), names(n.Members()))
	}
	if tk, err := n.Tokens().Check(testToken); err != nil || tk.Description == "" {
		t.Fatalf("preseeded token: %+v %v", tk, err)
	}
	for _, f := range []string{filepath.Join(filepath.Dir(cfg.CAFile), "ca.key"), cfg.KeyFile, filepath.Join(cfg.StateDir, "cluster", "keyring.json")} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: want mode 0600: %v %v", f, err, st)
		}
	}
	if _, err := Bootstrap(context.Background(), cfg, BootstrapOptions{}); !fault.Is(err, fault.AlreadyExists) {
		t.Fatalf("second bootstrap: %v", err)
	}
	// Bootstrapping with an existing CA and key keeps them.
	cfg2 := testConfig(t, "m1", nil)
	ca, _ := pki.NewCA("pre", pki.Options{})
	if err := pki.Save(pki.Files{Cert: cfg2.CAFile, Key: filepath.Join(filepath.Dir(cfg2.CAFile), "ca.key")}, ca.Cert, ca.Key, false); err != nil {
		t.Fatal(err)
	}
	b, err := Bootstrap(context.Background(), cfg2, BootstrapOptions{})
	if err != nil || b.CreatedCA || b.CAHash != pki.CAHash(ca.Cert) || !strings.HasPrefix(b.ClusterID, "dv-") {
		t.Fatalf("bootstrap with a given CA: %+v %v", b, err)
	}
}

func TestBootstrapRefuses(t *testing.T) {
	// A CA certificate whose key is elsewhere cannot sign joins.
	cfg := testConfig(t, "n1", nil)
	ca, _ := pki.NewCA("x", pki.Options{})
	if err := os.MkdirAll(filepath.Dir(cfg.CAFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.CAFile, pki.EncodeCert(ca.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		o    BootstrapOptions
		kind fault.Kind
	}{
		{"CA without key", BootstrapOptions{}, fault.FailedPrecondition},
		{"bad cluster id", BootstrapOptions{ClusterID: "my lab"}, fault.Invalid},
		{"bad token", BootstrapOptions{Token: "secret"}, fault.Invalid},
		{"bad ttl", BootstrapOptions{TokenTTL: -time.Hour}, fault.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Bootstrap(context.Background(), cfg, tt.o); !fault.Is(err, tt.kind) {
				t.Fatalf("Bootstrap = %v, want kind %v", err, tt.kind)
			}
			if Enrolled(cfg.StateDir) {
				t.Fatal("a refused bootstrap left cluster state")
			}
			if _, err := os.Stat(cfg.CertFile); err == nil {
				t.Fatal("a refused bootstrap issued a node certificate")
			}
		})
	}
	if _, err := Open(cfg); !errors.Is(err, ErrNotEnrolled) || !fault.Is(err, fault.FailedPrecondition) {
		t.Fatalf("Open of a node without state: %v", err)
	}
}

// TestJoinRefusals sends bad join requests straight to the signing node:
// each gets its error and none changes the token store or the members.
func TestJoinRefusals(t *testing.T) {
	clk := newFakeClock()
	m := startMember(t, bootstrap(t, "n1", clk))
	csr, _, _ := pki.NewNodeCSR("n2", nil)
	otherCSR, _, _ := pki.NewNodeCSR("n3", nil)
	id := newNodeID()
	good := JoinRequest{Token: testToken, NodeName: "n2", NodeID: id, CSRPEM: csr}
	with := func(f func(*JoinRequest)) JoinRequest { r := good; f(&r); return r }
	tokensBefore, _ := os.ReadFile(filepath.Join(m.cfg.StateDir, "cluster", "tokens.json"))
	tests := []struct {
		name string
		req  JoinRequest
		kind fault.Kind
		want string
	}{
		{"wrong token", with(func(r *JoinRequest) { r.Token = "abcdef.zzzzzzzzzzzzzzzz" }), fault.Unauthenticated, "join token is not valid"},
		{"unknown token", with(func(r *JoinRequest) { r.Token = "qqqqqq.zzzzzzzzzzzzzzzz" }), fault.Unauthenticated, "join token is not valid"},
		{"malformed token", with(func(r *JoinRequest) { r.Token = "letmein" }), fault.Invalid, "token:"},
		{"bad name", with(func(r *JoinRequest) { r.NodeName = "n2/../x" }), fault.Invalid, "node_name:"},
		{"bad node id", with(func(r *JoinRequest) { r.NodeID = "x" }), fault.Invalid, "node_id:"},
		{"malformed CSR", with(func(r *JoinRequest) {
			r.CSRPEM = []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
		}), fault.Invalid, "csr_pem:"},
		{"CSR for another name", with(func(r *JoinRequest) { r.CSRPEM = otherCSR }), fault.Invalid, `csr_pem: the request is for "n3"`},
		{"name of a member", with(func(r *JoinRequest) { r.NodeName = "n1"; r.CSRPEM, _, _ = pki.NewNodeCSR("n1", nil) }), fault.AlreadyExists, `"n1" is already a member`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := m.node.Join(context.Background(), tt.req)
			if err == nil || !fault.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Join = %v, %v (kind %v); want %v containing %q", res, err, fault.KindOf(err), tt.kind, tt.want)
			}
		})
	}
	clk.Add(2 * time.Hour)
	if _, err := m.node.Join(context.Background(), good); !fault.Is(err, fault.Unauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	tokensAfter, _ := os.ReadFile(filepath.Join(m.cfg.StateDir, "cluster", "tokens.json"))
	if string(tokensBefore) != string(tokensAfter) {
		t.Error("a refused join changed the token store")
	}
	if got := names(m.node.Members()); !slices.Equal(got, []string{"n1"}) {
		t.Errorf("members after refusals: %v", got)
	}
}

// TestFormation: n2 joins n1 by address (the CA pinned), n3 joins through
// n2, which does not hold the CA and relays to n1; all three converge; one
// leaving is dropped by the others; a node of another cluster (another
// gossip key) cannot get in.
func TestFormation(t *testing.T) {
	c1 := bootstrap(t, "n1", nil)
	m1 := startMember(t, c1)
	hash := m1.node.CAHash()

	c2 := testConfig(t, "n2", nil)
	j, err := JoinCluster(context.Background(), c2, JoinOptions{Token: testToken, CAHash: hash, Addrs: []string{m1.addr}})
	if err != nil {
		t.Fatal(err)
	}
	if j.ClusterID != "lab" || j.SignedBy != "n1" {
		t.Fatalf("joined %+v", j)
	}
	m2 := startMember(t, c2)
	if m2.node.HoldsCA() || m2.node.ClusterID() != "lab" {
		t.Fatalf("n2 holds CA %v cluster %s", m2.node.HoldsCA(), m2.node.ClusterID())
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(c2.CAFile), "ca.key")); err == nil {
		t.Fatal("the CA key reached a joining node")
	}
	// n2 rejoins the peers the join returned on its own.
	waitMembers(t, m1.node, []string{"n1", "n2"}, 5*time.Second)

	c3 := testConfig(t, "n3", nil)
	j, err = JoinCluster(context.Background(), c3, JoinOptions{Token: testToken, CAHash: hash, Addrs: []string{m2.addr}})
	if err != nil {
		t.Fatal(err)
	}
	if j.SignedBy != "n1" {
		t.Fatalf("n3 signed by %q, want n1 through n2's relay", j.SignedBy)
	}
	m3 := startMember(t, c3)
	all := []string{"n1", "n2", "n3"}
	for _, m := range []*member{m1, m2, m3} {
		waitMembers(t, m.node, all, 5*time.Second)
	}
	got, err := m3.node.Member("n1")
	if err != nil || got.APIAddr != m1.addr || !got.HoldsCA || got.NodeID == "" || !strings.HasPrefix(got.CertFingerprint, "sha256:") {
		t.Fatalf("n3's view of n1: %+v %v", got, err)
	}
	if _, err := m3.node.Member("n9"); !fault.Is(err, fault.NotFound) || !strings.Contains(err.Error(), "n1, n2, n3") {
		t.Fatalf("unknown member: %v", err)
	}
	if tk := m1.node.Tokens().List(); tk[0].Uses != 2 {
		t.Errorf("token uses %d, want 2", tk[0].Uses)
	}

	// Another cluster's node knows the addresses but not the key.
	other := startMember(t, bootstrap(t, "x1", nil))
	if _, err := other.node.JoinGossip([]string{m1.node.advertised().GossipAddr}); err == nil {
		t.Fatal("a node with another gossip key joined")
	}
	time.Sleep(time.Second)
	if got := names(m1.node.Members()); !slices.Equal(got, all) {
		t.Fatalf("after the foreign attempt n1 sees %v", got)
	}

	// n3 stops gracefully: the others drop it without waiting for failure detection.
	start := time.Now()
	m3.shutdown()
	waitMembers(t, m1.node, []string{"n1", "n2"}, 3*time.Second)
	waitMembers(t, m2.node, []string{"n1", "n2"}, 3*time.Second)
	t.Logf("graceful leave seen everywhere after %s", time.Since(start).Round(time.Millisecond))
}

// TestJoinClusterRefusals: the joining side stops at the first refusal and
// writes nothing: a wrong CA hash (the token is never sent), a wrong token,
// no member reachable before the deadline.
func TestJoinClusterRefusals(t *testing.T) {
	m1 := startMember(t, bootstrap(t, "n1", nil))
	otherCA, _ := pki.NewCA("other", pki.Options{})
	tokensBefore, _ := os.ReadFile(filepath.Join(m1.cfg.StateDir, "cluster", "tokens.json"))
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	tests := []struct {
		name    string
		o       JoinOptions
		timeout time.Duration
		kind    fault.Kind
		want    string
	}{
		{"wrong CA hash", JoinOptions{Token: testToken, CAHash: pki.CAHash(otherCA.Cert), Addrs: []string{m1.addr}}, 10 * time.Second, fault.PermissionDenied, "refusing to send the token"},
		{"wrong token", JoinOptions{Token: "abcdef.zzzzzzzzzzzzzzzz", CAHash: m1.node.CAHash(), Addrs: []string{m1.addr}}, 10 * time.Second, fault.Unauthenticated, "join token is not valid"},
		{"nobody there", JoinOptions{Token: testToken, CAHash: m1.node.CAHash(), Addrs: []string{deadAddr}, Retry: 100 * time.Millisecond}, time.Second, fault.DeadlineExceeded, "could be reached"},
		{"malformed hash", JoinOptions{Token: testToken, CAHash: "sha256:00", Addrs: []string{m1.addr}}, time.Second, fault.Invalid, "ca cert hash"},
		{"nowhere to look", JoinOptions{Token: testToken, CAHash: m1.node.CAHash()}, time.Second, fault.Invalid, "nothing to join"},
		{"mDNS finds only another cluster", JoinOptions{Token: testToken, CAHash: m1.node.CAHash(), MDNS: true, Retry: 100 * time.Millisecond, Browse: func(context.Context) ([]discovery.Peer, error) {
			r := discovery.Record{Name: "x", CAHash: pki.CAHash(otherCA.Cert), APIPort: 1}
			return []discovery.Peer{{Record: r, Addrs: []net.IP{net.ParseIP("127.0.0.1")}}}, nil
		}}, time.Second, fault.DeadlineExceeded, "could be reached"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, "n2", nil)
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			_, err := JoinCluster(ctx, cfg, tt.o)
			if err == nil || !fault.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("JoinCluster = %v (kind %v); want %v containing %q", err, fault.KindOf(err), tt.kind, tt.want)
			}
			for _, f := range []string{cfg.CAFile, cfg.CertFile, cfg.KeyFile, filepath.Join(cfg.StateDir, "cluster")} {
				if _, err := os.Stat(f); err == nil {
					t.Errorf("a failed join wrote %s", f)
				}
			}
		})
	}
	if after, _ := os.ReadFile(filepath.Join(m1.cfg.StateDir, "cluster", "tokens.json")); string(after) != string(tokensBefore) {
		t.Error("refused joins changed the signer's token store")
	}
}

// TestJoinByMDNSCandidates: a member found by (fake) mDNS with the pinned CA
// is used; the signer is preferred.
func TestJoinByMDNSCandidates(t *testing.T) {
	m1 := startMember(t, bootstrap(t, "n1", nil))
	host, port, _ := net.SplitHostPort(m1.addr)
	p := discovery.Peer{Addrs: []net.IP{net.ParseIP(host)}}
	p.Name, p.CAHash, p.Signer = "n1", m1.node.CAHash(), true
	p.APIPort = atoi(port)
	cfg := testConfig(t, "n2", nil)
	j, err := JoinCluster(context.Background(), cfg, JoinOptions{Token: testToken, CAHash: m1.node.CAHash(), MDNS: true,
		Browse: func(context.Context) ([]discovery.Peer, error) { return []discovery.Peer{p}, nil }})
	if err != nil || j.Via != m1.addr {
		t.Fatalf("join by mDNS: %+v %v", j, err)
	}
	got := mdnsCandidates([]discovery.Peer{
		{Record: discovery.Record{Name: "a", CAHash: "x", APIPort: 1}, Addrs: []net.IP{net.ParseIP("10.0.0.1")}},
		{Record: discovery.Record{Name: "b", CAHash: "h", APIPort: 2}, Addrs: []net.IP{net.ParseIP("10.0.0.2")}},
		{Record: discovery.Record{Name: "c", CAHash: "h", APIPort: 3, Signer: true}, Addrs: []net.IP{net.ParseIP("10.0.0.3")}},
	}, "h")
	if !slices.Equal(got, []string{"10.0.0.3:3", "10.0.0.2:2"}) {
		t.Errorf("candidates %v", got)
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestEnrollFile: the enroll file drives bootstrap and join, and is removed
// once the node is enrolled; a broken file is an error that changes nothing.
func TestEnrollFile(t *testing.T) {
	c1 := testConfig(t, "n1", nil)
	f1 := filepath.Join(t.TempDir(), "enroll.yaml")
	if err := os.WriteFile(f1, []byte("bootstrap: true\nname: lab\ntoken: "+testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	did, err := Enroll(context.Background(), c1, f1, nil, false)
	if err != nil || !strings.Contains(did, "bootstrapped cluster lab") {
		t.Fatalf("Enroll bootstrap: %q %v", did, err)
	}
	if _, err := os.Stat(f1); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("enroll file left after bootstrap")
	}
	m1 := startMember(t, c1)

	c2 := testConfig(t, "n2", nil)
	f2 := filepath.Join(t.TempDir(), "enroll.yaml")
	if err := os.WriteFile(f2, []byte("token: "+testToken+"\nca_cert_hash: "+m1.node.CAHash()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// No address in the file: the agent config's join list is used.
	did, err = Enroll(context.Background(), c2, f2, []string{m1.addr}, false)
	if err != nil || !strings.Contains(did, "joined cluster lab via "+m1.addr) {
		t.Fatalf("Enroll join: %q %v", did, err)
	}
	if did, err := Enroll(context.Background(), c2, f2, nil, false); did != "" || err != nil {
		t.Fatalf("Enroll without a file: %q %v", did, err)
	}

	c3 := testConfig(t, "n3", nil)
	f3 := filepath.Join(t.TempDir(), "enroll.yaml")
	if err := os.WriteFile(f3, []byte("token: "+testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Enroll(context.Background(), c3, f3, nil, false); err == nil || !strings.Contains(err.Error(), "ca_cert_hash") {
		t.Fatalf("Enroll with a broken file: %v", err)
	}
	if _, err := os.Stat(f3); err != nil || Enrolled(c3.StateDir) {
		t.Fatal("a broken enroll file was removed or enrolled the node")
	}
}

func TestFailureDetectionBound(t *testing.T) {
	b := LANTiming().FailureDetectionBound(10)
	if b > 10*time.Second || b < 5*time.Second {
		t.Fatalf("LAN failure-detection bound for 10 members is %s; the target is ≤ 10 s", b)
	}
}
