package imagebuilder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/debvisor/debvisor/internal/qemu"
)

// QuickstartConfig describes a local trial boot of a built image.
type QuickstartConfig struct {
	Image string // raw image
	Dvctl string // dvctl binary (makes the PKI and checks the agent)
	Dir   string // state: PKI, SSH key, seed, disk overlay, console log
	// SSHPort and APIPort are the loopback ports forwarded to the guest's
	// 22 and 7443; 0 picks free ones.
	SSHPort, APIPort int
	DiskSize         string
	Timeout          time.Duration
	// Firmware is "auto" (default), "bios" or "uefi" (qemu.Firmware).
	Firmware string
	Out      io.Writer
	// Log receives QEMU's command line at debug level (default: discarded).
	Log *slog.Logger
}

// Quickstart boots the image in QEMU (SeaBIOS under KVM when KVM runs the
// BIOS path in hardware, else UEFI via OVMF under TCG; see
// QuickstartConfig.Firmware; user-mode networking forwarded to loopback
// only) with a fresh cluster CA, node and admin certificates and an SSH key
// delivered on a DEBVISOR-SEED volume, waits until the agent answers over
// mTLS and prints how to reach it. QEMU keeps running in the background;
// the printed command stops it.
func Quickstart(ctx context.Context, c QuickstartConfig) error {
	if c.DiskSize == "" {
		c.DiskSize = "8G"
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	fw, err := qemu.ParseFirmware(c.Firmware)
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return err
	}
	img, err := filepath.Abs(c.Image)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	x := func(name string, args ...string) error {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	pki := filepath.Join(dir, "pki")
	if _, err := os.Stat(filepath.Join(pki, "ca.crt")); err != nil {
		steps := [][]string{
			{"pki", "init-ca", "--dir", pki},
			{"pki", "issue", "node", "node1", "--dir", pki, "--host", "127.0.0.1", "--host", "node1"},
			{"pki", "issue", "client", "admin", "--role", "admin", "--dir", pki},
		}
		for _, s := range steps {
			if err := x(c.Dvctl, s...); err != nil {
				return err
			}
		}
	}
	key := filepath.Join(dir, "id_ed25519")
	if _, err := os.Stat(key); err != nil {
		if err := x("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "debvisor-quickstart", "-f", key); err != nil {
			return err
		}
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return err
	}
	preseed := fmt.Sprintf("version: 1\nhostname: node1\nssh_authorized_keys:\n  - %s\npki:\n  ca: pki/ca.crt\n  cert: pki/node1.crt\n  key: pki/node1.key\n", strings.TrimSpace(string(pub)))
	ps := filepath.Join(dir, "preseed.yaml")
	if err := os.WriteFile(ps, []byte(preseed), 0o600); err != nil {
		return err
	}
	seed := filepath.Join(dir, "seed.iso")
	if err := MakeSeed(ps, seed); err != nil {
		return err
	}
	disk := filepath.Join(dir, "disk.qcow2")
	if err := qemu.Overlay(ctx, img, disk, c.DiskSize); err != nil {
		return err
	}
	for _, p := range []*int{&c.SSHPort, &c.APIPort} {
		if *p == 0 {
			if *p, err = qemu.FreePort(); err != nil {
				return err
			}
		}
	}
	m, err := qemu.Start(ctx, qemu.Config{
		Name: "debvisor-quickstart", Dir: dir, Firmware: fw, MemoryMiB: 2048, CPUs: 2,
		Drives: []qemu.Drive{
			{File: disk, Format: "qcow2"},
			{File: seed, Format: "raw", ReadOnly: true},
		},
		Network:   true,
		Forwards:  []qemu.Forward{{Host: c.SSHPort, Guest: 22}, {Host: c.APIPort, Guest: qemu.AgentPort}},
		SerialLog: filepath.Join(dir, "console.log"),
		Detach:    true,
		Log:       c.Log,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Out, "QEMU started (%s firmware, %s; pid file %s); console log: %s\nwaiting for the agent on %s ...\n",
		m.Firmware(), m.Accel(), m.PIDFile(), m.SerialLog(), m.AgentEndpoint())
	dvctl := qemu.Dvctl{Path: c.Dvctl, Creds: qemu.Credentials{
		CA: filepath.Join(pki, "ca.crt"), Cert: filepath.Join(pki, "admin.crt"), Key: filepath.Join(pki, "admin.key"),
	}}
	status := dvctl.StatusArgs(m.AgentEndpoint())
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var answer []byte
	err = m.WaitFor(wctx, 3*time.Second, "the agent", func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, c.Dvctl, status...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("dvctl status: %w: %s", err, out)
		}
		answer = out
		return nil
	})
	if err != nil {
		return errors.Join(fmt.Errorf("the agent did not answer within %s (see %s)", c.Timeout, m.SerialLog()), err)
	}
	fmt.Fprintf(c.Out, "agent answered after %s:\n%s\n", time.Since(start).Round(time.Second), answer)
	fmt.Fprintf(c.Out, `Reach the node:
  agent (mTLS):  %s %s
  shell (SSH):   ssh -i %s -p %d -o StrictHostKeyChecking=no root@127.0.0.1
  console:       tail -f %s   (serial console; tty1 runs kmscon)
  stop:          kill $(cat %s)
`, c.Dvctl, strings.Join(status, " "), key, c.SSHPort, m.SerialLog(), m.PIDFile())
	return nil
}
