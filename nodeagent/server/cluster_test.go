package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/pki"
	"github.com/debvisor/debvisor/nodeagent/cluster"
	"github.com/debvisor/debvisor/nodeagent/config"
	"github.com/debvisor/debvisor/nodeagent/health"
	"github.com/debvisor/debvisor/nodeagent/operation"
	"github.com/debvisor/debvisor/nodeagent/sysinfo"
)

const clusterToken = "abcdef.0123456789abcdef"

// clusterAgent is an in-process agent API with real cluster membership: the
// first bootstraps (CA, gossip key, token), the others join it through the
// Join RPC with the CA pinned, as `debvisor-agent serve` does.
type clusterAgent struct {
	*testAgent
	node *cluster.Node
}

func startClusterAgent(t *testing.T, name string, via *clusterAgent) *clusterAgent {
	t.Helper()
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "dvsock")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", name)
	cfg := config.Default()
	cfg.NodeName = name
	cfg.Listen, cfg.RESTListen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.Socket = filepath.Join(sockDir, "agent.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.ShutdownTimeout = "5s"
	cfg.TLS = config.TLS{CA: filepath.Join(dir, "pki", "ca.crt"), Cert: filepath.Join(dir, "pki", "node.crt"), Key: filepath.Join(dir, "pki", "node.key")}
	ccfg := cluster.Config{
		NodeName: name, StateDir: cfg.StateDir, CAFile: cfg.TLS.CA, CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key,
		Bind: "127.0.0.1:0", Version: "test", Log: log,
	}
	ctx := context.Background()
	if via == nil {
		_, err = cluster.Bootstrap(ctx, ccfg, cluster.BootstrapOptions{ClusterID: "lab", Token: clusterToken})
	} else {
		_, err = cluster.JoinCluster(ctx, ccfg, cluster.JoinOptions{Token: clusterToken, CAHash: via.node.CAHash(), Addrs: []string{via.addr.GRPC}})
	}
	must(t, err)
	node, err := cluster.Open(ccfg)
	must(t, err)

	deps := Deps{Log: log, Ops: operation.NewManager(log), Health: health.NewRegistry(nil), SysInfo: sysinfo.Reader{Root: "/"}, Router: RouterFor(node)}
	srv, err := New(cfg, deps)
	must(t, err)
	must(t, srv.Register(NewStorageService(nil, deps.Ops), NewVMService(nil, deps.Ops), NewClusterService(node, nil)))
	must(t, DefaultChecks(srv))
	rctx, cancel := context.WithCancel(ctx)
	srvDone, nodeDone := make(chan error, 1), make(chan error, 1)
	go func() { srvDone <- srv.Run(rctx) }()
	go func() {
		nodeDone <- node.Run(rctx, func(ctx context.Context) (string, error) {
			select {
			case <-srv.Ready():
				return srv.Addrs().GRPC, nil
			case <-ctx.Done():
				return "", ctx.Err()
			}
		})
	}()
	select {
	case <-node.Ready():
	case err := <-nodeDone:
		t.Fatalf("%s: gossip did not start: %v", name, err)
	case err := <-srvDone:
		t.Fatalf("%s: API did not start: %v", name, err)
	}
	t.Cleanup(func() {
		cancel()
		for _, c := range []chan error{nodeDone, srvDone} {
			if err := <-c; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %v", name, err)
			}
		}
	})
	a := &clusterAgent{testAgent: &testAgent{srv: srv, cfg: cfg, addr: srv.Addrs()}, node: node}
	a.pki = clusterPKI(t, cfg.TLS.CA, via)
	return a
}

// clusterPKI issues client certificates from the first node's CA (the only
// holder of the key) and shares them with the nodes that joined.
func clusterPKI(t *testing.T, caFile string, via *clusterAgent) *testPKI {
	t.Helper()
	if via != nil {
		return via.pki
	}
	ca, err := pki.LoadCA(pki.Files{Cert: caFile, Key: filepath.Join(filepath.Dir(caFile), "ca.key")})
	must(t, err)
	p := &testPKI{dir: filepath.Dir(caFile), ca: ca, clients: map[string]*pki.Issued{}}
	for _, r := range []pki.Role{pki.RoleReader, pki.RoleOperator, pki.RoleAdmin} {
		c, err := ca.IssueClient(r.String()+"-user", r, pki.Options{})
		must(t, err)
		p.clients[r.String()] = c
	}
	expired, err := ca.IssueClient("old-admin", pki.RoleAdmin, pki.Options{Now: func() time.Time { return time.Now().Add(-48 * time.Hour) }, Validity: time.Hour})
	must(t, err)
	p.clients["expired"] = expired
	other, _ := pki.NewCA("other", pki.Options{})
	foreign, _ := other.IssueClient("mallory", pki.RoleAdmin, pki.Options{})
	p.clients["foreign"] = foreign
	// A node certificate of this cluster, as a member presents when it forwards.
	node, err := ca.IssueNode("rogue", []string{"127.0.0.1"}, pki.Options{})
	must(t, err)
	p.clients["node"] = node
	return p
}

func startCluster(t *testing.T, names ...string) []*clusterAgent {
	t.Helper()
	var out []*clusterAgent
	for i, n := range names {
		var via *clusterAgent
		if i > 0 {
			via = out[i-1] // the later ones join through a member without the CA: relayed
		}
		out = append(out, startClusterAgent(t, n, via))
	}
	for _, a := range out {
		deadline := time.Now().Add(5 * time.Second)
		for len(a.node.Members()) != len(names) {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %d members, want %d", a.node.Name(), len(a.node.Members()), len(names))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return out
}

func toNode(ctx context.Context, name string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, v1.NodeMetadataKey, name)
}

func TestClusterService(t *testing.T) {
	ns := startCluster(t, "n1", "n2", "n3")
	ctx := context.Background()
	c := v1.NewClusterServiceClient(ns[2].dial(t, "reader"))
	info, err := c.GetCluster(ctx, &v1.GetClusterRequest{})
	must(t, err)
	if info.GetId() != "lab" || info.GetSelf() != "n3" || info.GetHoldsCa() || info.GetMemberCount() != 3 || !slices.Equal(info.GetSigners(), []string{"n1"}) || info.GetCaCertHash() != ns[0].node.CAHash() {
		t.Fatalf("GetCluster on n3: %v", info)
	}
	list, err := c.ListMembers(ctx, &v1.ListMembersRequest{})
	must(t, err)
	var got []string
	for _, m := range list.GetMembers() {
		got = append(got, m.GetName())
		if m.GetApiAddress() == "" || m.GetGossipAddress() == "" || m.GetNodeId() == "" || m.GetSelf() != (m.GetName() == "n3") || m.GetHoldsCa() != (m.GetName() == "n1") {
			t.Errorf("member %v", m)
		}
	}
	if !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Fatalf("members %v", got)
	}
	// REST lists the same.
	resp, err := restClient(t, ns[2].testAgent, "reader").Get("https://" + ns[2].addr.REST + "/v1/cluster/members")
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.Count(string(body), `"name"`) != 3 {
		t.Fatalf("REST members: %s %s", resp.Status, body)
	}

	// Tokens live on the CA holder; other members say where to go.
	admin1 := v1.NewClusterServiceClient(ns[0].dial(t, "admin"))
	tok, err := admin1.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Ttl: durationpb.New(time.Hour), Description: "rack 4"})
	must(t, err)
	if tok.GetCaCertHash() != info.GetCaCertHash() || !strings.HasPrefix(tok.GetToken(), tok.GetInfo().GetId()+".") {
		t.Fatalf("CreateJoinToken: %v", tok)
	}
	_, err = v1.NewClusterServiceClient(ns[1].dial(t, "admin")).CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "n1") {
		t.Fatalf("CreateJoinToken on a non-holder: %v", err)
	}
	// ...or the call is forwarded to the holder.
	fwd, err := v1.NewClusterServiceClient(ns[1].dial(t, "admin")).ListJoinTokens(toNode(ctx, "n1"), &v1.ListJoinTokensRequest{})
	must(t, err)
	if len(fwd.GetTokens()) != 2 {
		t.Fatalf("tokens on n1 via n2: %v", fwd.GetTokens())
	}
	for _, tk := range fwd.GetTokens() {
		if tk.GetId() == "abcdef" && tk.GetUses() != 2 {
			t.Errorf("bootstrap token used %d times, want 2", tk.GetUses())
		}
	}
	// Bad input changes nothing.
	bad := []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"negative ttl", func() error {
			_, err := admin1.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Ttl: durationpb.New(-time.Hour)})
			return err
		}, codes.InvalidArgument},
		{"ttl too long", func() error {
			_, err := admin1.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Ttl: durationpb.New(1000 * time.Hour)})
			return err
		}, codes.InvalidArgument},
		{"bad description", func() error {
			_, err := admin1.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Description: "a\x00b"})
			return err
		}, codes.InvalidArgument},
		{"delete unknown", func() error {
			_, err := admin1.DeleteJoinToken(ctx, &v1.DeleteJoinTokenRequest{Id: "zzzzzz"})
			return err
		}, codes.NotFound},
		{"delete bad id", func() error {
			_, err := admin1.DeleteJoinToken(ctx, &v1.DeleteJoinTokenRequest{Id: "../tokens"})
			return err
		}, codes.InvalidArgument},
		{"reader creates", func() error {
			_, err := v1.NewClusterServiceClient(ns[0].dial(t, "reader")).CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{})
			return err
		}, codes.PermissionDenied},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			if err := b.call(); status.Code(err) != b.code {
				t.Fatalf("got %v, want %v", err, b.code)
			}
			l, err := admin1.ListJoinTokens(ctx, &v1.ListJoinTokensRequest{})
			must(t, err)
			if len(l.GetTokens()) != 2 {
				t.Fatalf("token count changed to %d", len(l.GetTokens()))
			}
		})
	}
	_, err = admin1.DeleteJoinToken(ctx, &v1.DeleteJoinTokenRequest{Id: tok.GetInfo().GetId()})
	must(t, err)
}

// TestJoinRPC: Join is the one call without a client certificate, checked
// by its token; the joining side pins the CA through the served chain.
func TestJoinRPC(t *testing.T) {
	ns := startCluster(t, "n1")
	csr, _, err := pki.NewNodeCSR("n9", nil)
	must(t, err)
	// No client certificate, TLS verified against the CA like a joiner does.
	roots := x509.NewCertPool()
	roots.AddCert(ns[0].pki.ca.Cert)
	conn, err := grpc.NewClient("passthrough:///"+ns[0].addr.GRPC, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "n1", MinVersion: tls.VersionTLS13})))
	must(t, err)
	defer conn.Close()
	c := v1.NewClusterServiceClient(conn)
	ctx := context.Background()
	req := func(token, name string, csr []byte) *v1.JoinRequest {
		return &v1.JoinRequest{Token: token, NodeName: name, NodeId: strings.Repeat("ab", 16), CsrPem: string(csr)}
	}
	tests := []struct {
		name string
		req  *v1.JoinRequest
		code codes.Code
		want string
	}{
		{"wrong token", req("abcdef.zzzzzzzzzzzzzzzz", "n9", csr), codes.Unauthenticated, "join token is not valid"},
		{"malformed token", req("open sesame", "n9", csr), codes.InvalidArgument, "token:"},
		{"malformed CSR", req(clusterToken, "n9", []byte("garbage")), codes.InvalidArgument, "csr_pem:"},
		{"CSR for another name", req(clusterToken, "n8", csr), codes.InvalidArgument, "csr_pem:"},
		{"empty", &v1.JoinRequest{}, codes.InvalidArgument, "token:"},
		{"forwarded", nil, codes.FailedPrecondition, "not forwarded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cctx := ctx
			if tt.req == nil {
				tt.req = req(clusterToken, "n9", csr)
				cctx = toNode(ctx, "n1-elsewhere")
			}
			_, err := c.Join(cctx, tt.req)
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Join = %v, want %v containing %q", err, tt.code, tt.want)
			}
			if n := len(ns[0].node.Members()); n != 1 {
				t.Fatalf("members %d", n)
			}
		})
	}
	list, err := v1.NewClusterServiceClient(ns[0].dial(t, "admin")).ListJoinTokens(ctx, &v1.ListJoinTokensRequest{})
	must(t, err)
	if u := list.GetTokens()[0].GetUses(); u != 0 {
		t.Fatalf("refused joins counted %d token uses", u)
	}
	resp, err := c.Join(ctx, req(clusterToken, "n9", csr))
	must(t, err)
	certs, err := pki.ParseCerts([]byte(resp.GetCertificatePem()))
	must(t, err)
	if certs[0].Subject.CommonName != "n9" || !pki.IsNode(certs[0]) || len(resp.GetGossipKeys()) != 1 || resp.GetClusterId() != "lab" || resp.GetSignedBy() != "n1" {
		t.Fatalf("Join response: %v", resp)
	}
	// A standalone agent answers Join (no certificate needed to get there)
	// with how to enroll it.
	solo := startAgent(t)
	_, err = v1.NewClusterServiceClient(solo.dial(t, "")).Join(ctx, req(clusterToken, "n9", csr))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "not in a cluster") {
		t.Fatalf("Join on a standalone agent: %v", err)
	}
}

func TestPublicMethods(t *testing.T) {
	var pub []string
	for m := range methodRoles {
		if public(m) {
			pub = append(pub, m)
		}
	}
	if !slices.Equal(pub, []string{v1.ClusterService_Join_FullMethodName}) {
		t.Fatalf("methods callable without a certificate: %v; only Join may be", pub)
	}
}

// TestForwarding: a call through one member reaches another, keeps the
// caller's identity and role, and an attacker with an operator
// certificate (or a node certificate) gains nothing by forwarding.
func TestForwarding(t *testing.T) {
	ns := startCluster(t, "n1", "n2", "n3")
	ctx := context.Background()
	via := ns[0]
	nodeOn := func(who, target string) (string, error) {
		n, err := v1.NewNodeServiceClient(via.dial(t, who)).GetNode(toNode(ctx, target), &v1.GetNodeRequest{})
		return n.GetName(), err
	}
	for _, target := range []string{"n2", "n3", "n1"} {
		if got, err := nodeOn("reader", target); err != nil || got != target {
			t.Fatalf("GetNode via n1 on %s = %q, %v", target, got, err)
		}
	}
	// A mutation runs on the target, recorded as the caller via the member.
	op, err := v1.NewNodeServiceClient(via.dial(t, "operator")).CheckHealth(toNode(ctx, "n3"), &v1.CheckHealthRequest{Checks: []string{"node-certificate"}})
	must(t, err)
	got, err := v1.NewOperationServiceClient(ns[2].dial(t, "reader")).GetOperation(ctx, &v1.GetOperationRequest{OperationId: op.GetId()})
	must(t, err)
	if got.GetRequestedBy() != "operator-user (via n1)" {
		t.Fatalf("operation on n3 requested by %q", got.GetRequestedBy())
	}
	if _, err := v1.NewOperationServiceClient(via.dial(t, "reader")).GetOperation(ctx, &v1.GetOperationRequest{OperationId: op.GetId()}); status.Code(err) != codes.NotFound {
		t.Fatalf("the forwarded operation also exists on n1: %v", err)
	}

	// A server stream is relayed: n3 serves a health status n1 does not have.
	ns[2].srv.healthS.SetServingStatus("probe", healthpb.HealthCheckResponse_SERVING)
	watch := func(c *grpc.ClientConn, cctx context.Context) healthpb.HealthCheckResponse_ServingStatus {
		cctx, cancel := context.WithTimeout(cctx, 5*time.Second)
		defer cancel()
		w, err := healthpb.NewHealthClient(c).Watch(cctx, &healthpb.HealthCheckRequest{Service: "probe"})
		must(t, err)
		r, err := w.Recv()
		must(t, err)
		return r.GetStatus()
	}
	if s := watch(via.dial(t, "reader"), toNode(ctx, "n3")); s != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch via n1 on n3 = %v", s)
	}
	if s := watch(via.dial(t, "reader"), ctx); s != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
		t.Fatalf("Watch on n1 itself = %v", s)
	}

	// REST forwards with the Grpc-Metadata-Debvisor-Node header.
	req, _ := http.NewRequest("GET", "https://"+via.addr.REST+"/v1/node", nil)
	req.Header.Set("Grpc-Metadata-Debvisor-Node", "n2")
	req.Header.Set("Grpc-Metadata-X-Debvisor-Forwarded-Cert-Bin", "spoofed")
	resp, err := restClient(t, via.testAgent, "reader").Do(req)
	must(t, err)
	var rn struct {
		Name string `json:"name"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&rn)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || rn.Name != "n2" {
		t.Fatalf("REST via n1 on n2: %s %q", resp.Status, rn.Name)
	}

	adminCert := via.pki.clients["admin"].Cert.Raw
	forged := func(cctx context.Context, kv ...string) context.Context {
		return metadata.AppendToOutgoingContext(cctx, kv...)
	}
	deletePool := func(c *grpc.ClientConn, cctx context.Context) error {
		_, err := v1.NewStorageServiceClient(c).DeletePool(cctx, &v1.DeletePoolRequest{Name: "default"})
		return err
	}
	local, err := grpc.NewClient("passthrough:///local", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", via.cfg.Socket)
		}))
	must(t, err)
	defer local.Close()
	attacks := []struct {
		name string
		call func() error
		code codes.Code
		want string
	}{
		{"operator forwards an admin call", func() error { return deletePool(via.dial(t, "operator"), toNode(ctx, "n2")) },
			codes.PermissionDenied, "requires role admin"},
		{"operator sends a forwarded admin certificate directly", func() error {
			return deletePool(ns[1].dial(t, "operator"), forged(ctx, mdForwardedCert, string(adminCert)))
		}, codes.PermissionDenied, "only cluster members"},
		{"operator sends a forwarded admin certificate through a member", func() error {
			return deletePool(via.dial(t, "operator"), forged(toNode(ctx, "n2"), mdForwardedCert, string(adminCert)))
		}, codes.PermissionDenied, "only cluster members"},
		{"operator claims admin in gateway metadata", func() error {
			return deletePool(ns[1].dial(t, "operator"), forged(ctx, mdIdentity, "root", mdRole, "admin"))
		}, codes.PermissionDenied, "requires role admin"},
		{"node forwards an operator certificate for an admin call", func() error {
			return deletePool(ns[1].dial(t, "node"), forged(ctx, mdForwardedCert, string(via.pki.clients["operator"].Cert.Raw)))
		}, codes.PermissionDenied, "requires role admin"},
		{"node forwards an expired admin certificate", func() error {
			return deletePool(ns[1].dial(t, "node"), forged(ctx, mdForwardedCert, string(via.pki.clients["expired"].Cert.Raw)))
		}, codes.Unauthenticated, "expired"},
		{"node forwards another cluster's admin certificate", func() error {
			return deletePool(ns[1].dial(t, "node"), forged(ctx, mdForwardedCert, string(via.pki.clients["foreign"].Cert.Raw)))
		}, codes.Unauthenticated, "not issued by this cluster's CA"},
		{"node forwards garbage", func() error {
			return deletePool(ns[1].dial(t, "node"), forged(ctx, mdForwardedCert, "garbage"))
		}, codes.Unauthenticated, "forwarded client certificate"},
		{"node forwards another node", func() error {
			return deletePool(ns[1].dial(t, "node"), forged(ctx, mdForwardedCert, string(via.pki.clients["node"].Cert.Raw)))
		}, codes.PermissionDenied, "requires role admin"},
		{"node calls as itself", func() error {
			_, err := v1.NewNodeServiceClient(ns[1].dial(t, "node")).GetNode(ctx, &v1.GetNodeRequest{})
			return err
		}, codes.PermissionDenied, "requires role reader"},
		{"unknown node", func() error { _, err := nodeOn("reader", "n9"); return err },
			codes.NotFound, `node "n9" is not a member of cluster lab (members: n1, n2, n3)`},
		{"two nodes", func() error {
			return deletePool(via.dial(t, "admin"), forged(toNode(ctx, "n2"), v1.NodeMetadataKey, "n3"))
		},
			codes.InvalidArgument, "one node per call"},
		{"local socket", func() error { return deletePool(local, toNode(ctx, "n2")) },
			codes.FailedPrecondition, "without a client certificate"},
		{"foreign certificate", func() error { _, err := nodeOn("foreign", "n2"); return err },
			codes.Unauthenticated, "not issued by this cluster's CA"},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			err := a.call()
			if status.Code(err) != a.code || !strings.Contains(err.Error(), a.want) {
				t.Fatalf("got %v, want %v containing %q", err, a.code, a.want)
			}
		})
	}
	// The admin's own forwarded call does reach n2's storage service (not
	// configured there: FailedPrecondition, not PermissionDenied).
	if err := deletePool(via.dial(t, "admin"), toNode(ctx, "n2")); status.Code(err) != codes.FailedPrecondition || !strings.HasPrefix(status.Convert(err).Message(), "node n2: ") {
		t.Fatalf("admin DeletePool via n1 on n2: %v", err)
	}
	// A reader certificate forwarded by a node is a reader on the target.
	n, err := v1.NewNodeServiceClient(ns[1].dial(t, "node")).GetNode(forged(ctx, mdForwardedCert, string(via.pki.clients["reader"].Cert.Raw)), &v1.GetNodeRequest{})
	if err != nil || n.GetName() != "n2" {
		t.Fatalf("node forwarding a reader: %v %v", n, err)
	}
}

// TestForwardNotInCluster: a standalone agent refuses to forward.
func TestForwardNotInCluster(t *testing.T) {
	a := startAgent(t)
	_, err := v1.NewNodeServiceClient(a.dial(t, "reader")).GetNode(toNode(context.Background(), "n2"), &v1.GetNodeRequest{})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "not in a cluster") {
		t.Fatalf("forward on a standalone agent: %v", err)
	}
	_, err = v1.NewClusterServiceClient(a.dial(t, "reader")).ListMembers(context.Background(), &v1.ListMembersRequest{})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "debvisor-agent cluster init") {
		t.Fatalf("ListMembers on a standalone agent: %v", err)
	}
}
