package cluster

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/debvisor/debvisor/nodeagent/discovery"
)

// Discoverer is the mDNS side: discovery.MDNS on a node, a fake in tests.
type Discoverer interface {
	Advertise(ctx context.Context, r discovery.Record, ips []net.IP) error
	Browse(ctx context.Context) ([]discovery.Peer, error)
}

// MDNS is the real Discoverer.
type MDNS struct {
	Log *slog.Logger
	// Window is how long one browse listens for answers (default 1.5 s).
	Window time.Duration
}

func (m MDNS) Advertise(ctx context.Context, r discovery.Record, ips []net.IP) error {
	return discovery.Advertise(ctx, r, ips, m.Log)
}

func (m MDNS) Browse(ctx context.Context) ([]discovery.Peer, error) {
	w := m.Window
	if w == 0 {
		w = 1500 * time.Millisecond
	}
	return discovery.Browse(ctx, w, m.Log, nil)
}

// Browse intervals: often while the node is alone, rarely once it has
// company (then only to heal a split that gossip cannot see).
const (
	browseAlone    = 2 * time.Second
	browseTogether = 30 * time.Second
)

// Discover advertises this node on mDNS once gossip runs, and browses for
// members of the same cluster that gossip does not know yet, joining them.
// It runs until ctx ends.
func (n *Node) Discover(ctx context.Context, d Discoverer) error {
	select {
	case <-n.ready:
	case <-ctx.Done():
		return nil
	}
	self := n.advertised()
	host, apiPort, _ := net.SplitHostPort(self.APIAddr)
	_, gossipPort, _ := net.SplitHostPort(self.GossipAddr)
	api, _ := strconv.Atoi(apiPort)
	gossip, _ := strconv.Atoi(gossipPort)
	rec := discovery.Record{
		Name: self.Name, NodeID: self.NodeID, ClusterID: n.st.ClusterID, Version: self.Version,
		APIPort: api, GossipPort: gossip, CertFingerprint: self.CertFingerprint, CAHash: n.caHash, Signer: self.HoldsCA,
	}
	advDone := make(chan error, 1)
	go func() { advDone <- d.Advertise(ctx, rec, []net.IP{net.ParseIP(host)}) }()
	for {
		wait := browseTogether
		if len(n.Members()) <= 1 {
			wait = browseAlone
		}
		select {
		case <-ctx.Done():
			if advDone != nil {
				if err := <-advDone; err != nil {
					n.log.Warn("mDNS advertising", "err", err)
				}
			}
			return nil
		case err := <-advDone:
			// Advertising failed (no multicast interface): keep browsing,
			// which joins others who can still find us by gossip.
			n.log.Warn("mDNS advertising stopped", "err", err)
			advDone = nil
		case <-time.After(wait):
		}
		n.browseOnce(ctx, d)
	}
}

func (n *Node) browseOnce(ctx context.Context, d Discoverer) {
	peers, err := d.Browse(ctx)
	if err != nil {
		n.log.Debug("mDNS browse", "err", err)
		return
	}
	known := map[string]bool{}
	for _, m := range n.Members() {
		known[m.Name] = true
	}
	for _, p := range peers {
		if p.ClusterID != n.st.ClusterID || p.CAHash != n.caHash || known[p.Name] {
			continue
		}
		if k, err := n.JoinGossip(p.GossipAddrs()); err != nil {
			n.log.Info("mDNS: found a member gossip does not know, but could not join it", "member", p.Name, "err", err)
		} else {
			n.log.Info("mDNS: joined a member found on the link", "member", p.Name, "contacted", k)
		}
	}
}
