// Package cluster owns cluster formation and membership: enrollment (the
// first node bootstraps the CA and the gossip key; others join with a
// token and the CA hash, sending a CSR and receiving a node certificate),
// the join-token store (hashed, with expiry), signing join requests on
// nodes that hold the CA key, membership and failure detection with
// hashicorp/memberlist (SWIM gossip encrypted with the cluster keyring),
// and resolving member names for call forwarding. It speaks memberlist
// and, for enrollment, the agent's own gRPC API; mDNS discovery is
// nodeagent/discovery.
package cluster

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/debvisor/debvisor/internal/pki"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

// ErrNotEnrolled is returned by Open for a node that has neither
// bootstrapped nor joined a cluster.
var ErrNotEnrolled = errors.New("this node is not in a cluster")

// Config is what the cluster code needs from the agent's configuration.
type Config struct {
	// NodeName is the member name (the agent's node_name or host name).
	NodeName string
	// StateDir is the agent's state directory; cluster state lives in
	// StateDir/cluster.
	StateDir string
	// CAFile, CertFile and KeyFile are the agent's TLS files. A node holds
	// the CA when CAKeyFile (default: ca.key beside CAFile) exists.
	CAFile, CertFile, KeyFile string
	CAKeyFile                 string
	// Bind and Advertise are the gossip addresses (host:port).
	Bind, Advertise string
	// Version is the agent version members see.
	Version string
	Log     *slog.Logger
	// Now is the clock for token expiry and certificate validity.
	Now func() time.Time
	// Timing tunes failure detection; zero means LANTiming.
	Timing Timing
}

func (c *Config) defaults() {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.CAKeyFile == "" && c.CAFile != "" {
		c.CAKeyFile = filepath.Join(filepath.Dir(c.CAFile), "ca.key")
	}
	if c.Timing == (Timing{}) {
		c.Timing = LANTiming()
	}
}

// Timing is memberlist's failure-detection tuning.
type Timing struct {
	ProbeInterval, ProbeTimeout time.Duration
	// SuspicionMult times ProbeInterval (times log10 of the cluster size
	// for clusters over ten) is how long a suspect has to refute before it
	// is declared dead; SuspicionMaxMult bounds the longer timeout used
	// while few members confirm the suspicion.
	SuspicionMult, SuspicionMaxMult int
	GossipInterval                  time.Duration
	PushPullInterval                time.Duration
}

// LANTiming is tuned for one LAN: a stopped node is suspected within about
// two probe intervals and removed SuspicionMult..SuspicionMult*SuspicionMaxMult
// probe intervals later (1.5–3 s), then the removal gossips to everyone in
// a few 100 ms rounds. docs/architecture.md derives the bound (≤ 10 s).
func LANTiming() Timing {
	return Timing{
		ProbeInterval: 500 * time.Millisecond, ProbeTimeout: 250 * time.Millisecond,
		SuspicionMult: 3, SuspicionMaxMult: 2,
		GossipInterval: 100 * time.Millisecond, PushPullInterval: 15 * time.Second,
	}
}

// FailureDetectionBound is the longest LANTiming should take, for a cluster
// of up to ten members, from a node stopping to every member dropping it:
// a full probe round to reach it, the probe and indirect probes, the longest
// suspicion timeout and a few gossip rounds, with slack for loaded hosts.
func (t Timing) FailureDetectionBound(members int) time.Duration {
	if members < 2 {
		members = 2
	}
	round := time.Duration(members-1) * t.ProbeInterval
	suspicion := time.Duration(t.SuspicionMult*t.SuspicionMaxMult) * t.ProbeInterval
	return round + t.ProbeInterval + suspicion + 10*t.GossipInterval
}

// Member is one node of the cluster as this node sees it.
type Member struct {
	Name            string
	NodeID          string
	APIAddr         string
	GossipAddr      string
	Version         string
	HoldsCA         bool
	CertFingerprint string
	Self            bool
}

// meta is the memberlist node metadata (at most 512 bytes).
type meta struct {
	ID      string `json:"id"`
	API     string `json:"api,omitempty"`
	Version string `json:"v,omitempty"`
	CA      bool   `json:"ca,omitempty"`
	FP      string `json:"fp,omitempty"`
}

// Node is this agent's membership in its cluster.
type Node struct {
	cfg     Config
	log     *slog.Logger
	st      state
	keys    keyring
	tokens  *TokenStore // nil unless the node holds the CA
	caHash  string
	caBytes []byte

	mu   sync.RWMutex
	ml   *memberlist.Memberlist
	meta []byte
	self Member

	ready   chan struct{}
	changed chan struct{}
}

// Open loads an enrolled node's cluster state; ErrNotEnrolled (wrapped in
// a FailedPrecondition fault) when there is none.
func Open(cfg Config) (*Node, error) {
	cfg.defaults()
	dir := stateDir(cfg.StateDir)
	var st state
	if err := readJSON(filepath.Join(dir, stateFile), &st); errors.Is(err, os.ErrNotExist) {
		return nil, fault.Errorf(fault.FailedPrecondition, "%w: no cluster state in %s (bootstrap one with `debvisor-agent cluster init`, or join with `debvisor-agent cluster join ADDRESS --token … --ca-cert-hash …`)", ErrNotEnrolled, dir)
	} else if err != nil {
		return nil, err
	}
	if err := st.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	var keys keyring
	if err := readJSON(filepath.Join(dir, keyringFile), &keys); err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	if err := keys.validate(); err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Log, st: st, keys: keys, ready: make(chan struct{}), changed: make(chan struct{}, 1)}
	leaf, ca, caPEM, err := loadIdentity(cfg)
	if err != nil {
		return nil, err
	}
	n.caBytes = caPEM
	n.caHash = pki.CAHash(ca)
	if _, err := os.Stat(cfg.CAKeyFile); err == nil {
		signer, err := pki.LoadCA(pki.Files{Cert: cfg.CAFile, Key: cfg.CAKeyFile})
		if err != nil {
			return nil, fmt.Errorf("cluster CA: %w", err)
		}
		if !keyMatches(signer, ca) {
			return nil, fmt.Errorf("cluster CA: %s is not the key of the CA that signed this node", cfg.CAKeyFile)
		}
		if n.tokens, err = OpenTokenStore(filepath.Join(dir, tokensFile), cfg.Now); err != nil {
			return nil, err
		}
	}
	n.self = Member{
		Name: cfg.NodeName, NodeID: st.NodeID, Version: cfg.Version, HoldsCA: n.tokens != nil,
		CertFingerprint: pki.Fingerprint(leaf), Self: true,
	}
	return n, nil
}

// loadIdentity reads the node certificate and the CA bundle and returns the
// node's leaf, the CA in the bundle that signed it, and the bundle's PEM.
func loadIdentity(cfg Config) (*x509.Certificate, *x509.Certificate, []byte, error) {
	caPEM, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("cluster CA bundle: %w", err)
	}
	cas, err := pki.ParseCerts(caPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", cfg.CAFile, err)
	}
	certPEM, err := os.ReadFile(cfg.CertFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("node certificate: %w", err)
	}
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", cfg.CertFile, err)
	}
	leaf := certs[0]
	for _, ca := range cas {
		if leaf.CheckSignatureFrom(ca) == nil {
			return leaf, ca, caPEM, nil
		}
	}
	return nil, nil, nil, fmt.Errorf("node certificate %s was not signed by a CA in %s", cfg.CertFile, cfg.CAFile)
}

func keyMatches(ca *pki.CA, cert *x509.Certificate) bool {
	type equaler interface{ Equal(x crypto.PublicKey) bool }
	pub, ok := ca.Key.Public().(equaler)
	return ok && pub.Equal(cert.PublicKey) && ca.Cert.Equal(cert)
}

// ClusterID is the cluster's id.
func (n *Node) ClusterID() string { return n.st.ClusterID }

// Name is this node's member name.
func (n *Node) Name() string { return n.cfg.NodeName }

// CAHash is the pin joining nodes are given.
func (n *Node) CAHash() string { return n.caHash }

// HoldsCA reports whether this node signs join requests and keeps tokens.
func (n *Node) HoldsCA() bool { return n.tokens != nil }

// Tokens is the join token store; nil unless HoldsCA.
func (n *Node) Tokens() *TokenStore { return n.tokens }

// Ready is closed once gossip runs (Run has created the memberlist).
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Run creates the memberlist once the API address is known (apiAddr blocks
// until the API listens), joins the peers remembered from the last run,
// keeps the remembered peer list current, and on ctx's end leaves the
// cluster gracefully (others drop this node at once instead of after the
// failure-detection time).
func (n *Node) Run(ctx context.Context, apiAddr func(context.Context) (string, error)) error {
	api, err := apiAddr(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	ml, err := n.start(api)
	if err != nil {
		return err
	}
	close(n.ready)
	if len(n.st.Peers) > 0 {
		n.rejoin()
	}
	// Members remembered from the last run may be back later: retry while
	// alone. New members arrive by gossip and mDNS.
	retry := time.NewTicker(5 * time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			n.log.Info("leaving the cluster")
			if err := ml.Leave(2 * time.Second); err != nil {
				n.log.Warn("leave", "err", err)
			}
			n.savePeers()
			return ml.Shutdown()
		case <-n.changed:
			n.savePeers()
		case <-retry.C:
			if ml.NumMembers() == 1 && len(n.st.Peers) > 0 {
				n.rejoin()
			}
		}
	}
}

func (n *Node) start(api string) (*memberlist.Memberlist, error) {
	c := memberlist.DefaultLANConfig()
	c.Name = n.cfg.NodeName
	host, port, err := splitHostPort(n.cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster.bind: %w", err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	c.BindAddr, c.BindPort, c.AdvertisePort = host, port, port
	if n.cfg.Advertise != "" {
		h, p, err := splitHostPort(n.cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("cluster.advertise: %w", err)
		}
		c.AdvertiseAddr, c.AdvertisePort = h, p
	}
	t := n.cfg.Timing
	c.ProbeInterval, c.ProbeTimeout = t.ProbeInterval, t.ProbeTimeout
	c.SuspicionMult, c.SuspicionMaxTimeoutMult = t.SuspicionMult, t.SuspicionMaxMult
	c.GossipInterval, c.PushPullInterval = t.GossipInterval, t.PushPullInterval
	c.GossipToTheDeadTime = 10 * time.Second
	c.DeadNodeReclaimTime = 10 * time.Second // a reinstalled node may come back at a new address
	c.TCPTimeout = 5 * time.Second
	kr, err := memberlist.NewKeyring(n.keys.Keys[1:], n.keys.Keys[0])
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	c.Keyring = kr
	c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
	// Clear-text label on every packet: gossip from another DebVisor
	// cluster is dropped before decryption is even tried.
	c.Label = "debvisor/" + n.st.ClusterID
	c.Logger = newMemberlistLogger(n.log)
	c.Delegate = (*delegate)(n)
	c.Events = (*events)(n)
	c.Conflict = (*events)(n)
	c.Alive = (*events)(n)

	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", n.cfg.Bind, err)
	}
	local := ml.LocalNode()
	apiHost, apiPort, _ := net.SplitHostPort(api)
	if ip := net.ParseIP(apiHost); apiHost == "" || (ip != nil && ip.IsUnspecified()) {
		apiHost = local.Addr.String()
	}
	self := n.self
	self.APIAddr = net.JoinHostPort(apiHost, apiPort)
	self.GossipAddr = local.Address()
	m, _ := json.Marshal(meta{ID: n.st.NodeID, API: self.APIAddr, Version: n.cfg.Version, CA: self.HoldsCA, FP: self.CertFingerprint})
	n.mu.Lock()
	n.ml, n.meta, n.self = ml, m, self
	n.mu.Unlock()
	// Publish the metadata (it was empty when Create announced us).
	if err := ml.UpdateNode(time.Second); err != nil {
		n.log.Warn("announce metadata", "err", err)
	}
	n.log.Info("gossip running", "cluster", n.st.ClusterID, "gossip", self.GossipAddr, "api", self.APIAddr, "holds_ca", self.HoldsCA)
	return ml, nil
}

func splitHostPort(hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", hp)
	}
	return h, port, nil
}

func (n *Node) rejoin() {
	if k, err := n.JoinGossip(n.st.Peers); err != nil {
		n.log.Info("rejoin: no remembered peer answered yet", "peers", n.st.Peers, "err", err)
	} else {
		n.log.Info("rejoined the cluster", "contacted", k)
	}
}

// JoinGossip contacts members at gossip addresses (host:port) and merges
// their view; memberlist does the rest. It returns how many answered.
func (n *Node) JoinGossip(addrs []string) (int, error) {
	ml := n.memberlist()
	if ml == nil {
		return 0, fault.Errorf(fault.Unavailable, "gossip is not running yet")
	}
	return ml.Join(addrs)
}

func (n *Node) memberlist() *memberlist.Memberlist {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.ml
}

// Members lists the members gossip considers alive (a suspected member
// stays until its suspicion times out: memberlist does not expose it),
// sorted by name. Before gossip runs it is this node alone.
func (n *Node) Members() []Member {
	n.mu.RLock()
	ml, self := n.ml, n.self
	n.mu.RUnlock()
	if ml == nil {
		return []Member{self}
	}
	var out []Member
	for _, m := range ml.Members() {
		if m.Name == self.Name {
			s := self
			out = append(out, s)
			continue
		}
		out = append(out, memberFrom(m))
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func memberFrom(m *memberlist.Node) Member {
	var md meta
	_ = json.Unmarshal(m.Meta, &md) // a member with no or bad metadata is still a member
	return Member{
		Name: m.Name, NodeID: md.ID,
		APIAddr: md.API, GossipAddr: m.Address(), Version: md.Version, HoldsCA: md.CA, CertFingerprint: md.FP,
	}
}

// Member returns the member called name.
func (n *Node) Member(name string) (Member, error) {
	members := n.Members()
	names := make([]string, 0, len(members))
	for _, m := range members {
		if m.Name == name {
			return m, nil
		}
		names = append(names, m.Name)
	}
	return Member{}, fault.Errorf(fault.NotFound, "node %q is not a member of cluster %s (members: %s)", name, n.st.ClusterID, strings.Join(names, ", "))
}

// Signers lists the members that hold the CA key, by name.
func (n *Node) Signers() []string {
	var out []string
	for _, m := range n.Members() {
		if m.HoldsCA {
			out = append(out, m.Name)
		}
	}
	return out
}

// advertised is this node as it announces itself (mDNS, metadata).
func (n *Node) advertised() Member {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.self
}

// savePeers remembers the other members' gossip addresses for the next
// start (only when they changed).
func (n *Node) savePeers() {
	var peers []string
	for _, m := range n.Members() {
		if !m.Self {
			peers = append(peers, m.GossipAddr)
		}
	}
	if len(peers) == 0 || slices.Equal(peers, n.st.Peers) {
		return
	}
	st := n.st
	st.Peers = peers
	if err := writeJSON(filepath.Join(stateDir(n.cfg.StateDir), stateFile), st); err != nil {
		n.log.Warn("remember peers", "err", err)
		return
	}
	n.st.Peers = peers
}

// delegate feeds memberlist our metadata; DebVisor sends no user messages.
type delegate Node

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// events logs membership changes and schedules saving the peer list.
type events Node

func (e *events) NotifyJoin(m *memberlist.Node) {
	if m.Name != e.cfg.NodeName {
		e.log.Info("member joined", "member", m.Name, "gossip", m.Address())
	}
	e.poke()
}

// NotifyLeave: the member left gracefully or failed detection (memberlist
// does not say which).
func (e *events) NotifyLeave(m *memberlist.Node) {
	e.log.Info("member removed", "member", m.Name, "gossip", m.Address())
	e.poke()
}

func (e *events) NotifyUpdate(m *memberlist.Node) { e.poke() }

func (e *events) NotifyConflict(existing, other *memberlist.Node) {
	e.log.Warn("two nodes claim one member name", "member", existing.Name, "known", existing.Address(), "other", other.Address())
}

// NotifyAlive refuses members without DebVisor metadata (a node id):
// whoever holds the gossip key is trusted, but a member we could not route
// to or show is a misconfiguration better refused loudly.
func (e *events) NotifyAlive(m *memberlist.Node) error {
	if len(m.Meta) == 0 {
		return nil // the first announcement of a starting member has none yet
	}
	var md meta
	if err := json.Unmarshal(m.Meta, &md); err != nil || md.ID == "" {
		return fmt.Errorf("member %q has no DebVisor metadata", m.Name)
	}
	return nil
}

func (e *events) poke() {
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

// MemberName is the member name for a configured node name: the name
// itself, else the first label of the host name (members are named by
// host name labels).
func MemberName(configured string) string {
	if configured != "" {
		return configured
	}
	h, _ := os.Hostname()
	h, _, _ = strings.Cut(h, ".")
	return h
}
