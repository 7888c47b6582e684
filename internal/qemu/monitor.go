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
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", m.monitor)
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
