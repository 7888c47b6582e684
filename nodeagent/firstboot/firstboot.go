// Package firstboot owns what a DebVisor node does once, on its first boot
// (debvisor-firstboot.service → `debvisor-agent firstboot`): applying the
// preseed, and putting the network TUI on tty1 when no network came up. It writes
// osimage.FirstbootStamp last, so an interrupted first boot runs again.
// Two first-boot jobs run beside it, in their own units, so the agent
// (which waits for firstboot) does not wait for them — seconds each under
// emulation: SSH host keys (debvisor-hostkeys.service) and growing the
// data partition (debvisor-growdata.service → GrowData, every boot).
package firstboot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/debvisor/debvisor/osimage"
)

// Config says where and how to run. Zero values are the node's defaults.
type Config struct {
	// Root is the system to act on; "/" on a node. Tests use a temp dir,
	// which disables the steps that need real block devices.
	Root string
	// NetworkWait bounds how long to wait for an address before deciding
	// that no network is up.
	NetworkWait time.Duration
	// Force runs even when the stamp exists.
	Force bool
	Log   *slog.Logger
	// Now is the clock (stamp contents).
	Now func() time.Time
}

// Result reports what ran.
type Result struct {
	Skipped      bool
	Preseed      string
	NetworkUp    bool
	NetcfgQueued bool
}

func (c *Config) defaults() {
	if c.Root == "" {
		c.Root = "/"
	}
	if c.NetworkWait == 0 {
		c.NetworkWait = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) path(p string) string { return filepath.Join(c.Root, p) }

func (c *Config) live() bool { return c.Root == "/" }

// Run performs the first boot. Each step logs what it did; a failing step
// other than the preseed is logged and the rest still run, because a node
// without, say, a grown data partition is still better reachable than one
// stuck half-configured. A broken preseed fails the run (and the unit), so
// the operator sees it instead of a node with the wrong identity.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	log := cfg.Log
	res := &Result{}
	if _, err := os.Stat(cfg.path(osimage.FirstbootStamp)); err == nil && !cfg.Force {
		log.Info("first boot already done", "stamp", osimage.FirstbootStamp)
		res.Skipped = true
		return res, nil
	}
	var errs []error
	if cfg.live() {
		// The seed volume's by-label link comes from udev: let the
		// coldplug queue drain first (short: firstboot starts seconds
		// after udev's trigger). Growing the data partition is not
		// firstboot's: debvisor-growdata.service does it beside it.
		_ = run(ctx, "udevadm", "settle", "--timeout=15")
	}
	src, err := applyPreseed(ctx, &cfg)
	if err != nil {
		return res, fmt.Errorf("preseed: %w", err)
	}
	res.Preseed = src
	if cfg.live() {
		res.NetworkUp = waitNetwork(ctx, cfg.NetworkWait)
		if !res.NetworkUp {
			log.Warn("no network is up; starting the network configuration console on tty1")
			if err := run(ctx, "systemctl", "start", "--no-block", "debvisor-netcfg.service"); err != nil {
				errs = append(errs, err)
			} else {
				res.NetcfgQueued = true
			}
		} else {
			log.Info("network is up")
		}
	}
	stamp := cfg.path(osimage.FirstbootStamp)
	if err := os.MkdirAll(filepath.Dir(stamp), 0o755); err != nil {
		return res, err
	}
	if err := os.WriteFile(stamp, []byte(cfg.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return res, fmt.Errorf("write stamp: %w", err)
	}
	log.Info("first boot complete", "stamp", osimage.FirstbootStamp)
	return res, errors.Join(errs...)
}

// findSeed returns the directory holding preseed.yaml and a cleanup: a
// DEBVISOR-SEED volume mounted read-only, else the ESP.
func findSeed(ctx context.Context, cfg *Config) (dir string, cleanup func(), err error) {
	cleanup = func() {}
	if cfg.live() {
		dev := filepath.Join("/dev/disk/by-label", osimage.SeedLabel)
		if _, err := os.Stat(dev); err == nil {
			mnt := "/run/debvisor/seed"
			if err := os.MkdirAll(mnt, 0o700); err != nil {
				return "", cleanup, err
			}
			if err := run(ctx, "mount", "-o", "ro", dev, mnt); err != nil {
				return "", cleanup, fmt.Errorf("mount seed volume: %w", err)
			}
			cleanup = func() { _ = run(context.Background(), "umount", mnt) }
			if _, err := os.Stat(filepath.Join(mnt, osimage.SeedFile)); err == nil {
				return mnt, cleanup, nil
			}
			cfg.Log.Warn("seed volume has no preseed", "file", osimage.SeedFile)
		}
	} else if d := cfg.path("/seed"); exists(filepath.Join(d, osimage.SeedFile)) {
		return d, cleanup, nil
	}
	esp := cfg.path(filepath.Join(osimage.ESPMount, filepath.Dir(osimage.ESPPreseed)))
	if exists(filepath.Join(esp, filepath.Base(osimage.ESPPreseed))) {
		return esp, cleanup, nil
	}
	return "", cleanup, nil
}

func applyPreseed(ctx context.Context, cfg *Config) (string, error) {
	dir, cleanup, err := findSeed(ctx, cfg)
	defer cleanup()
	if err != nil || dir == "" {
		if dir == "" && err == nil {
			cfg.Log.Info("no preseed found")
		}
		return "", err
	}
	file := filepath.Join(dir, osimage.SeedFile)
	if !exists(file) {
		file = filepath.Join(dir, filepath.Base(osimage.ESPPreseed))
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return file, err
	}
	p, err := osimage.ParsePreseed(data)
	if err != nil {
		return file, err
	}
	if err := Apply(cfg.Root, dir, p); err != nil {
		return file, err
	}
	if cfg.live() && p.Hostname != "" {
		_ = run(ctx, "hostname", p.Hostname)
	}
	if cfg.live() && p.Network != nil {
		// networkd may have started before firstboot: have it read the new
		// files now (at worst they take effect at the next boot).
		if err := run(ctx, "networkctl", "reload"); err != nil {
			cfg.Log.Warn("networkd did not reload; the preseeded network takes effect at its next start", "err", err)
		}
	}
	cfg.Log.Info("preseed applied", "from", file, "hostname", p.Hostname, "pki", p.PKI != nil, "cluster", p.Cluster != nil,
		"network", p.Network != nil, "files", len(p.Files))
	return file, nil
}

// Apply writes a parsed preseed into the system at root; seedDir is where
// the files it names (PKI) are.
func Apply(root, seedDir string, p *osimage.Preseed) error {
	at := func(p string) string { return filepath.Join(root, p) }
	// Checked before anything is written: a network section the agent
	// would refuse fails the preseed as a whole.
	np, err := planNetwork(p)
	if err != nil {
		return err
	}
	if p.Hostname != "" {
		if err := writeFile(at("/etc/hostname"), []byte(p.Hostname+"\n"), 0o644); err != nil {
			return err
		}
		hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n", p.Hostname)
		if err := writeFile(at("/etc/hosts"), []byte(hosts), 0o644); err != nil {
			return err
		}
	}
	if len(p.SSHAuthorizedKeys) > 0 {
		ak := at("/root/.ssh/authorized_keys")
		old, _ := os.ReadFile(ak)
		var buf bytes.Buffer
		buf.Write(old)
		if len(old) > 0 && !bytes.HasSuffix(old, []byte("\n")) {
			buf.WriteByte('\n')
		}
		for _, k := range p.SSHAuthorizedKeys {
			if !bytes.Contains(old, []byte(k)) {
				buf.WriteString(strings.TrimSpace(k) + "\n")
			}
		}
		if err := os.MkdirAll(filepath.Dir(ak), 0o700); err != nil {
			return err
		}
		if err := writeFile(ak, buf.Bytes(), 0o600); err != nil {
			return err
		}
	}
	if p.PKI != nil {
		for _, f := range []struct {
			src, dst string
			mode     os.FileMode
		}{{p.PKI.CA, osimage.PKICA, 0o644}, {p.PKI.Cert, osimage.PKICert, 0o644}, {p.PKI.Key, osimage.PKIKey, 0o600}} {
			data, err := os.ReadFile(filepath.Join(seedDir, f.src))
			if err != nil {
				return fmt.Errorf("pki: %w", err)
			}
			if err := writeFile(at(f.dst), data, f.mode); err != nil {
				return fmt.Errorf("pki: %w", err)
			}
		}
		if err := os.Chmod(at(osimage.PKIDir), 0o700); err != nil {
			return err
		}
	}
	if p.AgentConfig != "" {
		if err := writeFile(at(osimage.AgentConfigPath), []byte(p.AgentConfig), 0o600); err != nil {
			return err
		}
	}
	if p.Cluster != nil {
		if err := applyCluster(at, seedDir, *p.Cluster); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	if np != nil {
		if err := np.write(root); err != nil {
			return err
		}
	}
	for _, f := range p.Files {
		mode, _ := f.FileMode()
		if err := writeFile(at(f.Path), []byte(f.Content), os.FileMode(mode)); err != nil {
			return fmt.Errorf("files: %w", err)
		}
	}
	return nil
}

// applyCluster hands the preseed's cluster section to the agent: a CA made
// beforehand is installed into the PKI directory, the rest goes to the
// enroll file (0600: it holds the join token), which the agent acts on at
// its next start (bootstrap or join) and then removes.
func applyCluster(at func(string) string, seedDir string, c osimage.ClusterEnrollment) error {
	if c.CA != "" {
		for _, f := range []struct {
			src, dst string
			mode     os.FileMode
		}{{c.CA, osimage.PKICA, 0o644}, {c.CAKey, osimage.PKICAKey, 0o600}} {
			data, err := os.ReadFile(filepath.Join(seedDir, f.src))
			if err != nil {
				return err
			}
			if err := writeFile(at(f.dst), data, f.mode); err != nil {
				return err
			}
		}
		if err := os.Chmod(at(osimage.PKIDir), 0o700); err != nil {
			return err
		}
		c.CA, c.CAKey = "", ""
	}
	data, err := c.Marshal()
	if err != nil {
		return err
	}
	return writeFile(at(osimage.ClusterEnrollPath), data, 0o600)
}

// waitNetwork reports whether any non-loopback interface gets a global
// unicast address within d. No such interface at all means no network.
func waitNetwork(ctx context.Context, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		ifs, err := net.Interfaces()
		candidates := 0
		if err == nil {
			for _, i := range ifs {
				if i.Flags&net.FlagLoopback != 0 {
					continue
				}
				candidates++
				addrs, _ := i.Addrs()
				for _, a := range addrs {
					if ipn, ok := a.(*net.IPNet); ok && ipn.IP.IsGlobalUnicast() {
						return true
					}
				}
			}
		}
		if candidates == 0 || time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func writeFile(p string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".tmp-" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := output(ctx, name, args...)
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out))
	}
	return nil
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	var b bytes.Buffer
	c := exec.CommandContext(ctx, name, args...)
	c.Stdout, c.Stderr = &b, &b
	err := c.Run()
	return b.String(), err
}
