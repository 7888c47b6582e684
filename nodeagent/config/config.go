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
	"strconv"
	"strings"
	"time"

	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/internal/yamlstrict"
	"github.com/debvisor/debvisor/osimage"
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

	// Storage confines what clients' storage pools may touch.
	Storage Storage `yaml:"storage"`

	// Cluster is membership (gossip), mDNS discovery and enrollment.
	Cluster Cluster `yaml:"cluster"`

	// Upgrade is the A/B OS upgrade: where the slots and the boot
	// environment are, which keys sign releases, how to reach registries.
	Upgrade Upgrade `yaml:"upgrade"`

	// Network is host networking: where the systemd-networkd files go,
	// the management interface, the default confirm deadline.
	Network Network `yaml:"network"`
}

// Network configures the agent's NetworkService. It applies only on a
// DebVisor node; elsewhere the network API says the agent does not manage
// the host's network.
type Network struct {
	// Enabled lets the agent own the node's networking through the API.
	Enabled bool `yaml:"enabled"`
	// NetworkdDir receives the systemd-networkd .netdev/.network files (the
	// /etc overlay, so they survive reboots and upgrades).
	NetworkdDir string `yaml:"networkd_dir"`
	// ManagementInterface is the link the node is managed through; a
	// change touching it must be confirmed. Empty: the interface of the
	// default route when the agent starts.
	ManagementInterface string `yaml:"management_interface"`
	// ConfirmDeadline is how long a change waits for its confirmation by
	// default before it is reverted ("60s"; 1s to 1h).
	ConfirmDeadline string `yaml:"confirm_deadline"`
	// ReloadNetworkd runs `networkctl reload` after the files change, so
	// networkd (DHCP clients, DNS) follows at once and not only at boot.
	ReloadNetworkd bool `yaml:"reload_networkd"`
	// ResolvConf is read for the live DNS servers.
	ResolvConf string `yaml:"resolv_conf"`
	// FilesOnly persists changes as networkd files and confirms or
	// reverts them, but never changes the live links: for a kernel that
	// cannot create bonds or VLANs (the console's test on a development
	// host); the files take effect when networkd next starts.
	FilesOnly bool `yaml:"files_only"`
}

// Deadline returns ConfirmDeadline as a duration (Validate checked it).
func (n Network) Deadline() time.Duration {
	d, _ := time.ParseDuration(n.ConfirmDeadline)
	return d
}

// Upgrade configures A/B upgrades. It applies only on a DebVisor node
// (booted from a slot); elsewhere the upgrade API says there are no slots.
type Upgrade struct {
	// ESP is where the ESP (with grub/grubenv) is mounted.
	ESP string `yaml:"esp"`
	// SlotA and SlotB are the slots' partitions.
	SlotA string `yaml:"slot_a"`
	SlotB string `yaml:"slot_b"`
	// TrustedKeys are PEM public keys (ECDSA P-256, cosign.pub format);
	// a release must carry a signature by one of them. Shell patterns
	// are expanded ("/etc/debvisor/keys/*.pub").
	TrustedKeys []string `yaml:"trusted_keys"`
	// CABundle adds CA certificates for registries' TLS.
	CABundle string `yaml:"ca_bundle"`
	// InsecureHTTP allows plain HTTP to registries (never by default).
	InsecureHTTP bool `yaml:"insecure_http"`
	// CommitDeadline bounds how long a new slot may take to pass its
	// health report after it booted ("5m"); past it, the node rolls back.
	CommitDeadline string `yaml:"commit_deadline"`
	// CmdlineFile and ReleaseFile tell the agent how it was booted:
	// /proc/cmdline (debvisor.slot=) and the slot's release file. Only
	// tests and benchmarks that run the agent off a node point them
	// elsewhere.
	CmdlineFile string `yaml:"cmdline_file"`
	ReleaseFile string `yaml:"release_file"`
	// TestEnvPause sleeps after writing each copy of the boot environment.
	// For the power-cut tests only: it widens the moment between the two
	// copies so a random power cut can land in it. Never set it on a node.
	TestEnvPause string `yaml:"test_env_pause"`
}

// CommitWait returns CommitDeadline as a duration (Validate checked it).
func (u Upgrade) CommitWait() time.Duration {
	d, _ := time.ParseDuration(u.CommitDeadline)
	return d
}

// Storage is the admin's say over where clients may put pools.
type Storage struct {
	// PoolRoots are the only directories directory-backed pools (and the
	// mount points of fs/netfs pools) may be created in, each pool in a
	// new or empty directory strictly inside one of them. Whatever the
	// roots, pools never touch the agent's state or PKI, /etc, /boot, the
	// ESP, /root or other system directories. Empty refuses every
	// directory pool.
	PoolRoots []string `yaml:"pool_roots"`
	// DefaultPool, when set, names a directory pool the agent keeps in
	// existence at <first pool root>/<name> (a node's "default" pool on
	// the data partition). Empty: none.
	DefaultPool string `yaml:"default_pool"`
}

// Cluster configures cluster formation. A node takes part once it is
// enrolled (it bootstrapped a cluster or joined one; the state lives in
// state_dir/cluster); until then nothing listens. Enrollment itself is
// asked for by the enroll file (written by firstboot from the preseed) or by
// `debvisor-agent cluster init|join`.
type Cluster struct {
	// Enabled lets an enrolled node gossip and advertise; false keeps it
	// standalone even when it has cluster state.
	Enabled bool `yaml:"enabled"`
	// Bind is the gossip (memberlist) address, TCP and UDP.
	Bind string `yaml:"bind"`
	// Advertise is the gossip address other members use, IP:port; detected
	// from the interfaces (first private address) when empty.
	Advertise string `yaml:"advertise"`
	// MDNS advertises _debvisor._tcp on the LAN and browses for peers (first
	// contact only; membership itself is gossip).
	MDNS bool `yaml:"mdns"`
	// Join lists members' API addresses (host:port) a node contacts to
	// enroll, and that work across subnets where mDNS does not reach; mDNS
	// is used when it is empty.
	Join []string `yaml:"join"`
	// EnrollFile asks for enrollment (bootstrap or join with a token); the
	// agent removes it once the node is enrolled.
	EnrollFile string `yaml:"enroll_file"`
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

// DefaultPoolRoot is where pools live on a DebVisor node: a directory on
// the data partition (osimage.DataMount).
const DefaultPoolRoot = "/data/pools"

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
		Cluster: Cluster{Enabled: true, Bind: "0.0.0.0:7946", MDNS: true, EnrollFile: osimage.ClusterEnrollPath},
		Storage: Storage{PoolRoots: []string{DefaultPoolRoot}},
		Network: Network{
			Enabled: true, NetworkdDir: "/etc/systemd/network", ConfirmDeadline: "60s",
			ReloadNetworkd: true, ResolvConf: "/etc/resolv.conf",
		},
		Upgrade: Upgrade{
			ESP: "/boot/efi", SlotA: "/dev/disk/by-partlabel/debvisor-a", SlotB: "/dev/disk/by-partlabel/debvisor-b",
			TrustedKeys: []string{"/etc/debvisor/keys/*.pub"}, CommitDeadline: "5m",
			CmdlineFile: "/proc/cmdline", ReleaseFile: "/usr/lib/debvisor/release",
		},
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
	for _, p := range []*string{&c.TLS.CA, &c.TLS.Cert, &c.TLS.Key, &c.StateDir, &c.Cluster.EnrollFile} {
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
	errs = append(errs, c.Cluster.validate()...)
	if p := c.Upgrade.TestEnvPause; p != "" {
		if d, err := time.ParseDuration(p); err != nil || d < 0 || d > time.Minute {
			errs = append(errs, fmt.Errorf("upgrade.test_env_pause: %q is not a duration between 0 and 1m", p))
		}
	}
	if d, err := time.ParseDuration(c.Upgrade.CommitDeadline); err != nil || d < 10*time.Second {
		errs = append(errs, fmt.Errorf("upgrade.commit_deadline: %q is not a duration of at least 10s", c.Upgrade.CommitDeadline))
	}
	for field, v := range map[string]string{"upgrade.esp": c.Upgrade.ESP, "upgrade.slot_a": c.Upgrade.SlotA, "upgrade.slot_b": c.Upgrade.SlotB} {
		if !filepath.IsAbs(v) {
			errs = append(errs, fmt.Errorf("%s: %q must be an absolute path", field, v))
		}
	}
	errs = append(errs, c.Network.validate()...)
	if c.Storage.DefaultPool != "" && len(c.Storage.PoolRoots) == 0 {
		errs = append(errs, errors.New("storage.default_pool: needs a pool root (storage.pool_roots) to live in"))
	}
	if n := c.Storage.DefaultPool; strings.ContainsAny(n, "/ \t\n") || strings.HasPrefix(n, ".") {
		errs = append(errs, fmt.Errorf("storage.default_pool: %q is not a pool name", n))
	}
	for i, r := range c.Storage.PoolRoots {
		if !filepath.IsAbs(r) || filepath.Clean(r) != r || r == "/" {
			errs = append(errs, fmt.Errorf("storage.pool_roots[%d]: %q must be a clean absolute directory other than /", i, r))
		}
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

func (c Cluster) validate() []error {
	var errs []error
	hostPort := func(field, v string) (string, bool) {
		h, p, err := net.SplitHostPort(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port: %w", field, v, err))
			return "", false
		}
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
			errs = append(errs, fmt.Errorf("%s: %q: port %q is not a number 0-65535", field, v, p))
			return "", false
		}
		return h, true
	}
	if c.Bind == "" {
		errs = append(errs, errors.New("cluster.bind: must not be empty (e.g. 0.0.0.0:7946)"))
	} else if h, ok := hostPort("cluster.bind", c.Bind); ok && h != "" && net.ParseIP(h) == nil {
		errs = append(errs, fmt.Errorf("cluster.bind: %q: the host must be an IP address", c.Bind))
	}
	if c.Advertise != "" {
		if h, ok := hostPort("cluster.advertise", c.Advertise); ok {
			if ip := net.ParseIP(h); ip == nil || ip.IsUnspecified() {
				errs = append(errs, fmt.Errorf("cluster.advertise: %q: the host must be a specific IP address", c.Advertise))
			}
		}
	}
	for i, j := range c.Join {
		if h, ok := hostPort(fmt.Sprintf("cluster.join[%d]", i), j); ok && h == "" {
			errs = append(errs, fmt.Errorf("cluster.join[%d]: %q has no host", i, j))
		}
	}
	if c.EnrollFile != "" && !filepath.IsAbs(c.EnrollFile) {
		errs = append(errs, fmt.Errorf("cluster.enroll_file: %q must be an absolute path", c.EnrollFile))
	}
	return errs
}

func (n Network) validate() []error {
	var errs []error
	if !filepath.IsAbs(n.NetworkdDir) {
		errs = append(errs, fmt.Errorf("network.networkd_dir: %q must be an absolute path", n.NetworkdDir))
	}
	if n.ResolvConf != "" && !filepath.IsAbs(n.ResolvConf) {
		errs = append(errs, fmt.Errorf("network.resolv_conf: %q must be an absolute path", n.ResolvConf))
	}
	if n.ManagementInterface != "" {
		if err := rules.CheckInterfaceName(n.ManagementInterface); err != nil {
			errs = append(errs, fmt.Errorf("network.management_interface: %w", err))
		}
	}
	if d, err := time.ParseDuration(n.ConfirmDeadline); err != nil || d < time.Second || d > time.Hour {
		errs = append(errs, fmt.Errorf("network.confirm_deadline: %q is not a duration between 1s and 1h", n.ConfirmDeadline))
	}
	return errs
}
