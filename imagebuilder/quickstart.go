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
	// Firmware is FirmwareAuto (default), FirmwareBIOS or FirmwareUEFI.
	Firmware string
	Out      io.Writer
}

// Firmware choices for Quickstart: the image boots either way.
const (
	// FirmwareAuto boots through the BIOS path under KVM when KVM can run
	// it in hardware (KVMForBIOS; fast) and through UEFI under TCG
	// otherwise.
	FirmwareAuto = "auto"
	// FirmwareBIOS boots with QEMU's SeaBIOS (KVM when KVMForBIOS, else TCG).
	FirmwareBIOS = "bios"
	// FirmwareUEFI boots with OVMF, always under TCG: OVMF stops with a KVM
	// emulation failure on the development machines (DESIGN.md).
	FirmwareUEFI = "uefi"
)

// quickstartMachine picks the firmware and accelerator for a firmware
// choice, given whether KVM can run the BIOS boot path at full speed
// (KVMForBIOS).
func quickstartMachine(firmware string, kvm bool) (fw, accel string, err error) {
	switch firmware {
	case "", FirmwareAuto:
		if kvm {
			return FirmwareBIOS, "kvm", nil
		}
		return FirmwareUEFI, "tcg", nil
	case FirmwareBIOS:
		if kvm {
			return FirmwareBIOS, "kvm", nil
		}
		return FirmwareBIOS, "tcg", nil
	case FirmwareUEFI:
		return FirmwareUEFI, "tcg", nil
	}
	return "", "", fmt.Errorf("firmware %q: want %s, %s or %s", firmware, FirmwareAuto, FirmwareBIOS, FirmwareUEFI)
}

// KVMForBIOS reports whether the BIOS boot path should run under KVM, and
// why not. /dev/kvm must open, and KVM must execute real-mode and unpaged
// protected-mode code in hardware: SeaBIOS, boot.img and all of GRUB i386-pc
// run that way. PVM (kvm_pvm, the "KVM" of the development machines) runs
// such code in KVM's instruction emulator: GRUB alone then needed about a
// minute to start (its LZMA decompressor ran at a few KiB/s) and, with the
// machine loaded, had not printed anything after five minutes, whereas TCG
// reaches the kernel in seconds.
func KVMForBIOS() (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Sprintf("/dev/kvm: %v", err)
	}
	f.Close()
	if KVMIsPVM() {
		return false, "KVM is PVM (kvm_pvm), which emulates the real-mode and unpaged code of the BIOS boot path instruction by instruction"
	}
	return true, ""
}

// Quickstart boots the image in QEMU (SeaBIOS under KVM when KVM runs the
// BIOS path in hardware, else UEFI via OVMF under TCG; see QuickstartConfig.Firmware;
// user-mode networking forwarded to loopback only) with a fresh cluster CA, node and admin
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
	kvm, _ := KVMForBIOS()
	fw, accel, err := quickstartMachine(c.Firmware, kvm)
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
	os.Remove(disk)
	if err := x("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", img, disk, c.DiskSize); err != nil {
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
	machine, err := QEMUMachineArgs(dir, fw, accel)
	if err != nil {
		return err
	}
	args := append([]string{"-daemonize", "-pidfile", pidfile, "-name", "debvisor-quickstart",
		"-m", "2048", "-smp", "2"}, machine...)
	args = append(args,
		"-drive", "file="+disk+",if=virtio,format=qcow2",
		"-drive", "file="+seed+",if=virtio,format=raw,readonly=on",
		"-nic", fmt.Sprintf("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:%d-:22,hostfwd=tcp:127.0.0.1:%d-:7443", c.SSHPort, c.APIPort),
		"-serial", "file:"+serial, "-display", "none", "-monitor", "none")
	if err := x("qemu-system-x86_64", args...); err != nil {
		return err
	}
	fmt.Fprintf(c.Out, "QEMU started (%s firmware, %s; pid file %s); console log: %s\nwaiting for the agent on 127.0.0.1:%d ...\n", fw, accel, pidfile, serial, c.APIPort)
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
