package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"
)

// HMP runs one human monitor command (Config.Monitor) and returns its
// output: "savevm NAME" snapshots the running guest into its qcow2 drives,
// "info status" reports whether it runs.
func (m *Machine) HMP(ctx context.Context, command string) (string, error) {
	if m.monitor == "" {
		return "", errors.New("qemu: started without Monitor")
	}
	c, err := m.dialMonitor(ctx)
	if err != nil {
		return "", fmt.Errorf("monitor: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	r := bufio.NewReader(c)
	// The monitor greets and prompts with "(qemu) ".
	if _, err := readUntilPrompt(r); err != nil {
		return "", fmt.Errorf("monitor greeting: %w", err)
	}
	if _, err := fmt.Fprintf(c, "%s\n", command); err != nil {
		return "", err
	}
	out, err := readUntilPrompt(r)
	if err != nil {
		return out, fmt.Errorf("monitor %q: %w", command, err)
	}
	// The terminal echoes the command first.
	if i := strings.Index(out, "\n"); i >= 0 {
		out = out[i+1:]
	}
	return strings.TrimSpace(strings.ReplaceAll(out, "\r", "")), nil
}

// dialMonitor connects to the monitor socket, waiting (within ctx) for
// QEMU to create it: right after Start it may not exist yet.
func (m *Machine) dialMonitor(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", m.monitor)
		if err == nil || !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-m.exited:
			return nil, fmt.Errorf("%w (QEMU exited: %s)", err, strings.TrimSpace(m.stderr.String()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func readUntilPrompt(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		c, err := r.ReadByte()
		if err != nil {
			return b.String(), err
		}
		b.WriteByte(c)
		if strings.HasSuffix(b.String(), "(qemu) ") {
			return strings.TrimSuffix(b.String(), "(qemu) "), nil
		}
	}
}

// Kill ends QEMU at once with SIGKILL, like pulling the power cord: the
// guest gets no chance to flush anything.
func (m *Machine) Kill() error {
	if m.pid <= 0 {
		return errors.New("qemu: not running")
	}
	if err := syscall.Kill(m.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill QEMU (pid %d): %w", m.pid, err)
	}
	select {
	case <-m.exited:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("QEMU (pid %d) did not exit after SIGKILL", m.pid)
	}
}

// SetLink connects (up) or disconnects (!up) a NIC's cable: "set_link" on
// the monitor for a device id such as Config.HubNICs' "hub0". The guest
// sees its carrier go and come back.
func (m *Machine) SetLink(ctx context.Context, device string, up bool) error {
	state := "off"
	if up {
		state = "on"
	}
	out, err := m.HMP(ctx, "set_link "+device+" "+state)
	if err != nil {
		return err
	}
	// Success prints nothing; a wrong id prints QEMU's complaint.
	if out != "" {
		return fmt.Errorf("set_link %s %s: %s", device, state, out)
	}
	return nil
}
