package imagebuilder_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/debvisor/debvisor/internal/qemu"
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
	// Accel for BIOS boots: "" picks KVM when qemu.KVMForBIOS says it runs
	// the BIOS path in hardware, else TCG; "kvm" or "tcg" force one.
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

// vm is one QEMU guest (internal/qemu) booting a copy-on-write overlay of
// the image, with the test's helpers around it.
type vm struct {
	t       testing.TB
	m       *qemu.Machine
	apiPort int
	sshKey  string
	accel   qemu.Accel
}

// firmware maps the tests' choice to the runner's: "" means UEFI here
// (OVMF, which always runs under TCG: it stops with a KVM emulation failure
// on the development machines, see docs/architecture.md).
func firmware(t testing.TB, cfg vmConfig) qemu.Firmware {
	t.Helper()
	switch cfg.Firmware {
	case "", "uefi":
		return qemu.FirmwareUEFI
	case "bios":
		return qemu.FirmwareBIOS
	}
	t.Fatalf("unknown firmware %q (want uefi or bios)", cfg.Firmware)
	return ""
}

func startVM(t testing.TB, image string, cfg vmConfig, sshKey string) *vm {
	t.Helper()
	requireTools(t, "qemu-system-x86_64", "qemu-img")
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.qcow2")
	if err := qemu.Overlay(context.Background(), image, disk, cfg.DiskSize); err != nil {
		t.Fatal(err)
	}
	qc := qemu.Config{
		Dir: dir, Firmware: firmware(t, cfg), Accel: qemu.Accel(cfg.Accel), MemoryMiB: 1536, CPUs: 2, CPU: cfg.CPU,
		Drives:  []qemu.Drive{{File: disk, Format: "qcow2"}},
		Network: cfg.Network,
		Kernel:  cfg.Kernel, Initrd: cfg.Initrd, Append: cfg.Append, DebugCon: cfg.DebugCon,
	}
	if cfg.Seed != "" {
		qc.Drives = append(qc.Drives, qemu.Drive{File: cfg.Seed, Format: "raw", ReadOnly: true})
	}
	v := &vm{t: t, sshKey: sshKey}
	if cfg.Network {
		v.apiPort = freePort(t)
		qc.Forwards = []qemu.Forward{{Host: freePort(t), Guest: 22}, {Host: v.apiPort, Guest: qemu.AgentPort}}
	}
	m, err := qemu.Start(context.Background(), qc)
	if err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	v.m, v.accel = m, m.Accel()
	if m.Firmware() == qemu.FirmwareBIOS {
		switch {
		case cfg.Accel == "kvm" && m.AccelReason() != "":
			t.Logf("KVM forced although %s", m.AccelReason())
		case cfg.Accel == "" && m.Accel() == qemu.AccelTCG:
			t.Logf("BIOS boot under TCG: %s", m.AccelReason())
		}
	}
	t.Cleanup(func() {
		v.stop()
		if t.Failed() {
			t.Logf("qemu stderr:\n%s", m.Stderr())
			t.Logf("serial console (last 6000 bytes):\n%s", tail(v.console(), 6000))
		}
	})
	return v
}

// stop ends QEMU (idempotent).
func (v *vm) stop() {
	if err := v.m.Stop(); err != nil {
		v.t.Log(err)
	}
}

func (v *vm) console() string { return v.m.Console() }

// exited reports whether QEMU is gone, and how.
func (v *vm) exited() (bool, error) {
	select {
	case <-v.m.Done():
		return true, v.m.Err()
	default:
		return false, nil
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := v.m.WaitConsole(ctx, text); err != nil {
		v.t.Fatalf("after up to %s: %v", d, err)
	}
}

// ssh runs a command in the guest as root over the forwarded port.
func (v *vm) ssh(command string) (string, error) {
	return v.m.SSH(context.Background(), v.sshKey, command)
}

func (v *vm) mustSSH(command string) string {
	v.t.Helper()
	out, err := v.ssh(command)
	if err != nil {
		v.t.Fatalf("guest: %s: %v\n%s", command, err, out)
	}
	return strings.TrimSpace(out)
}

// waitSSH waits until the guest accepts SSH, failing early if QEMU exits.
func (v *vm) waitSSH(d time.Duration) {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := v.m.WaitFor(ctx, 3*time.Second, "SSH", func(ctx context.Context) error {
		_, err := v.ssh("true")
		return err
	})
	if err != nil {
		v.t.Fatalf("after up to %s: %v", d, err)
	}
}
