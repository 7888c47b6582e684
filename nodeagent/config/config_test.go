package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string // substring; "" means success
		check   func(t *testing.T, c Config)
	}{
		{name: "empty is defaults", in: "", check: func(t *testing.T, c Config) {
			if c.Listen != ":7443" || c.TLS.CA != "/etc/debvisor/pki/ca.crt" {
				t.Errorf("defaults not applied: %+v", c)
			}
		}},
		{name: "override", in: "listen: 127.0.0.1:9000\nshutdown_timeout: 3s\nlog_format: json\n", check: func(t *testing.T, c Config) {
			if c.Listen != "127.0.0.1:9000" || c.ShutdownGrace() != 3*time.Second || c.LogFormat != "json" {
				t.Errorf("got %+v", c)
			}
			if c.RESTListen != ":7444" {
				t.Errorf("unset field lost its default: %q", c.RESTListen)
			}
		}},
		{name: "unknown key names line", in: "listen: :1\nlisten_addr: :2\n", wantErr: "[2:1] unknown field \"listen_addr\""},
		{name: "unknown nested key", in: "tls:\n  ca: a\n  crt: b\n", wantErr: "unknown field \"crt\""},
		{name: "bad address", in: "listen: nonsense\n", wantErr: "listen: \"nonsense\" is not host:port"},
		{name: "bad level", in: "log_level: loud\n", wantErr: "log_level:"},
		{name: "bad duration", in: "shutdown_timeout: soon\n", wantErr: "shutdown_timeout"},
		{name: "relative socket", in: "socket: agent.sock\n", wantErr: "socket: \"agent.sock\" must be an absolute path"},
		{name: "empty tls", in: "tls:\n  key: \"\"\n", wantErr: "tls.key: must not be empty"},
		{name: "wrong type", in: "listen: [1, 2]\n", wantErr: "listen"},
		{name: "libvirt section", in: "libvirt:\n  socket: \"\"\n", check: func(t *testing.T, c Config) {
			if c.Libvirt.Socket != "" || c.Libvirt.URI != "qemu:///system" {
				t.Errorf("libvirt: %+v", c.Libvirt)
			}
		}},
		{name: "relative libvirt socket", in: "libvirt:\n  socket: libvirt-sock\n", wantErr: "libvirt.socket: \"libvirt-sock\" must be an absolute path"},
		{name: "bad libvirt uri", in: "libvirt:\n  uri: qemu\n", wantErr: "libvirt.uri:"},
		{name: "relative seed dir", in: "libvirt:\n  seed_dir: seeds\n", wantErr: "libvirt.seed_dir:"},
		{name: "bad domain type", in: "libvirt:\n  domain_type: xen\n", wantErr: "libvirt.domain_type:"},
		{name: "unknown libvirt key", in: "libvirt:\n  sock: /x\n", wantErr: "unknown field \"sock\""},
		{name: "not yaml", in: "listen: \"unterminated\n", wantErr: "["},
		{name: "cluster defaults", in: "", check: func(t *testing.T, c Config) {
			if !c.Cluster.Enabled || !c.Cluster.MDNS || c.Cluster.Bind != "0.0.0.0:7946" || c.Cluster.EnrollFile != "/etc/debvisor/cluster-enroll.yaml" {
				t.Errorf("cluster defaults: %+v", c.Cluster)
			}
		}},
		{name: "cluster section", in: "cluster:\n  bind: 10.0.0.5:7946\n  advertise: 10.0.0.5:7946\n  mdns: false\n  join: [10.0.1.2:7443, \"n1.lab:7443\"]\n", check: func(t *testing.T, c Config) {
			if c.Cluster.MDNS || len(c.Cluster.Join) != 2 || c.Cluster.Advertise != "10.0.0.5:7946" {
				t.Errorf("cluster: %+v", c.Cluster)
			}
		}},
		{name: "cluster bind not host:port", in: "cluster:\n  bind: 7946\n", wantErr: "cluster.bind: \"7946\" is not host:port"},
		{name: "cluster bind hostname", in: "cluster:\n  bind: node1:7946\n", wantErr: "cluster.bind: \"node1:7946\": the host must be an IP address"},
		{name: "cluster bad port", in: "cluster:\n  bind: \":99999\"\n", wantErr: "port \"99999\" is not a number"},
		{name: "cluster advertise unspecified", in: "cluster:\n  advertise: 0.0.0.0:7946\n", wantErr: "cluster.advertise:"},
		{name: "cluster join without host", in: "cluster:\n  join: [\":7443\"]\n", wantErr: "cluster.join[0]: \":7443\" has no host"},
		{name: "cluster relative enroll file", in: "cluster:\n  enroll_file: enroll.yaml\n", wantErr: "cluster.enroll_file:"},
		{name: "cluster unknown key", in: "cluster:\n  gossip: x\n", wantErr: "unknown field \"gossip\""},
		{name: "network defaults", in: "", check: func(t *testing.T, c Config) {
			n := c.Network
			if !n.Enabled || n.NetworkdDir != "/etc/systemd/network" || n.Deadline() != 60*time.Second || n.ManagementInterface != "" {
				t.Errorf("network defaults: %+v", n)
			}
		}},
		{name: "network section", in: "network:\n  management_interface: enp1s0\n  confirm_deadline: 2m\n  networkd_dir: /run/nd\n", check: func(t *testing.T, c Config) {
			if c.Network.ManagementInterface != "enp1s0" || c.Network.Deadline() != 2*time.Minute || c.Network.NetworkdDir != "/run/nd" {
				t.Errorf("network: %+v", c.Network)
			}
		}},
		{name: "network deadline too long", in: "network:\n  confirm_deadline: 2h\n", wantErr: "network.confirm_deadline: \"2h\" is not a duration between 1s and 1h"},
		{name: "network relative dir", in: "network:\n  networkd_dir: nd\n", wantErr: "network.networkd_dir:"},
		{name: "network bad management name", in: "network:\n  management_interface: a/b\n", wantErr: "network.management_interface:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse() error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadRelativePaths(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(p, []byte("tls:\n  ca: pki/ca.crt\n  cert: /abs/node.crt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.CA != filepath.Join(dir, "pki/ca.crt") || c.TLS.Cert != "/abs/node.crt" {
		t.Errorf("paths not resolved against the config file: %+v", c.TLS)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("Load of a missing non-default file succeeded")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("listen: :7443\ntls:\n  ca: x\n"))
	f.Add([]byte("shutdown_timeout: 5s\nlog_level: debug\n"))
	f.Add([]byte("{listen: [\n"))
	f.Add([]byte("&a [*a, *a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses must also validate: Parse never returns a config
		// the agent would refuse to start with.
		if verr := c.Validate(); verr != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", verr)
		}
	})
}
