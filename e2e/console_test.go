package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/debvisor/debvisor/internal/qemu"
)

// timedConsole stamps the node's serial console with the time each line
// arrived (every second), so a failed run says where a shutdown or a boot
// spent its time, or since when a guest has printed nothing. systemd's
// "A stop job is running" updates end in a carriage return, not a
// newline: both end a line here.
type timedConsole struct {
	path  string // the serial log QEMU writes
	start time.Time

	mu    sync.Mutex
	lines []string
	last  time.Time // when the last line arrived
	off   int64
	part  []byte
}

func newTimedConsole(ctx context.Context, path string) *timedConsole {
	c := &timedConsole{path: path, start: time.Now(), last: time.Now()}
	go func() {
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				c.poll()
			}
		}
	}()
	return c
}

func (c *timedConsole) poll() {
	f, err := os.Open(c.path)
	if err != nil {
		return
	}
	defer f.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := f.Seek(c.off, io.SeekStart); err != nil {
		return
	}
	b, _ := io.ReadAll(f)
	if len(b) == 0 {
		return
	}
	c.off += int64(len(b))
	c.part = append(c.part, b...)
	now := time.Now()
	for {
		i := bytes.IndexAny(c.part, "\r\n")
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(c.part[:i]))
		c.part = c.part[i+1:]
		if line == "" {
			continue
		}
		c.lines = append(c.lines, fmt.Sprintf("[+%s] %s", fmtElapsed(now.Sub(c.start)), line))
		c.last = now
	}
}

func fmtElapsed(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%02d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// tail is the last n stamped lines and how long the console has been
// silent.
func (c *timedConsole) tail(n int) string {
	c.poll()
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.lines
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return fmt.Sprintf("%s\n(the last line arrived %s after the machine started; silent for %s since)",
		strings.Join(l, "\n"), fmtElapsed(c.last.Sub(c.start)), time.Since(c.last).Round(time.Second))
}

// save writes the whole stamped console to $DEBVISOR_E2E_CONSOLES/<test>.log
// when that variable names a directory (to read where every boot and
// shutdown of a passing run spent its time).
func (c *timedConsole) save(t testing.TB) {
	dir := os.Getenv("DEBVISOR_E2E_CONSOLES")
	if dir == "" {
		return
	}
	c.poll()
	c.mu.Lock()
	data := strings.Join(c.lines, "\n") + "\n"
	c.mu.Unlock()
	p := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".log")
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = os.WriteFile(p, []byte(data), 0o644)
	}
	if err != nil {
		t.Errorf("saving the stamped serial console: %v", err)
		return
	}
	t.Logf("stamped serial console: %s", p)
}

// silence says how long the console has printed nothing.
func (c *timedConsole) silence() string {
	c.poll()
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("the console's last line came %s ago", time.Since(c.last).Round(time.Second))
}

// guestState asks QEMU's monitor where the guest's CPUs are: after a
// silent console it tells a halted or spinning guest (and where it
// spins: firmware, GRUB or the kernel) from a busy one.
func guestState(m *qemu.Machine) string {
	var b strings.Builder
	for _, cmd := range []string{"info status", "info cpus", "info registers -a"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := m.HMP(ctx, cmd)
		cancel()
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", cmd, err)
			continue
		}
		if cmd == "info registers -a" {
			out = registersSummary(out)
		}
		fmt.Fprintf(&b, "%s:\n%s\n", cmd, out)
	}
	return b.String()
}

// registersSummary keeps the lines of "info registers" that place a CPU:
// the instruction pointer and flags, the mode, CR0/CR3/CR4, halted.
func registersSummary(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		for _, p := range []string{"CPU#", "RIP=", "EIP=", "CS =", "CR0=", "EFER="} {
			if strings.HasPrefix(strings.TrimSpace(l), p) {
				keep = append(keep, l)
				break
			}
		}
	}
	return strings.Join(keep, "\n")
}
