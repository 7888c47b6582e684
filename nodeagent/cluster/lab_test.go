package cluster_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/pki"
	"github.com/debvisor/debvisor/testenv/agent"
	"github.com/debvisor/debvisor/testenv/netns"
)

// lab is a set of real `debvisor-agent serve` processes, each in its own
// network namespace, on LAN A (10.88.0.0/24, mDNS reaches everyone) and
// LAN B (10.88.1.0/24), routed to A by the switch namespace. The test
// itself talks to the agents from a client namespace on LAN A.
type lab struct {
	t        testing.TB
	dir      string
	bin      string
	a, b     *netns.LAN
	cli      *netns.Namespace
	mu       sync.Mutex
	nodes    map[string]*labNode
	stopOnce sync.Once
	roots    *x509.CertPool
	caHash   string
	certs    map[string]tls.Certificate // client certificates by role
}

type labNode struct {
	name, ip string
	ns       *netns.Namespace
	agent    *agent.Agent
	dir      string
}

const (
	labToken = "dvtest.0123456789abcdef"
	apiPort  = "7443"
)

var (
	buildOnce sync.Once
	agentBin  string
	buildErr  error
	// buildDirs are removed when the test binary ends (TestMain).
	buildDirs []string
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range buildDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

func newLab(t testing.TB) *lab {
	t.Helper()
	netns.Require(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dvlab-bin")
		if err != nil {
			buildErr = err
			return
		}
		buildDirs = append(buildDirs, dir)
		agentBin, buildErr = agent.Build(context.Background(), dir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	l := &lab{t: t, dir: t.TempDir(), bin: agentBin, nodes: map[string]*labNode{}, certs: map[string]tls.Certificate{}}
	l.a = netns.NewLAN(t, "sw")
	l.b = l.a.AddBridge(t, "br1")
	l.a.Gateway(t, "10.88.0.254/24")
	l.b.Gateway(t, "10.88.1.254/24")
	l.cli = netns.Add(t, "cli")
	l.a.Plug(t, l.cli, "eth0", "10.88.0.250/24")
	l.cli.MustIP(t, "route", "add", "default", "via", "10.88.0.254")
	return l
}

// host makes the namespace of a node at ip on its LAN (routed to the other).
func (l *lab) host(name, ip string) *netns.Namespace {
	ns := netns.Add(l.t, name)
	lan, gw := l.a, "10.88.0.254"
	if strings.HasPrefix(ip, "10.88.1.") {
		lan, gw = l.b, "10.88.1.254"
	}
	lan.Plug(l.t, ns, "eth0", ip+"/24")
	ns.MustIP(l.t, "route", "add", "default", "via", gw)
	return ns
}

// start runs an agent for name at ip with the given enroll file content and
// cluster settings; it returns when the agent serves (or failed to).
func (l *lab) start(name, ip, enroll string, mdns bool, join ...string) (*labNode, error) {
	n := &labNode{name: name, ip: ip, ns: l.host(name, ip), dir: filepath.Join(l.dir, name)}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return nil, err
	}
	enrollFile := filepath.Join(n.dir, "enroll.yaml")
	if err := os.WriteFile(enrollFile, []byte(enroll), 0o600); err != nil {
		return nil, err
	}
	extra := fmt.Sprintf("cluster:\n  enabled: true\n  bind: 0.0.0.0:7946\n  mdns: %v\n  enroll_file: %s\n", mdns, enrollFile)
	if len(join) > 0 {
		extra += "  join: [" + strings.Join(join, ", ") + "]\n"
	}
	a, err := agent.Start(context.Background(), agent.Options{
		Binary: l.bin, Dir: n.dir, NodeName: name, Netns: n.ns.Name, Listen: "0.0.0.0:" + apiPort,
		NoPKI: true, NoLibvirt: true, ExtraConfig: extra, StartTimeout: 90 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	n.agent = a
	l.mu.Lock()
	l.nodes[name] = n
	l.mu.Unlock()
	l.t.Cleanup(func() {
		l.stopAll()
		if l.t.Failed() || os.Getenv("DEBVISOR_LAB_LOGS") != "" {
			l.t.Logf("%s log:\n%s", name, a.Log())
		}
	})
	return n, nil
}

// stopAll stops every agent at once: one by one, the last ones would each
// wait out their leave timeout for members that are already gone. The first
// node cleanup to run calls it, before any namespace is deleted (each
// namespace's cleanup was registered before its agent's).
func (l *lab) stopAll() {
	l.stopOnce.Do(func() {
		l.mu.Lock()
		nodes := make([]*labNode, 0, len(l.nodes))
		for _, n := range l.nodes {
			nodes = append(nodes, n)
		}
		l.mu.Unlock()
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.agent.Stop() }()
		}
		wg.Wait()
	})
}

// bootstrap starts the first node with a preseeded token and issues the
// client certificates the test uses from the CA it made.
func (l *lab) bootstrap(name, ip string) *labNode {
	l.t.Helper()
	n, err := l.start(name, ip, "bootstrap: true\nname: lab\ntoken: "+labToken+"\ntoken_ttl: 1h\n", true)
	if err != nil {
		l.t.Fatal(err)
	}
	ca, err := pki.LoadCA(pki.Files{Cert: filepath.Join(n.dir, "pki", "ca.crt"), Key: filepath.Join(n.dir, "pki", "ca.key")})
	if err != nil {
		l.t.Fatal(err)
	}
	l.roots = x509.NewCertPool()
	l.roots.AddCert(ca.Cert)
	l.caHash = pki.CAHash(ca.Cert)
	for _, r := range []pki.Role{pki.RoleReader, pki.RoleOperator, pki.RoleAdmin} {
		is, err := ca.IssueClient("lab-"+r.String(), r, pki.Options{})
		if err != nil {
			l.t.Fatal(err)
		}
		l.certs[r.String()] = tls.Certificate{Certificate: [][]byte{is.Cert.Raw}, PrivateKey: is.Key, Leaf: is.Cert}
		if err := pki.Save(pki.Files{Cert: filepath.Join(l.dir, r.String()+".crt"), Key: filepath.Join(l.dir, r.String()+".key")}, is.Cert, is.Key, true); err != nil {
			l.t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(l.dir, "ca.crt"), pki.EncodeCert(ca.Cert), 0o644); err != nil {
		l.t.Fatal(err)
	}
	return n
}

func (l *lab) joinEnroll(token string) string {
	return "token: " + token + "\nca_cert_hash: " + l.caHash + "\n"
}

// dial connects from the client namespace to node n's API as role.
func (l *lab) dial(n *labNode, role string) *grpc.ClientConn {
	l.t.Helper()
	tc := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: l.roots, ServerName: n.name, Certificates: []tls.Certificate{l.certs[role]}}
	c, err := grpc.NewClient("passthrough:///"+net.JoinHostPort(n.ip, apiPort),
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return l.cli.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { c.Close() })
	return c
}

// members asks node n (from the client namespace) whom it sees.
func members(ctx context.Context, c *grpc.ClientConn) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	r, err := v1.NewClusterServiceClient(c).ListMembers(ctx, &v1.ListMembersRequest{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range r.GetMembers() {
		out = append(out, m.GetName())
	}
	return out, nil
}

// waitAll polls every node in conns until each lists exactly want, and
// returns when that happened.
func waitAll(t testing.TB, conns map[string]*grpc.ClientConn, want []string, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	last := map[string][]string{}
	for {
		done := true
		for name, c := range conns {
			got, err := members(context.Background(), c)
			if err != nil || !slices.Equal(got, want) {
				done = false
				last[name] = got
				if err != nil {
					last[name] = []string{"error: " + err.Error()}
				}
				break
			}
		}
		if done {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no agreement on %v within %s; last answers: %v", want, within, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func toNode(ctx context.Context, name string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, v1.NodeMetadataKey, name)
}

// buildDvctl builds the dvctl binary once per test binary.
var (
	dvctlOnce sync.Once
	dvctlBin  string
	dvctlErr  error
)

func buildDvctl(t testing.TB) string {
	t.Helper()
	dvctlOnce.Do(func() {
		if p := os.Getenv("DEBVISOR_DVCTL_BIN"); p != "" {
			dvctlBin = p
			return
		}
		dir, err := os.MkdirTemp("", "dvlab-dvctl")
		if err != nil {
			dvctlErr = err
			return
		}
		buildDirs = append(buildDirs, dir)
		dvctlBin = filepath.Join(dir, "dvctl")
		if out, err := exec.Command("go", "build", "-o", dvctlBin, "github.com/debvisor/debvisor/cmd/dvctl").CombinedOutput(); err != nil {
			dvctlErr = fmt.Errorf("build dvctl: %w\n%s", err, out)
		}
	})
	if dvctlErr != nil {
		t.Fatal(dvctlErr)
	}
	return dvctlBin
}

// dvctl runs dvctl in the client namespace against node n as role.
func (l *lab) dvctl(n *labNode, role string, args ...string) (string, error) {
	base := []string{"--config", filepath.Join(l.dir, "dvctl.yaml"), "--endpoint", net.JoinHostPort(n.ip, apiPort), "--server-name", n.name,
		"--ca", filepath.Join(l.dir, "ca.crt"), "--cert", filepath.Join(l.dir, role+".crt"), "--key", filepath.Join(l.dir, role+".key")}
	out, err := l.cli.Command(buildDvctl(l.t), append(base, args...)...).CombinedOutput()
	return string(out), err
}
