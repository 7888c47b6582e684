package imagebuilder_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/debvisor/debvisor/imagebuilder"
)

type vmConfig struct {
	// DiskSize is the virtual disk size; larger than the image so firstboot
	// has something to grow into.
	DiskSize string
	Seed     string
	Network  bool
	// Firmware is "uefi" (the default: OVMF, always TCG) or "bios"
	// (SeaBIOS, QEMU's default firmware).
	Firmware string
	// Accel for BIOS boots: "" picks KVM when imagebuilder.KVMForBIOS says
	// it runs the BIOS path in hardware, else TCG; "kvm" or "tcg" force one.
	Accel string
	// CPU is QEMU's -cpu model; "" keeps QEMU's default.
	CPU string
	// Kernel, when set, makes QEMU load this kernel itself (-kernel, with
	// Initrd as -initrd when set and Append as -append) through its
	// linuxboot option ROM instead of the disk's bootloader; the firmware
	// still runs first.
	Kernel, Initrd, Append string
	// DebugCon, when set, is a file receiving SeaBIOS's debug output
	// (isa-debugcon on port 0x402).
	DebugCon string
}

// firmwareArgs returns QEMU's machine, accelerator and firmware arguments
// and the accelerator used. OVMF stops with a KVM emulation failure on the
// development machines (DESIGN.md), so UEFI always runs under TCG; the BIOS
// path runs under KVM where KVM executes it in hardware.
func firmwareArgs(t testing.TB, dir string, cfg vmConfig) ([]string, string) {
	t.Helper()
	switch cfg.Firmware {
	case "", "uefi":
		return machineArgs(t, dir, imagebuilder.FirmwareUEFI, "tcg"), "tcg"
	case "bios":
		// No -bios and no pflash: QEMU loads its bundled SeaBIOS.
		kvm, why := imagebuilder.KVMForBIOS()
		switch {
		case cfg.Accel == "kvm":
			if _, err := os.Stat("/dev/kvm"); err != nil {
				t.Fatalf("KVM requested: %v", err)
			}
			if !kvm {
				t.Logf("KVM forced although %s", why)
			}
			return machineArgs(t, dir, imagebuilder.FirmwareBIOS, "kvm"), "kvm"
		case cfg.Accel == "" && kvm:
			return machineArgs(t, dir, imagebuilder.FirmwareBIOS, "kvm"), "kvm"
		case cfg.Accel == "" || cfg.Accel == "tcg":
			if cfg.Accel == "" {
				t.Logf("BIOS boot under TCG: %s", why)
			}
			return machineArgs(t, dir, imagebuilder.FirmwareBIOS, "tcg"), "tcg"
		}
		t.Fatalf("unknown accelerator %q", cfg.Accel)
	}
	t.Fatalf("unknown firmware %q (want uefi or bios)", cfg.Firmware)
	return nil, ""
}

// vm is one QEMU guest booting a copy-on-write overlay of the image.
type vm struct {
	t                testing.TB
	dir              string
	cmd              *exec.Cmd
	serial           string
	sshPort, apiPort int
	sshKey           string
	accel            string // "kvm" or "tcg"
	exited           chan error
	stopped          bool
}

func startVM(t testing.TB, image string, cfg vmConfig, sshKey string) *vm {
	t.Helper()
	requireTools(t, "qemu-system-x86_64", "qemu-img")
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image, disk, cfg.DiskSize)
	fw, accel := firmwareArgs(t, dir, cfg)
	v := &vm{t: t, dir: dir, serial: filepath.Join(dir, "serial.log"), sshKey: sshKey, exited: make(chan error, 1), accel: accel}
	args := append(fw, "-m", "1536", "-smp", "2",
		"-drive", "file="+disk+",if=virtio,format=qcow2",
		"-serial", "file:"+v.serial,
		"-display", "none", "-monitor", "none",
	)
	if cfg.CPU != "" {
		args = append(args, "-cpu", cfg.CPU)
	}
	if cfg.Kernel != "" {
		args = append(args, "-kernel", cfg.Kernel, "-append", cfg.Append)
		if cfg.Initrd != "" {
			args = append(args, "-initrd", cfg.Initrd)
		}
	}
	if cfg.DebugCon != "" {
		args = append(args, "-chardev", "file,id=debugcon,path="+cfg.DebugCon, "-device", "isa-debugcon,iobase=0x402,chardev=debugcon")
	}
	if cfg.Seed != "" {
		args = append(args, "-drive", "file="+cfg.Seed+",if=virtio,format=raw,readonly=on")
	}
	if cfg.Network {
		v.sshPort, v.apiPort = freePort(t), freePort(t)
		args = append(args, "-nic", fmt.Sprintf("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:%d-:22,hostfwd=tcp:127.0.0.1:%d-:7443", v.sshPort, v.apiPort))
	} else {
		args = append(args, "-nic", "none")
	}
	v.cmd = exec.Command("qemu-system-x86_64", args...)
	var stderr bytes.Buffer
	v.cmd.Stderr = &stderr
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	go func() { v.exited <- v.cmd.Wait() }()
	t.Cleanup(func() {
		v.stop()
		if t.Failed() {
			t.Logf("qemu stderr:\n%s", stderr.String())
			t.Logf("serial console (last 6000 bytes):\n%s", tail(v.console(), 6000))
		}
	})
	return v
}

// stop ends QEMU (idempotent).
func (v *vm) stop() {
	if v.stopped {
		return
	}
	v.stopped = true
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-v.exited:
		v.exited <- err
	case <-time.After(10 * time.Second):
		v.cmd.Process.Kill()
	}
}

func (v *vm) console() string {
	b, _ := os.ReadFile(v.serial)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// waitConsole waits for text on the serial console, failing early if
// QEMU exits.
func (v *vm) waitConsole(d time.Duration, text string) {
	v.t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(v.console(), text) {
		select {
		case err := <-v.exited:
			v.exited <- err
			v.t.Fatalf("qemu exited (%v) before the console showed %q", err, text)
		default:
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("timed out after %s waiting for %q on the serial console", d, text)
		}
		time.Sleep(time.Second)
	}
}

// ssh runs a command in the guest as root over the forwarded port.
func (v *vm) ssh(command string) (string, error) {
	cmd := exec.Command("ssh", "-i", v.sshKey, "-p", fmt.Sprint(v.sshPort),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "root@127.0.0.1", command)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (v *vm) mustSSH(command string) string {
	v.t.Helper()
	out, err := v.ssh(command)
	if err != nil {
		v.t.Fatalf("guest: %s: %v\n%s", command, err, out)
	}
	return strings.TrimSpace(out)
}

// waitSSH waits until the guest accepts SSH.
func (v *vm) waitSSH(d time.Duration) {
	v.t.Helper()
	deadline := time.Now().Add(d)
	for {
		if _, err := v.ssh("true"); err == nil {
			return
		}
		select {
		case err := <-v.exited:
			v.exited <- err
			v.t.Fatalf("qemu exited (%v) before SSH came up", err)
		default:
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("timed out after %s waiting for SSH", d)
		}
		time.Sleep(3 * time.Second)
	}
}

// machineArgs is imagebuilder.QEMUMachineArgs, failing the test on error.
func machineArgs(t testing.TB, dir, firmware, accel string) []string {
	t.Helper()
	args, err := imagebuilder.QEMUMachineArgs(dir, firmware, accel)
	if err != nil {
		t.Fatal(err)
	}
	return args
}
