package cluster

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/internal/pki"
	"github.com/debvisor/debvisor/nodeagent/discovery"
	"github.com/debvisor/debvisor/nodeagent/fault"
	"github.com/debvisor/debvisor/osimage"
)

// Enrolled reports whether the node has cluster state.
func Enrolled(agentStateDir string) bool {
	_, err := os.Stat(filepath.Join(stateDir(agentStateDir), stateFile))
	return err == nil
}

// BootstrapOptions are the choices of the first node.
type BootstrapOptions struct {
	// ClusterID names the cluster (a host name label); random when empty.
	ClusterID string
	// Token, when set, is registered as a join token for TokenTTL (the
	// default when 0): a preseeded token other nodes' preseeds carry.
	Token    string
	TokenTTL time.Duration
}

// Bootstrapped is what the first node made.
type Bootstrapped struct {
	ClusterID string
	CAHash    string
	// CreatedCA is false when an existing CA (made beforehand, or this
	// node's) was used.
	CreatedCA bool
}

// Bootstrap makes this node the first member of a new cluster: the CA
// (unless the CA certificate and key are already there), this node's
// certificate (unless a valid one exists), the gossip key, and the
// preseeded token. The cluster state is written last.
func Bootstrap(ctx context.Context, cfg Config, o BootstrapOptions) (*Bootstrapped, error) {
	cfg.defaults()
	if Enrolled(cfg.StateDir) {
		return nil, fault.Errorf(fault.AlreadyExists, "this node is already in a cluster (state in %s)", stateDir(cfg.StateDir))
	}
	if o.ClusterID == "" {
		o.ClusterID = "dv-" + randomHex(4)
	}
	if err := rules.CheckHostname(o.ClusterID); err != nil {
		return nil, fault.Invalidf("cluster id", "%w", err)
	}
	if o.Token != "" {
		if _, _, err := rules.ParseJoinToken(o.Token); err != nil {
			return nil, fault.Invalidf("token", "%w", err)
		}
	}
	if err := rules.CheckJoinTokenTTL(o.TokenTTL); err != nil {
		return nil, fault.Invalidf("token ttl", "%w", err)
	}
	ca, created, err := bootstrapCA(cfg, o.ClusterID)
	if err != nil {
		return nil, err
	}
	if err := ensureNodeCert(cfg, ca); err != nil {
		return nil, err
	}
	dir := stateDir(cfg.StateDir)
	if err := writeJSON(filepath.Join(dir, keyringFile), keyring{Keys: [][]byte{newGossipKey()}}); err != nil {
		return nil, err
	}
	tokens, err := OpenTokenStore(filepath.Join(dir, tokensFile), cfg.Now)
	if err != nil {
		return nil, err
	}
	if o.Token != "" {
		if _, err := tokens.Add(o.Token, o.TokenTTL, "preseeded at bootstrap"); err != nil && !fault.Is(err, fault.AlreadyExists) {
			return nil, err
		}
	}
	if err := writeJSON(filepath.Join(dir, stateFile), state{ClusterID: o.ClusterID, NodeID: newNodeID()}); err != nil {
		return nil, err
	}
	cfg.Log.Info("cluster bootstrapped", "cluster", o.ClusterID, "ca_cert_hash", pki.CAHash(ca.Cert), "new_ca", created, "node", cfg.NodeName)
	return &Bootstrapped{ClusterID: o.ClusterID, CAHash: pki.CAHash(ca.Cert), CreatedCA: created}, nil
}

// bootstrapCA uses the CA certificate and key when both exist, else makes
// a new CA (refusing to replace a CA certificate whose key is elsewhere).
func bootstrapCA(cfg Config, clusterID string) (*pki.CA, bool, error) {
	_, certErr := os.Stat(cfg.CAFile)
	_, keyErr := os.Stat(cfg.CAKeyFile)
	switch {
	case certErr == nil && keyErr == nil:
		ca, err := pki.LoadCA(pki.Files{Cert: cfg.CAFile, Key: cfg.CAKeyFile})
		if err != nil {
			return nil, false, fmt.Errorf("cluster CA: %w", err)
		}
		if !keyMatches(ca, ca.Cert) {
			return nil, false, fmt.Errorf("cluster CA: %s is not the key of %s", cfg.CAKeyFile, cfg.CAFile)
		}
		return ca, false, nil
	case certErr == nil:
		return nil, false, fault.Errorf(fault.FailedPrecondition, "%s exists but its key %s does not: a bootstrapping node must hold the CA key (or remove the CA to make a new one)", cfg.CAFile, cfg.CAKeyFile)
	}
	ca, err := pki.NewCA(clusterID, pki.Options{Now: cfg.Now})
	if err != nil {
		return nil, false, err
	}
	if err := pki.Save(pki.Files{Cert: cfg.CAFile, Key: cfg.CAKeyFile}, ca.Cert, ca.Key, true); err != nil {
		return nil, false, fmt.Errorf("save the cluster CA: %w", err)
	}
	return ca, true, nil
}

// ensureNodeCert keeps a node certificate the CA signed for this name and
// still valid for a while, else issues one.
func ensureNodeCert(cfg Config, ca *pki.CA) error {
	if b, err := os.ReadFile(cfg.CertFile); err == nil {
		if certs, err := pki.ParseCerts(b); err == nil {
			c := certs[0]
			if c.CheckSignatureFrom(ca.Cert) == nil && c.Subject.CommonName == cfg.NodeName && pki.IsNode(c) && cfg.Now().Add(14*24*time.Hour).Before(c.NotAfter) {
				if _, err := tlsKeyPair(cfg); err == nil {
					return nil
				}
			}
		}
	}
	is, err := ca.IssueNode(cfg.NodeName, localHosts(cfg), pki.Options{Now: cfg.Now})
	if err != nil {
		return err
	}
	return pki.Save(pki.Files{Cert: cfg.CertFile, Key: cfg.KeyFile}, is.Cert, is.Key, true)
}

func tlsKeyPair(cfg Config) (crypto.Signer, error) {
	b, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	return pki.ParseKey(b)
}

// localHosts are the names and addresses a node certificate should carry:
// every interface address and the advertise address.
func localHosts(cfg Config) []string {
	var out []string
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
				out = append(out, ipn.IP.String())
			}
		}
	}
	if h, _, err := net.SplitHostPort(cfg.Advertise); err == nil && h != "" && !slices.Contains(out, h) {
		out = append(out, h)
	}
	if !slices.Contains(out, "localhost") {
		out = append(out, "localhost")
	}
	return out
}

// JoinOptions say how to find the cluster and prove the right to join.
type JoinOptions struct {
	Token  string
	CAHash string
	// Addrs are members' API addresses (host:port) to try first.
	Addrs []string
	// MDNS browses the link for members of the pinned cluster.
	MDNS bool
	// Browse replaces mDNS browsing (tests); nil uses discovery.Browse.
	Browse func(ctx context.Context) ([]discovery.Peer, error)
	// Retry is the pause between rounds when no member could be reached
	// (default 1 s). Refusals (bad token, wrong CA) end the join at once.
	Retry time.Duration
}

// Joined says how a join went.
type Joined struct {
	ClusterID, Via, SignedBy string
}

// JoinCluster enrolls this node: it makes a key and a CSR, finds a member
// (the given addresses, then mDNS), checks that member's certificate
// against the pinned CA hash before sending anything, sends the token and
// the CSR, and installs what comes back. It retries while no member can be
// reached and stops at the first refusal; nothing is written unless the
// join succeeded.
func JoinCluster(ctx context.Context, cfg Config, o JoinOptions) (*Joined, error) {
	cfg.defaults()
	if Enrolled(cfg.StateDir) {
		return nil, fault.Errorf(fault.AlreadyExists, "this node is already in a cluster (state in %s)", stateDir(cfg.StateDir))
	}
	if _, _, err := rules.ParseJoinToken(o.Token); err != nil {
		return nil, fault.Invalidf("token", "%w", err)
	}
	pin, err := rules.ParseCACertHash(o.CAHash)
	if err != nil {
		return nil, fault.Invalidf("ca cert hash", "%w", err)
	}
	if len(o.Addrs) == 0 && !o.MDNS {
		return nil, fault.Invalidf("join", "no member address given and mDNS is off: nothing to join")
	}
	if o.Retry == 0 {
		o.Retry = time.Second
	}
	if o.Browse == nil {
		o.Browse = func(ctx context.Context) ([]discovery.Peer, error) {
			// One member of the pinned cluster is enough to start with.
			return discovery.Browse(ctx, 1500*time.Millisecond, cfg.Log, func(p discovery.Peer) bool { return p.CAHash == o.CAHash })
		}
	}
	csrPEM, key, err := pki.NewNodeCSR(cfg.NodeName, localHosts(cfg))
	if err != nil {
		return nil, fault.Invalidf("node name", "%w", err)
	}
	req := JoinRequest{Token: o.Token, NodeName: cfg.NodeName, NodeID: newNodeID(), CSRPEM: csrPEM}
	for round := 0; ; round++ {
		candidates := append([]string(nil), o.Addrs...)
		if o.MDNS {
			peers, err := o.Browse(ctx)
			if err != nil {
				cfg.Log.Warn("mDNS browse", "err", err)
			}
			candidates = append(candidates, mdnsCandidates(peers, o.CAHash)...)
		}
		for _, addr := range candidates {
			res, err := joinVia(ctx, cfg, addr, pin, req)
			if err == nil {
				if err := install(cfg, key, req.NodeID, pin, res); err != nil {
					return nil, err
				}
				cfg.Log.Info("joined the cluster", "cluster", res.ClusterID, "via", addr, "signed_by", res.SignedBy)
				return &Joined{ClusterID: res.ClusterID, Via: addr, SignedBy: res.SignedBy}, nil
			}
			if !transient(err) {
				return nil, err
			}
			cfg.Log.Info("join: member not reachable, trying the next", "address", addr, "err", err)
		}
		if round == 0 && len(candidates) == 0 {
			cfg.Log.Info("join: waiting for a member of the pinned cluster to appear on mDNS", "ca_cert_hash", o.CAHash)
		}
		select {
		case <-ctx.Done():
			return nil, fault.Errorf(fault.DeadlineExceeded, "join: no member of the cluster with CA %s could be reached (%w)", o.CAHash, ctx.Err())
		case <-time.After(o.Retry):
		}
	}
}

// mdnsCandidates are the API addresses of advertised members of the
// pinned cluster, members holding the CA first (they sign without a relay).
// The advertisement is only a hint: TLS checks the pin.
func mdnsCandidates(peers []discovery.Peer, caHash string) []string {
	var signers, others []string
	for _, p := range peers {
		if p.CAHash != caHash {
			continue
		}
		if p.Signer {
			signers = append(signers, p.APIAddrs()...)
		} else {
			others = append(others, p.APIAddrs()...)
		}
	}
	return append(signers, others...)
}

type transientError struct{ error }

func (e transientError) Unwrap() error { return e.error }

func transient(err error) bool {
	var t transientError
	return errors.As(err, &t)
}

// joinVia sends the request to one member. Unreachable members are
// transient errors; a member with the wrong CA, and every refusal, are not.
func joinVia(ctx context.Context, cfg Config, addr string, pin []byte, req JoinRequest) (*JoinResult, error) {
	check := &pinCheck{pin: pin, now: cfg.Now}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentialsFor(check)))
	if err != nil {
		return nil, fault.Invalidf("join", "%s: %w", addr, err)
	}
	defer conn.Close()
	cctx, cancel := withCallTimeout(ctx)
	defer cancel()
	resp, err := v1.NewClusterServiceClient(conn).Join(cctx, joinRequestProto(req))
	if m := check.Mismatch(); m != "" {
		return nil, fault.Errorf(fault.PermissionDenied, "join via %s: refusing to send the token: %s", addr, m)
	}
	if err != nil {
		st, _ := status.FromError(err)
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			if ctx.Err() == nil {
				return nil, transientError{fmt.Errorf("join via %s: %s", addr, st.Message())}
			}
		}
		return nil, fault.Errorf(fault.KindOf(err), "join via %s: the cluster refused: %s", addr, st.Message())
	}
	return joinResultFromProto(resp), nil
}

// install checks what the cluster sent and writes it: the CA bundle, the
// certificate (which must carry our key, our name and chain to the pinned
// CA), the key, the gossip keyring, and the state last.
func install(cfg Config, key crypto.Signer, nodeID string, pin []byte, res *JoinResult) error {
	bad := func(format string, args ...any) error {
		return fault.Errorf(fault.Internal, "the cluster's answer is unusable: "+format, args...)
	}
	cas, err := pki.ParseCerts(res.CABundlePEM)
	if err != nil {
		return bad("CA bundle: %v", err)
	}
	certs, err := pki.ParseCerts(res.CertPEM)
	if err != nil {
		return bad("certificate: %v", err)
	}
	cert := certs[0]
	var pinned *x509.Certificate
	for _, c := range cas {
		if pki.CAHash(c) == rules.FormatCACertHash(pin) {
			pinned = c
		}
	}
	if pinned == nil {
		return bad("the CA bundle does not contain the pinned CA")
	}
	type equaler interface{ Equal(x crypto.PublicKey) bool }
	if pub, ok := key.Public().(equaler); !ok || !pub.Equal(cert.PublicKey) {
		return bad("the certificate is not for the key this node made")
	}
	if cert.Subject.CommonName != cfg.NodeName || !pki.IsNode(cert) || cert.CheckSignatureFrom(pinned) != nil {
		return bad("the certificate is not a node certificate for %q signed by the pinned CA", cfg.NodeName)
	}
	if err := rules.CheckHostname(res.ClusterID); err != nil {
		return bad("cluster id: %v", err)
	}
	keys := keyring{Keys: res.GossipKeys}
	if err := keys.validate(); err != nil {
		return bad("gossip keys: %v", err)
	}
	if err := writeFileAtomic(cfg.CAFile, res.CABundlePEM, 0o644); err != nil {
		return err
	}
	if err := pki.Save(pki.Files{Cert: cfg.CertFile, Key: cfg.KeyFile}, cert, key, true); err != nil {
		return err
	}
	dir := stateDir(cfg.StateDir)
	if err := writeJSON(filepath.Join(dir, keyringFile), keys); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, stateFile), state{ClusterID: res.ClusterID, NodeID: nodeID, Peers: res.GossipPeers})
}

// Enroll acts on the enroll file, if there is one: it bootstraps or joins
// as the file says and removes the file once the node is enrolled (the
// token inside is not needed again). joinAddrs and mdns come from the agent
// configuration and apply when the file names no addresses. It returns
// what it did ("" when nothing).
func Enroll(ctx context.Context, cfg Config, file string, joinAddrs []string, mdns bool) (string, error) {
	cfg.defaults()
	if file == "" {
		return "", nil
	}
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	} else if err != nil {
		return "", err
	}
	if Enrolled(cfg.StateDir) {
		cfg.Log.Info("already in a cluster; removing the enroll file", "file", file)
		return "", os.Remove(file)
	}
	e, err := osimage.ParseClusterEnrollment(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	var did string
	if e.Bootstrap {
		b, err := Bootstrap(ctx, cfg, BootstrapOptions{ClusterID: e.Name, Token: e.Token, TokenTTL: e.TTL()})
		if err != nil {
			return "", fmt.Errorf("cluster bootstrap: %w", err)
		}
		did = "bootstrapped cluster " + b.ClusterID + " (CA " + b.CAHash + ")"
	} else {
		addrs := e.Join
		if len(addrs) == 0 {
			addrs = joinAddrs
		}
		j, err := JoinCluster(ctx, cfg, JoinOptions{Token: e.Token, CAHash: e.CACertHash, Addrs: addrs, MDNS: mdns})
		if err != nil {
			return "", fmt.Errorf("cluster join: %w", err)
		}
		did = "joined cluster " + j.ClusterID + " via " + j.Via
	}
	if err := os.Remove(file); err != nil {
		return did, err
	}
	return did, nil
}
