package osimage

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/debvisor/debvisor/api/rules"
)

// A preseed configures a node on its first boot. firstboot looks for it on a
// volume labelled SeedLabel (a USB stick, an ISO attached to a VM) as
// SeedFile at the volume root, then on the ESP at ESPPreseed. Paths inside
// the preseed that name files (PKI) are relative to the directory holding
// the preseed file.
const (
	SeedLabel = "DEBVISOR-SEED"
	SeedFile  = "preseed.yaml"
	// PreseedVersion is the only format version this code understands.
	PreseedVersion = 1
)

// Where firstboot installs what the preseed delivers.
const (
	PKIDir          = "/etc/debvisor/pki"
	PKICA           = PKIDir + "/ca.crt"
	PKICert         = PKIDir + "/node.crt"
	PKIKey          = PKIDir + "/node.key"
	AgentConfigPath = "/etc/debvisor/agent.yaml"
	// FirstbootStamp marks a node whose first boot completed; it lives on
	// the data partition (/var is overlaid) so it survives slot switches.
	FirstbootStamp = "/var/lib/debvisor/firstboot.done"
)

// Preseed is the first-boot configuration.
type Preseed struct {
	Version int `yaml:"version"`
	// Hostname, when set, becomes /etc/hostname.
	Hostname string `yaml:"hostname"`
	// SSHAuthorizedKeys are appended to root's authorized_keys.
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
	// PKI names the node's PEM files on the seed volume.
	PKI *PreseedPKI `yaml:"pki"`
	// AgentConfig is written verbatim to AgentConfigPath.
	AgentConfig string `yaml:"agent_config"`
	// Files are written as given (absolute paths, under /etc or /var only:
	// the rest of the system is the read-only slot).
	Files []PreseedFile `yaml:"files"`
	// Cluster makes the node bootstrap a cluster or join one on first boot.
	Cluster *ClusterEnrollment `yaml:"cluster"`
	// Network is the node's host network (the agent API's schema): firstboot
	// writes it as the agent's desired configuration and as networkd files,
	// which bring it up; the image's DHCP default keeps covering the NICs it
	// does not name.
	Network *PreseedNetwork `yaml:"network"`
}

// PreseedPKI names the node certificate material, relative to the preseed.
type PreseedPKI struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// PreseedFile is one file to create.
type PreseedFile struct {
	Path    string `yaml:"path"`
	Mode    string `yaml:"mode"`
	Content string `yaml:"content"`
}

// FileMode parses Mode (octal, default 0644).
func (f PreseedFile) FileMode() (uint32, error) {
	if f.Mode == "" {
		return 0o644, nil
	}
	m, err := strconv.ParseUint(f.Mode, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, fmt.Errorf("mode %q: want an octal permission like 0644", f.Mode)
	}
	return uint32(m), nil
}

// SeedFiles lists the files the preseed names (relative to it) that must
// travel with it on the seed volume or the ESP: the node PKI and a cluster
// CA made beforehand.
func (p *Preseed) SeedFiles() []string {
	var out []string
	if p.PKI != nil {
		out = append(out, p.PKI.CA, p.PKI.Cert, p.PKI.Key)
	}
	if p.Cluster != nil && p.Cluster.CA != "" {
		out = append(out, p.Cluster.CA, p.Cluster.CAKey)
	}
	return out
}

// ParsePreseed parses and validates a preseed, refusing unknown keys.
func ParsePreseed(data []byte) (*Preseed, error) {
	var p Preseed
	dec := yaml.NewDecoder(bytes.NewReader(data), yaml.DisallowUnknownField(), yaml.Strict())
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("preseed: %s", yaml.FormatError(err, false, true))
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("preseed: %w", err)
	}
	return &p, nil
}

// Validate checks values that parse but cannot be applied.
func (p *Preseed) Validate() error {
	var errs []error
	if p.Version != PreseedVersion {
		errs = append(errs, fmt.Errorf("version: %d is not supported (want %d)", p.Version, PreseedVersion))
	}
	if p.Hostname != "" {
		if err := rules.CheckHostname(p.Hostname); err != nil {
			errs = append(errs, fmt.Errorf("hostname: %w", err))
		}
	}
	if p.PKI != nil {
		for field, v := range map[string]string{"pki.ca": p.PKI.CA, "pki.cert": p.PKI.Cert, "pki.key": p.PKI.Key} {
			if v == "" || path.IsAbs(v) || strings.Contains(v, "..") {
				errs = append(errs, fmt.Errorf("%s: want a file name relative to the preseed, got %q", field, v))
			}
		}
	}
	if p.Cluster != nil {
		if err := p.Cluster.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: %w", err))
		}
	}
	if p.Network != nil {
		if err := p.Network.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	for i, f := range p.Files {
		clean := path.Clean(f.Path)
		if !path.IsAbs(f.Path) || clean != f.Path || (!strings.HasPrefix(clean, "/etc/") && !strings.HasPrefix(clean, "/var/")) {
			errs = append(errs, fmt.Errorf("files[%d].path: %q must be a clean absolute path under /etc or /var", i, f.Path))
		}
		if _, err := f.FileMode(); err != nil {
			errs = append(errs, fmt.Errorf("files[%d].mode: %w", i, err))
		}
	}
	return errors.Join(errs...)
}
