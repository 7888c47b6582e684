// Package discovery owns finding DebVisor agents on the local link with
// mDNS/DNS-SD (github.com/grandcat/zeroconf): an enrolled agent advertises
// the service _debvisor._tcp with its node id, cluster id, version, API and
// gossip ports, certificate fingerprint and CA hash in TXT records, and
// agents browse for each other. It finds first contacts only: membership
// itself is gossip (nodeagent/cluster), and nothing learnt here is trusted
// before TLS has checked the peer against the pinned cluster CA.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/grandcat/zeroconf"

	"github.com/debvisor/debvisor/api/rules"
)

// Service and Domain are the DNS-SD names DebVisor agents use.
const (
	Service = "_debvisor._tcp"
	Domain  = "local."
)

// txtVersion is the TXT layout version ("txtvers", RFC 6763 §6.7).
const txtVersion = "1"

// Record is what an agent advertises about itself.
type Record struct {
	// Name is the member name; it is also the DNS-SD instance name.
	Name            string
	NodeID          string
	ClusterID       string
	Version         string
	APIPort         int
	GossipPort      int
	CertFingerprint string
	// CAHash pins the CA that signed the node ("sha256:<hex>"); joining
	// nodes look for the one they were given.
	CAHash string
	// Signer says the node holds the CA key and can sign join requests.
	Signer bool
}

// TXT encodes the record's TXT strings (the name and API port travel in the
// instance name and SRV record).
func (r Record) TXT() []string {
	signer := "0"
	if r.Signer {
		signer = "1"
	}
	return []string{
		"txtvers=" + txtVersion,
		"id=" + r.NodeID,
		"cluster=" + r.ClusterID,
		"version=" + r.Version,
		"gossip=" + strconv.Itoa(r.GossipPort),
		"fp=" + r.CertFingerprint,
		"ca=" + r.CAHash,
		"signer=" + signer,
	}
}

// ParseRecord decodes an advertisement: the instance name, the SRV port and
// the TXT strings. Everything in it comes from the network unauthenticated,
// so every field is checked; unknown keys are ignored for compatibility.
func ParseRecord(instance string, port int, txt []string) (Record, error) {
	r := Record{Name: instance, APIPort: port}
	if err := rules.CheckHostname(instance); err != nil {
		return r, fmt.Errorf("instance name: %w", err)
	}
	if port <= 0 || port > 65535 {
		return r, fmt.Errorf("API port %d is out of range", port)
	}
	seen := map[string]string{}
	for _, kv := range txt {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		k = strings.ToLower(k)
		if _, dup := seen[k]; dup {
			continue // RFC 6763 §6.4: only the first occurrence counts
		}
		seen[k] = v
	}
	if v := seen["txtvers"]; v != txtVersion {
		return r, fmt.Errorf("txtvers %q is not %s", v, txtVersion)
	}
	r.NodeID = seen["id"]
	if err := CheckNodeID(r.NodeID); err != nil {
		return r, fmt.Errorf("id: %w", err)
	}
	r.ClusterID = seen["cluster"]
	if err := rules.CheckHostname(r.ClusterID); err != nil {
		return r, fmt.Errorf("cluster: %w", err)
	}
	r.Version = seen["version"]
	if len(r.Version) > 64 || strings.ContainsFunc(r.Version, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		return r, fmt.Errorf("version %q is not up to 64 printable characters", r.Version)
	}
	g, err := strconv.Atoi(seen["gossip"])
	if err != nil || g <= 0 || g > 65535 {
		return r, fmt.Errorf("gossip port %q is not a port", seen["gossip"])
	}
	r.GossipPort = g
	r.CertFingerprint = seen["fp"]
	if _, err := rules.ParseCACertHash(r.CertFingerprint); err != nil {
		return r, fmt.Errorf("fp: %w", err)
	}
	r.CAHash = seen["ca"]
	if _, err := rules.ParseCACertHash(r.CAHash); err != nil {
		return r, fmt.Errorf("ca: %w", err)
	}
	switch seen["signer"] {
	case "1":
		r.Signer = true
	case "0", "":
	default:
		return r, fmt.Errorf("signer %q is neither 0 nor 1", seen["signer"])
	}
	return r, nil
}

// CheckNodeID validates a node id: 32 lower-case hex digits.
func CheckNodeID(id string) error {
	if len(id) != 32 || strings.ContainsFunc(id, func(c rune) bool { return (c < '0' || c > '9') && (c < 'a' || c > 'f') }) {
		return fmt.Errorf("%q is not 32 lower-case hex digits", id)
	}
	return nil
}

// Peer is an agent found on the link.
type Peer struct {
	Record
	// Addrs are the addresses it announced, IPv4 first.
	Addrs []net.IP
}

// APIAddrs returns host:port for the peer's API on each address.
func (p Peer) APIAddrs() []string { return p.addrs(p.APIPort) }

// GossipAddrs returns host:port for the peer's gossip on each address.
func (p Peer) GossipAddrs() []string { return p.addrs(p.GossipPort) }

func (p Peer) addrs(port int) []string {
	out := make([]string, 0, len(p.Addrs))
	for _, ip := range p.Addrs {
		out = append(out, net.JoinHostPort(ip.String(), strconv.Itoa(port)))
	}
	return out
}

// Advertise announces r with the given addresses on every multicast
// interface until ctx ends, then says goodbye (TTL 0) so browsers drop it.
func Advertise(ctx context.Context, r Record, ips []net.IP, log *slog.Logger) error {
	if len(ips) == 0 {
		return errors.New("advertise: no address to announce")
	}
	strs := make([]string, len(ips))
	for i, ip := range ips {
		strs[i] = ip.String()
	}
	// RegisterProxy, not Register: the host name and addresses are the
	// node's own (Register would use the OS host name, which agents in
	// network namespaces share, and every interface address).
	srv, err := zeroconf.RegisterProxy(r.Name, Service, Domain, r.APIPort, r.Name, strs, r.TXT(), nil)
	if err != nil {
		return fmt.Errorf("mDNS advertise: %w", err)
	}
	log.Info("mDNS advertising", "service", Service, "instance", r.Name, "addresses", strs, "api_port", r.APIPort, "cluster", r.ClusterID)
	<-ctx.Done()
	srv.Shutdown()
	return nil
}

// Browse asks the link for DebVisor agents and returns those that answer
// within wait, valid ones only (invalid advertisements are logged at debug
// level and skipped). When enough is set, Browse returns as soon as it
// reports true for a peer (a joining node needs one contact, not all).
func Browse(ctx context.Context, wait time.Duration, log *slog.Logger, enough func(Peer) bool) ([]Peer, error) {
	res, err := zeroconf.NewResolver(zeroconf.SelectIPTraffic(zeroconf.IPv4))
	if err != nil {
		return nil, fmt.Errorf("mDNS browse: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	entries := make(chan *zeroconf.ServiceEntry, 16)
	if err := res.Browse(ctx, Service, Domain, entries); err != nil {
		return nil, fmt.Errorf("mDNS browse: %w", err)
	}
	byName := map[string]Peer{}
	for e := range entries { // closed when ctx ends
		r, err := ParseRecord(unescapeInstance(e.Instance), e.Port, e.Text)
		if err != nil {
			log.Debug("mDNS: ignoring an invalid advertisement", "instance", e.Instance, "err", err)
			continue
		}
		p := Peer{Record: r, Addrs: append(append([]net.IP(nil), e.AddrIPv4...), e.AddrIPv6...)}
		if len(p.Addrs) == 0 {
			continue
		}
		byName[r.Name] = p
		if enough != nil && enough(p) {
			cancel()
			break
		}
	}
	// Drain until the resolver closes the channel, so its goroutines end.
	for range entries {
	}
	peers := make([]Peer, 0, len(byName))
	for _, p := range byName {
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	return peers, nil
}

// unescapeInstance drops a trailing dot. zeroconf leaves DNS presentation
// escapes ("\032" for a space) in instance names; valid member names need
// none, so an escaped name fails validation instead of being unescaped.
func unescapeInstance(s string) string { return strings.TrimSuffix(s, ".") }
