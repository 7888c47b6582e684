// Package qemu owns booting DebVisor disk images in QEMU on a development
// or CI machine: the choice of firmware and accelerator (OVMF or SeaBIOS,
// TCG or KVM, see docs/architecture.md "QEMU on the development
// machines"), copy-on-write overlays, user-mode networking forwarded to
// loopback only, the serial console as a log file, starting and stopping
// QEMU, and waiting for the agent in the guest (WaitFor with any probe;
// Dvctl runs the real client). The quickstart, the image builder's
// end-to-end tests and its benchmarks use it. It is a leaf that imports
// nothing of the project: the image builder links it, and the dependency
// guard keeps the builder away from the API client (a test that wants
// api/client probes with it through WaitFor).
package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Drive is a disk attached as virtio-blk, in the order given (vda, vdb…).
type Drive struct {
	File     string
	Format   string // "qcow2" or "raw"
	ReadOnly bool
}

// Forward is a TCP port forward from 127.0.0.1:Host to the guest's Guest
// port (QEMU user-mode networking; nothing listens beyond loopback).
type Forward struct {
	Host, Guest int
}

// Config describes one guest.
type Config struct {
	// Name is QEMU's -name.
	Name string
	// Dir holds the guest's state: the OVMF variable store copy and, by
	// default, the serial log and (Detach) the pid file.
	Dir string
	// Firmware is FirmwareAuto (default), FirmwareBIOS or FirmwareUEFI.
	Firmware Firmware
	// Accel forces an accelerator; "" picks one with ChooseMachine.
	Accel Accel
	// MemoryMiB and CPUs default to 1536 and 2; CPU is -cpu ("" keeps
	// QEMU's default).
	MemoryMiB, CPUs int
	CPU             string
	Drives          []Drive
	// Network adds a virtio user-mode NIC with Forwards; without it the
	// guest has no NIC at all (-nic none).
	Network  bool
	Forwards []Forward
	// HubNICs adds one virtio NIC per MAC address, all on one QEMU hub (a
	// repeater: every frame one of them sends reaches all the others) and
	// on nothing else. Device ids are HubNICID(i) ("hub0"...) for SetLink. They
	// let a guest test bonds and VLANs against a peer NIC of its own.
	HubNICs []string
	// SerialLog receives the serial console (default Dir/serial.log).
	SerialLog string
	// Kernel, when set, makes QEMU load this kernel itself (-kernel, with
	// Initrd and Append) through its linuxboot option ROM instead of the
	// disk's boot loader; the firmware still runs first.
	Kernel, Initrd, Append string
	// DebugCon, when set, receives SeaBIOS's debug output (isa-debugcon on
	// port 0x402).
	DebugCon string
	// Monitor opens QEMU's human monitor on a unix socket in Dir, for
	// Machine.HMP (savevm, loadvm, info status).
	Monitor bool
	// LoadVM starts from the internal snapshot of that name (qcow2 drives
	// only; a snapshot made with `savevm`): the guest resumes where it was.
	LoadVM string
	// Detach lets QEMU outlive this process (-daemonize with a pid file in
	// Dir); Stop still works from the pid.
	Detach bool
	// Log receives the QEMU command line and state changes (debug).
	Log *slog.Logger
}

// HubNICID is the device id of Config.HubNICs[i], for Machine.SetLink.
func HubNICID(i int) string { return fmt.Sprintf("hub%d", i) }

// Machine is a running guest.
type Machine struct {
	cfg      Config
	firmware Firmware
	accel    Accel
	why      string
	pidFile  string
	monitor  string

	cmd    *exec.Cmd // nil when detached
	pid    int
	exited chan struct{}
	err    error // valid once exited is closed
	stderr syncBuffer

	stopOnce sync.Once
	stopErr  error
}

// Start boots a guest. It returns once QEMU runs (for Detach, once it has
// daemonized); ctx bounds only the start, not the guest's life: call Stop.
func Start(ctx context.Context, c Config) (*Machine, error) {
	if c.Dir == "" {
		return nil, errors.New("qemu: no state directory")
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 1536
	}
	if c.CPUs == 0 {
		c.CPUs = 2
	}
	if c.SerialLog == "" {
		c.SerialLog = filepath.Join(c.Dir, "serial.log")
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, err
	}
	m := &Machine{cfg: c, exited: make(chan struct{})}
	fw, accel, why, err := resolveMachine(c.Firmware, c.Accel)
	if err != nil {
		return nil, err
	}
	m.firmware, m.accel, m.why = fw, accel, why
	args, err := MachineArgs(c.Dir, fw, accel)
	if err != nil {
		return nil, err
	}
	if c.Name != "" {
		args = append(args, "-name", c.Name)
	}
	args = append(args, "-m", strconv.Itoa(c.MemoryMiB), "-smp", strconv.Itoa(c.CPUs))
	if c.CPU != "" {
		args = append(args, "-cpu", c.CPU)
	}
	for _, d := range c.Drives {
		spec := "file=" + d.File + ",if=virtio,format=" + d.Format
		if d.ReadOnly {
			spec += ",readonly=on"
		}
		args = append(args, "-drive", spec)
	}
	if c.Network {
		nic := "user,model=virtio-net-pci"
		for _, f := range c.Forwards {
			nic += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", f.Host, f.Guest)
		}
		args = append(args, "-nic", nic)
	} else if len(c.HubNICs) == 0 {
		args = append(args, "-nic", "none")
	}
	for i, mac := range c.HubNICs {
		id := HubNICID(i)
		args = append(args, "-netdev", "hubport,id="+id+"-port,hubid=0",
			"-device", "virtio-net-pci,id="+id+",netdev="+id+"-port,mac="+mac)
	}
	if c.Kernel != "" {
		args = append(args, "-kernel", c.Kernel, "-append", c.Append)
		if c.Initrd != "" {
			args = append(args, "-initrd", c.Initrd)
		}
	}
	if c.DebugCon != "" {
		args = append(args, "-chardev", "file,id=debugcon,path="+c.DebugCon, "-device", "isa-debugcon,iobase=0x402,chardev=debugcon")
	}
	args = append(args, "-serial", "file:"+c.SerialLog, "-display", "none")
	if c.Monitor {
		m.monitor = filepath.Join(c.Dir, "monitor.sock")
		os.Remove(m.monitor)
		args = append(args, "-monitor", "unix:"+m.monitor+",server=on,wait=off")
	} else {
		args = append(args, "-monitor", "none")
	}
	if c.LoadVM != "" {
		args = append(args, "-loadvm", c.LoadVM)
	}
	if c.Detach {
		m.pidFile = filepath.Join(c.Dir, "qemu.pid")
		os.Remove(m.pidFile)
		args = append(args, "-daemonize", "-pidfile", m.pidFile)
	}
	c.Log.DebugContext(ctx, "starting QEMU", slog.String("firmware", string(fw)), slog.String("accel", string(accel)), slog.String("args", strings.Join(args, " ")))

	if c.Detach {
		out, err := exec.CommandContext(ctx, "qemu-system-x86_64", args...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("qemu-system-x86_64: %w\n%s", err, out)
		}
		pb, err := os.ReadFile(m.pidFile)
		if err != nil {
			return nil, fmt.Errorf("QEMU pid file: %w", err)
		}
		if m.pid, err = strconv.Atoi(strings.TrimSpace(string(pb))); err != nil {
			return nil, fmt.Errorf("QEMU pid file %s: %w", m.pidFile, err)
		}
		go m.watchPID()
		return m, nil
	}
	// Not CommandContext: the guest lives until Stop, not until ctx ends.
	m.cmd = exec.Command("qemu-system-x86_64", args...)
	m.cmd.Stderr = &m.stderr
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu-system-x86_64: %w", err)
	}
	m.pid = m.cmd.Process.Pid
	go func() {
		m.err = m.cmd.Wait()
		close(m.exited)
	}()
	return m, nil
}

// watchPID notices a detached QEMU's exit by polling its pid.
func (m *Machine) watchPID() {
	for {
		if err := syscall.Kill(m.pid, 0); errors.Is(err, syscall.ESRCH) {
			m.err = errors.New("QEMU exited")
			close(m.exited)
			return
		}
		time.Sleep(time.Second)
	}
}

// Firmware and Accel say how the guest boots.
func (m *Machine) Firmware() Firmware { return m.firmware }
func (m *Machine) Accel() Accel       { return m.accel }

// AccelReason says why KVM was not picked for a BIOS boot ("" otherwise).
func (m *Machine) AccelReason() string { return m.why }

// PID is QEMU's process id; PIDFile its pid file when detached.
func (m *Machine) PID() int        { return m.pid }
func (m *Machine) PIDFile() string { return m.pidFile }

// SerialLog is the file receiving the serial console.
func (m *Machine) SerialLog() string { return m.cfg.SerialLog }

// HostPort returns the loopback port forwarded to the guest's port, or 0.
func (m *Machine) HostPort(guest int) int {
	for _, f := range m.cfg.Forwards {
		if f.Guest == guest {
			return f.Host
		}
	}
	return 0
}

// Done is closed when QEMU has exited; Err then says how.
func (m *Machine) Done() <-chan struct{} { return m.exited }

// Err is QEMU's exit status once Done is closed.
func (m *Machine) Err() error {
	select {
	case <-m.exited:
		return m.err
	default:
		return nil
	}
}

// Stderr is what QEMU printed on stderr (not for detached guests).
func (m *Machine) Stderr() string { return m.stderr.String() }

// Console returns the serial console so far.
func (m *Machine) Console() string {
	b, _ := os.ReadFile(m.cfg.SerialLog)
	return string(b)
}

// WaitConsole waits until text appears on the serial console. It fails at
// once when QEMU exits, and when ctx ends.
func (m *Machine) WaitConsole(ctx context.Context, text string) error {
	return m.poll(ctx, time.Second, "the serial console to show "+strconv.Quote(text), func(context.Context) error {
		if strings.Contains(m.Console(), text) {
			return nil
		}
		return errNotYet
	})
}

// WaitFor calls probe every interval until it returns nil. It fails at
// once when QEMU exits, and when ctx ends (with probe's last error).
func (m *Machine) WaitFor(ctx context.Context, interval time.Duration, what string, probe func(ctx context.Context) error) error {
	return m.poll(ctx, interval, what, probe)
}

var errNotYet = errors.New("not yet")

func (m *Machine) poll(ctx context.Context, interval time.Duration, what string, probe func(context.Context) error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := probe(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-m.exited:
			if m.err == nil {
				return fmt.Errorf("QEMU exited before %s", what)
			}
			return fmt.Errorf("QEMU exited (%w) before %s", m.err, what)
		case <-ctx.Done():
			if errors.Is(err, errNotYet) {
				return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
			}
			return fmt.Errorf("waiting for %s: %w (last attempt: %w)", what, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// Stop ends QEMU: SIGTERM, then SIGKILL after 10 s. It is idempotent and
// safe to call from a test's cleanup after the guest already exited.
func (m *Machine) Stop() error {
	m.stopOnce.Do(func() {
		if m.pid <= 0 {
			return
		}
		select {
		case <-m.exited:
			return
		default:
		}
		if err := syscall.Kill(m.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			m.stopErr = fmt.Errorf("stop QEMU (pid %d): %w", m.pid, err)
			return
		}
		select {
		case <-m.exited:
		case <-time.After(10 * time.Second):
			if err := syscall.Kill(m.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				m.stopErr = fmt.Errorf("kill QEMU (pid %d): %w", m.pid, err)
				return
			}
			select {
			case <-m.exited:
			case <-time.After(10 * time.Second):
				m.stopErr = fmt.Errorf("QEMU (pid %d) did not exit after SIGKILL", m.pid)
			}
		}
	})
	return m.stopErr
}

// SSH runs command in the guest as root over the port forwarded to its
// 22, authenticating with key; it returns the combined output.
func (m *Machine) SSH(ctx context.Context, key, command string) (string, error) {
	port := m.HostPort(22)
	if port == 0 {
		return "", errors.New("no port is forwarded to the guest's SSH")
	}
	cmd := exec.CommandContext(ctx, "ssh", "-i", key, "-p", strconv.Itoa(port),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "root@127.0.0.1", command)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Overlay creates a qcow2 overlay of size (QEMU's notation, "6G") backed
// by the raw image base, so a guest can write without changing base.
func Overlay(ctx context.Context, base, overlay, size string) error {
	os.Remove(overlay)
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, overlay, size).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img create %s: %w\n%s", overlay, err, out)
	}
	return nil
}

// FreePort returns a TCP port that was free on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer is a bytes.Buffer QEMU's stderr copier and readers share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
