// Package config owns the agent's configuration file: its schema, defaults,
// strict parsing and validation.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/debvisor/debvisor/internal/yamlstrict"
)

// DefaultPath is where the agent looks for its configuration on a node.
const DefaultPath = "/etc/debvisor/agent.yaml"

// Config is the agent configuration. Every field has a default, so an empty
// file is valid.
type Config struct {
	// NodeName is the node's name in the cluster; the hostname when empty.
	NodeName string `yaml:"node_name"`
	// Listen is the gRPC (mTLS) address.
	Listen string `yaml:"listen"`
	// RESTListen is the REST/JSON (mTLS) address; "" disables REST.
	RESTListen string `yaml:"rest_listen"`
	// Socket is the root-only unix socket for local dvctl; "" disables it.
	Socket string `yaml:"socket"`
	// MetricsListen serves Prometheus /metrics over plain HTTP; keep it on
	// loopback or a management network. "" disables it.
	MetricsListen string `yaml:"metrics_listen"`
	// StateDir holds the agent's persistent state.
	StateDir string `yaml:"state_dir"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json.
	LogFormat string `yaml:"log_format"`
	// ShutdownTimeout bounds graceful shutdown on SIGTERM, e.g. "15s".
	ShutdownTimeout string `yaml:"shutdown_timeout"`
	TLS             TLS    `yaml:"tls"`

	// Libvirt is the hypervisor connection for VMs and storage pools.
	Libvirt Libvirt `yaml:"libvirt"`
}

// Libvirt says how the agent reaches libvirtd for VMs and storage.
type Libvirt struct {
	// Socket is libvirtd's read-write unix socket; "" runs the agent
	// without VM and storage services.
	Socket string `yaml:"socket"`
	// URI is the driver to open (qemu:///system).
	URI string `yaml:"uri"`
	// DomainType forces "kvm" or "qemu" (TCG); detected when empty.
	DomainType string `yaml:"domain_type"`
	// SeedDir holds the VMs' cloud-init seed ISOs. QEMU runs as its own
	// user, so every parent must be traversable by it: the default lives
	// in libvirt's tree; "" uses state_dir/vm-seeds.
	SeedDir string `yaml:"seed_dir"`
}

// TLS names the node's PEM files.
type TLS struct {
	// CA is a bundle of the cluster CA certificates clients must chain to;
	// several during a CA rotation.
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Default returns the configuration used on a DebVisor node.
func Default() Config {
	return Config{
		Listen:          ":7443",
		RESTListen:      ":7444",
		Socket:          "/run/debvisor/agent.sock",
		MetricsListen:   "127.0.0.1:9273",
		StateDir:        "/var/lib/debvisor",
		LogLevel:        "info",
		LogFormat:       "text",
		ShutdownTimeout: "15s",
		TLS: TLS{
			CA:   "/etc/debvisor/pki/ca.crt",
			Cert: "/etc/debvisor/pki/node.crt",
			Key:  "/etc/debvisor/pki/node.key",
		},
		Libvirt: Libvirt{Socket: "/var/run/libvirt/libvirt-sock", URI: "qemu:///system", SeedDir: "/var/lib/libvirt/debvisor-seeds"},
	}
}

// Load reads and validates the file at path. A missing file at the default
// path yields the defaults; a missing file anywhere else is an error.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && path == DefaultPath {
		c := Default()
		return c, c.Validate()
	}
	if err != nil {
		return Config{}, err
	}
	c, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	// Relative PKI paths are relative to the config file.
	base := filepath.Dir(path)
	for _, p := range []*string{&c.TLS.CA, &c.TLS.Cert, &c.TLS.Key, &c.StateDir} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	return c, nil
}

// Parse parses YAML over the defaults, refusing unknown keys, and validates
// the result. Errors name the line and the field.
func Parse(data []byte) (Config, error) {
	c := Default()
	if len(bytes.TrimSpace(data)) == 0 {
		return c, c.Validate()
	}
	if err := yamlstrict.Decode(data, &c); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// Validate checks values that parse but make no sense.
func (c Config) Validate() error {
	var errs []error
	checkAddr := func(field, v string, required bool) {
		if v == "" {
			if required {
				errs = append(errs, fmt.Errorf("%s: must not be empty", field))
			}
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port: %w", field, v, err))
		}
	}
	checkAddr("listen", c.Listen, true)
	checkAddr("rest_listen", c.RESTListen, false)
	checkAddr("metrics_listen", c.MetricsListen, false)
	if c.Socket != "" && !filepath.IsAbs(c.Socket) {
		errs = append(errs, fmt.Errorf("socket: %q must be an absolute path", c.Socket))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir: must not be empty"))
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("log_level: %w", err))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log_format: %q is neither text nor json", c.LogFormat))
	}
	if d, err := time.ParseDuration(c.ShutdownTimeout); err != nil {
		errs = append(errs, fmt.Errorf("shutdown_timeout: %q is not a duration such as \"15s\"", c.ShutdownTimeout))
	} else if d < 0 {
		errs = append(errs, errors.New("shutdown_timeout: must not be negative"))
	}
	for field, v := range map[string]string{"tls.ca": c.TLS.CA, "tls.cert": c.TLS.Cert, "tls.key": c.TLS.Key} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s: must not be empty (the API is mTLS only)", field))
		}
	}
	if c.Libvirt.Socket != "" && !filepath.IsAbs(c.Libvirt.Socket) {
		errs = append(errs, fmt.Errorf("libvirt.socket: %q must be an absolute path", c.Libvirt.Socket))
	}
	if c.Libvirt.Socket != "" && !strings.Contains(c.Libvirt.URI, ":///") {
		errs = append(errs, fmt.Errorf("libvirt.uri: %q is not a libvirt URI such as qemu:///system", c.Libvirt.URI))
	}
	if c.Libvirt.SeedDir != "" && !filepath.IsAbs(c.Libvirt.SeedDir) {
		errs = append(errs, fmt.Errorf("libvirt.seed_dir: %q must be an absolute path", c.Libvirt.SeedDir))
	}
	if t := c.Libvirt.DomainType; t != "" && t != "kvm" && t != "qemu" {
		errs = append(errs, fmt.Errorf("libvirt.domain_type: %q is neither kvm nor qemu (empty detects)", t))
	}
	if strings.ContainsAny(c.NodeName, " /\t\n") {
		errs = append(errs, fmt.Errorf("node_name: %q must not contain spaces or slashes", c.NodeName))
	}
	return errors.Join(errs...)
}

// ShutdownGrace returns ShutdownTimeout as a duration (Validate has checked it).
func (c Config) ShutdownGrace() time.Duration {
	d, _ := time.ParseDuration(c.ShutdownTimeout)
	return d
}

// ParseLevel parses a log level name.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
	}
	return l, nil
}
