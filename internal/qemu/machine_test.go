package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func requireQEMU(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (Debian packages qemu-system-x86, qemu-utils): %v", tool, err)
		}
	}
}

// TestStartStop boots empty machines (no disk: the firmware alone) through
// both firmwares, attached and detached, waits for the firmware's own
// output, and stops them.
func TestStartStop(t *testing.T) {
	requireQEMU(t)
	tests := []struct {
		name     string
		firmware Firmware
		detach   bool
	}{
		{"bios", FirmwareBIOS, false},
		{"uefi", FirmwareUEFI, false},
		{"bios detached", FirmwareBIOS, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			debug := filepath.Join(dir, "seabios.log")
			port, err := FreePort()
			if err != nil {
				t.Fatal(err)
			}
			m, err := Start(context.Background(), Config{
				Name: "debvisor-qemu-test", Dir: dir, Firmware: tt.firmware, Accel: AccelTCG,
				MemoryMiB: 256, CPUs: 1, Network: true, Forwards: []Forward{{Host: port, Guest: AgentPort}},
				DebugCon: debug, Detach: tt.detach,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Stop() })
			if m.Firmware() != tt.firmware || m.Accel() != AccelTCG || m.AccelReason() == "" {
				t.Fatalf("machine %s/%s (%s)", m.Firmware(), m.Accel(), m.AccelReason())
			}
			if m.AgentEndpoint() != "127.0.0.1:"+strconv.Itoa(port) || m.HostPort(22) != 0 {
				t.Fatalf("endpoint %q", m.AgentEndpoint())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			switch tt.firmware {
			case FirmwareUEFI:
				// OVMF's boot manager reports on the serial console.
				if err := m.WaitConsole(ctx, "BdsDxe"); err != nil {
					t.Fatal(err)
				}
			default:
				err := m.WaitFor(ctx, time.Second, "SeaBIOS", func(context.Context) error {
					b, _ := os.ReadFile(debug)
					if strings.Contains(string(b), "SeaBIOS") {
						return nil
					}
					return os.ErrNotExist
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			if tt.detach {
				if m.PIDFile() == "" || syscall.Kill(m.PID(), 0) != nil {
					t.Fatalf("detached QEMU not running (pid %d, file %q)", m.PID(), m.PIDFile())
				}
			}
			if err := m.Stop(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-m.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("QEMU still running after Stop")
			}
			if err := m.Stop(); err != nil {
				t.Fatalf("second Stop: %v", err)
			}
		})
	}
}

// TestWaitFailsWhenQEMUExits: a guest QEMU refuses to start ends every
// wait at once, with QEMU's reason on stderr.
func TestWaitFailsWhenQEMUExits(t *testing.T) {
	requireQEMU(t)
	m, err := Start(context.Background(), Config{Dir: t.TempDir(), Firmware: FirmwareBIOS, Accel: AccelTCG,
		Drives: []Drive{{File: filepath.Join(t.TempDir(), "missing.qcow2"), Format: "qcow2"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t0 := time.Now()
	err = m.WaitConsole(ctx, "never")
	if err == nil || !strings.Contains(err.Error(), "QEMU exited") || time.Since(t0) > 30*time.Second {
		t.Fatalf("WaitConsole: %v after %s", err, time.Since(t0))
	}
	if !strings.Contains(m.Stderr(), "missing.qcow2") {
		t.Fatalf("stderr does not name the missing disk: %q", m.Stderr())
	}
	if m.Err() == nil {
		t.Fatal("Err is nil after QEMU failed")
	}
}

func TestWaitHonoursContext(t *testing.T) {
	m := &Machine{exited: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := m.WaitFor(ctx, 10*time.Millisecond, "the agent", func(context.Context) error { return os.ErrDeadlineExceeded })
	if err == nil || !strings.Contains(err.Error(), "waiting for the agent") || !strings.Contains(err.Error(), "last attempt") {
		t.Fatalf("WaitFor: %v", err)
	}
}

func TestOverlay(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ov := filepath.Join(dir, "ov.qcow2")
	if err := Overlay(context.Background(), base, ov, "4M"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "info", ov).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "backing file: "+base) || !strings.Contains(string(out), "virtual size: 4 MiB") {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	if err := Overlay(context.Background(), filepath.Join(dir, "nope"), ov, "4M"); err == nil {
		t.Fatal("overlay of a missing base succeeded")
	}
}

// TestHubNICs starts a machine with two NICs on a hub and no user-mode
// NIC: QEMU puts both on the hub, set_link accepts their ids (the hub's
// "info network" does not show link state: the e2e network test sees the
// carrier go in the guest), and an unknown id is an error.
func TestHubNICs(t *testing.T) {
	requireQEMU(t)
	m, err := Start(context.Background(), Config{
		Name: "debvisor-qemu-hub", Dir: t.TempDir(), Firmware: FirmwareBIOS, Accel: AccelTCG,
		MemoryMiB: 128, CPUs: 1, HubNICs: []string{"52:54:00:00:01:01", "52:54:00:00:01:02"}, Monitor: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := m.HMP(ctx, "info network")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"hub0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:01:01", "hub1: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:01:02"} {
		if !strings.Contains(out, want) {
			t.Fatalf("info network lacks %q:\n%s", want, out)
		}
	}
	if err := m.SetLink(ctx, "hub1", false); err != nil {
		t.Fatal(err)
	}
	if err := m.SetLink(ctx, "hub1", true); err != nil {
		t.Fatal(err)
	}
	if err := m.SetLink(ctx, "no-such-nic", false); err == nil {
		t.Fatal("set_link of an unknown device succeeded")
	}
}
