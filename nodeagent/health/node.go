package health

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Checks that make up the node's one health report. The same registry
// answers the API (GetNode, CheckHealth), `dvctl health`, the systemd
// watchdog (which the agent only keeps fed while APIServing passes) and
// the upgrade commit (a boot is committed only when no critical check
// fails).

// UnitsActive fails unless every named systemd unit is active.
func UnitsActive(units ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		var bad []string
		for _, u := range units {
			out, err := exec.CommandContext(ctx, "systemctl", "is-active", u).Output()
			state := strings.TrimSpace(string(out))
			if err != nil || state != "active" {
				if state == "" {
					state = fmt.Sprint(err)
				}
				bad = append(bad, u+" is "+state)
			}
		}
		if len(bad) > 0 {
			return errors.New(strings.Join(bad, "; "))
		}
		return nil
	}
}

// NoFailedUnits fails when systemd lists failed units, naming them.
func NoFailedUnits() func(context.Context) error {
	return func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, "systemctl", "list-units", "--state=failed", "--no-legend", "--plain").Output()
		if err != nil {
			return fmt.Errorf("systemctl list-units: %w", err)
		}
		var failed []string
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 {
				failed = append(failed, f[0])
			}
		}
		if len(failed) > 0 {
			return fmt.Errorf("failed units: %s", strings.Join(failed, ", "))
		}
		return nil
	}
}

// MountedRW fails unless dir is the root of a mounted filesystem that is
// writable.
func MountedRW(dir string) func(context.Context) error {
	return func(context.Context) error {
		var st, parent unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		if err := unix.Stat(dir+"/..", &parent); err != nil {
			return fmt.Errorf("%s/..: %w", dir, err)
		}
		if st.Dev == parent.Dev && dir != "/" {
			return fmt.Errorf("%s is not a mount point (the data partition is not mounted)", dir)
		}
		var fs unix.Statfs_t
		if err := unix.Statfs(dir, &fs); err != nil {
			return fmt.Errorf("statfs %s: %w", dir, err)
		}
		if fs.Flags&unix.ST_RDONLY != 0 {
			return fmt.Errorf("%s is mounted read-only", dir)
		}
		return nil
	}
}

// Script runs an executable (validate-components.sh) and fails with its
// output when it exits non-zero.
func Script(path string) func(context.Context) error {
	return func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, path).CombinedOutput()
		if err != nil {
			msg := strings.TrimSpace(string(out))
			if msg == "" {
				msg = err.Error()
			}
			return fmt.Errorf("%s: %s", path, strings.ReplaceAll(msg, "\n", "; "))
		}
		return nil
	}
}

// TLSServing fails unless a TLS handshake with addr succeeds and the
// server's certificate chains to roots: the API listener is accepting and
// serving its certificate.
func TLSServing(addr string, roots func() *x509.CertPool) func(context.Context) error {
	return func(ctx context.Context) error {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return err
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
		}
		d := tls.Dialer{Config: &tls.Config{RootCAs: roots(), MinVersion: tls.VersionTLS12,
			// The node certificate names the node's addresses; loopback is
			// what is dialled here, so verify the chain, not the name.
			InsecureSkipVerify: true, //nolint:gosec // chain verified in VerifyConnection
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("no server certificate")
				}
				inter := x509.NewCertPool()
				for _, c := range cs.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots(), Intermediates: inter})
				return err
			}}}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c, err := d.DialContext(dctx, "tcp", net.JoinHostPort(host, port))
		if err != nil {
			return fmt.Errorf("the API on %s does not answer: %w", addr, err)
		}
		return c.Close()
	}
}

// CertValidFor fails when the certificate expires within min.
func CertValidFor(leaf func() *x509.Certificate, now func() time.Time, minLeft time.Duration) func(context.Context) error {
	return func(context.Context) error {
		c := leaf()
		if c == nil {
			return errors.New("no node certificate loaded")
		}
		if left := c.NotAfter.Sub(now()); left < minLeft {
			return fmt.Errorf("node certificate expires at %s (in %s, less than %s): renew it", c.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Minute), minLeft)
		}
		return nil
	}
}

// OnDebVisorNode reports whether this system was booted by the DebVisor
// boot loader (a slot on the kernel command line); node-only checks (units,
// the data partition, the image's validate script) apply only there.
func OnDebVisorNode(cmdline string) bool {
	b, err := os.ReadFile(cmdline)
	return err == nil && bytes.Contains(b, []byte("debvisor.slot="))
}
