package imagebuilder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
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
	Out              io.Writer
}

// Quickstart boots the image in QEMU (UEFI via OVMF, user-mode networking
// forwarded to loopback only) with a fresh cluster CA, node and admin
// certificates and an SSH key delivered on a DEBVISOR-SEED volume, waits
// until the agent answers over mTLS and prints how to reach it. QEMU keeps
// running in the background; the printed command stops it.
func Quickstart(ctx context.Context, c QuickstartConfig) error {
	if c.DiskSize == "" {
		c.DiskSize = "8G"
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
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
	os.Remove(disk)
	if err := x("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", img, disk, c.DiskSize); err != nil {
		return err
	}
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	vb, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS_4M.fd")
	if err != nil {
		return fmt.Errorf("OVMF (Debian package ovmf): %w", err)
	}
	if err := os.WriteFile(vars, vb, 0o600); err != nil {
		return err
	}
	for _, p := range []*int{&c.SSHPort, &c.APIPort} {
		if *p == 0 {
			if *p, err = freeLoopbackPort(); err != nil {
				return err
			}
		}
	}
	serial := filepath.Join(dir, "console.log")
	pidfile := filepath.Join(dir, "qemu.pid")
	// OVMF stops with a KVM emulation failure on the development machines
	// (DESIGN.md), so the UEFI boot uses TCG.
	args := []string{"-daemonize", "-pidfile", pidfile, "-name", "debvisor-quickstart",
		"-machine", "q35", "-accel", "tcg", "-m", "2048", "-smp", "2",
		"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
		"-drive", "if=pflash,format=raw,file=" + vars,
		"-drive", "file=" + disk + ",if=virtio,format=qcow2",
		"-drive", "file=" + seed + ",if=virtio,format=raw,readonly=on",
		"-nic", fmt.Sprintf("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:%d-:22,hostfwd=tcp:127.0.0.1:%d-:7443", c.SSHPort, c.APIPort),
		"-serial", "file:" + serial, "-display", "none", "-monitor", "none"}
	if err := x("qemu-system-x86_64", args...); err != nil {
		return err
	}
	fmt.Fprintf(c.Out, "QEMU started (pid file %s); console log: %s\nwaiting for the agent on 127.0.0.1:%d ...\n", pidfile, serial, c.APIPort)
	status := []string{"status", "--node", fmt.Sprintf("127.0.0.1:%d", c.APIPort), "--ca", filepath.Join(pki, "ca.crt"),
		"--cert", filepath.Join(pki, "admin.crt"), "--key", filepath.Join(pki, "admin.key")}
	deadline := time.Now().Add(c.Timeout)
	start := time.Now()
	for {
		out, err := exec.CommandContext(ctx, c.Dvctl, status...).CombinedOutput()
		if err == nil {
			fmt.Fprintf(c.Out, "agent answered after %s:\n%s\n", time.Since(start).Round(time.Second), out)
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.Join(fmt.Errorf("the agent did not answer within %s (see %s)", c.Timeout, serial), ctx.Err())
		}
		time.Sleep(3 * time.Second)
	}
	fmt.Fprintf(c.Out, `Reach the node:
  agent (mTLS):  %s %s
  shell (SSH):   ssh -i %s -p %d -o StrictHostKeyChecking=no root@127.0.0.1
  console:       tail -f %s   (serial console; tty1 runs kmscon)
  stop:          kill $(cat %s)
`, c.Dvctl, strings.Join(status, " "), key, c.SSHPort, serial, pidfile)
	return nil
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
