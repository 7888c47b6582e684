package osimage

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"path"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/debvisor/debvisor/api/rules"
)

// ClusterEnrollPath is where firstboot writes the preseed's cluster section
// for the agent, which enrolls the node (bootstraps a cluster or joins one)
// on its next start and then removes the file. It holds a join token: 0600.
const ClusterEnrollPath = "/etc/debvisor/cluster-enroll.yaml"

// PKICAKey is where a node holding the cluster CA keeps its key.
const PKICAKey = PKIDir + "/ca.key"

// ClusterEnrollment asks a node to form a cluster or join one. It is the
// preseed's "cluster" section and the content of ClusterEnrollPath.
type ClusterEnrollment struct {
	// Bootstrap makes this node the first member: it creates the cluster CA
	// (or uses CA and CAKey), the gossip key, and registers Token as a
	// valid join token for TokenTTL.
	Bootstrap bool `yaml:"bootstrap,omitempty"`
	// Name is the cluster id a bootstrap uses; random when empty.
	Name string `yaml:"name,omitempty"`
	// Token is the join token, "abcdef.0123456789abcdef": registered by a
	// bootstrap, presented by a joining node.
	Token string `yaml:"token,omitempty"`
	// TokenTTL is how long a bootstrap keeps Token valid ("24h" when empty).
	TokenTTL string `yaml:"token_ttl,omitempty"`
	// CACertHash pins the cluster CA a joining node trusts, "sha256:<hex>".
	CACertHash string `yaml:"ca_cert_hash,omitempty"`
	// Join lists members' API addresses (host:port) for a joining node; mDNS
	// finds one on the LAN when empty.
	Join []string `yaml:"join,omitempty"`
	// CA and CAKey name a CA made beforehand (dvctl pki init-ca) for a
	// bootstrap, relative to the preseed, so the CA hash other nodes' preseeds
	// need is known in advance. Preseed only: firstboot installs them.
	CA    string `yaml:"ca,omitempty"`
	CAKey string `yaml:"ca_key,omitempty"`
}

// ParseClusterEnrollment parses and validates an enroll file, refusing
// unknown keys.
func ParseClusterEnrollment(data []byte) (*ClusterEnrollment, error) {
	var e ClusterEnrollment
	dec := yaml.NewDecoder(bytes.NewReader(data), yaml.DisallowUnknownField(), yaml.Strict())
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("cluster enrollment: %s", yaml.FormatError(err, false, true))
	}
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("cluster enrollment: %w", err)
	}
	return &e, nil
}

// Marshal renders the enrollment as YAML.
func (e ClusterEnrollment) Marshal() ([]byte, error) { return yaml.Marshal(e) }

// TTL returns TokenTTL as a duration (Validate has checked it).
func (e ClusterEnrollment) TTL() time.Duration {
	if e.TokenTTL == "" {
		return rules.DefaultJoinTokenTTL
	}
	d, _ := time.ParseDuration(e.TokenTTL)
	return d
}

// Validate checks the fields against each other: a bootstrap needs no CA
// hash or addresses; a join needs a token and the CA hash.
func (e ClusterEnrollment) Validate() error {
	var errs []error
	if e.Token != "" {
		if _, _, err := rules.ParseJoinToken(e.Token); err != nil {
			errs = append(errs, fmt.Errorf("token: %w", err))
		}
	}
	if e.Name != "" {
		if err := rules.CheckHostname(e.Name); err != nil {
			errs = append(errs, fmt.Errorf("name: %w", err))
		}
	}
	for i, a := range e.Join {
		if h, _, err := net.SplitHostPort(a); err != nil || h == "" {
			errs = append(errs, fmt.Errorf("join[%d]: %q is not host:port of a member's API", i, a))
		}
	}
	if (e.CA == "") != (e.CAKey == "") {
		errs = append(errs, errors.New("ca, ca_key: give both or neither"))
	}
	for field, v := range map[string]string{"ca": e.CA, "ca_key": e.CAKey} {
		if v != "" && (path.IsAbs(v) || strings.Contains(v, "..")) {
			errs = append(errs, fmt.Errorf("%s: want a file name relative to the preseed, got %q", field, v))
		}
	}
	if e.Bootstrap {
		if e.TokenTTL != "" {
			d, err := time.ParseDuration(e.TokenTTL)
			if err != nil {
				errs = append(errs, fmt.Errorf("token_ttl: %q is not a duration such as \"24h\"", e.TokenTTL))
			} else if err := rules.CheckJoinTokenTTL(d); err != nil || d == 0 {
				errs = append(errs, fmt.Errorf("token_ttl: %s is outside (0, %s]", d, rules.MaxJoinTokenTTL))
			}
		}
		if e.CACertHash != "" || len(e.Join) > 0 {
			errs = append(errs, errors.New("bootstrap: a bootstrapping node makes the cluster; ca_cert_hash and join are for joining nodes"))
		}
		return errors.Join(errs...)
	}
	if e.Token == "" {
		errs = append(errs, errors.New("token: a joining node needs the join token (or set bootstrap: true on the first node)"))
	}
	if _, err := rules.ParseCACertHash(e.CACertHash); err != nil {
		errs = append(errs, fmt.Errorf("ca_cert_hash: %w", err))
	}
	if e.TokenTTL != "" || e.Name != "" || e.CA != "" {
		errs = append(errs, errors.New("token_ttl, name, ca, ca_key: only a bootstrapping node uses them"))
	}
	return errors.Join(errs...)
}
