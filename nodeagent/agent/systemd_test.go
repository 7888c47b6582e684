package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

func TestWatchdogVeto(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	fresh := timestamppb.New(now.Add(-10 * time.Second))
	tests := []struct {
		name string
		s    *v1.HealthSummary
		want string
	}{
		{"healthy and fresh", &v1.HealthSummary{CheckTime: fresh, Checks: []*v1.HealthCheck{{Name: "api-serving", Ok: true}}}, ""},
		{"degraded elsewhere is still alive", &v1.HealthSummary{CheckTime: fresh, Checks: []*v1.HealthCheck{{Name: "api-serving", Ok: true}, {Name: "failed-units", Ok: false}}}, ""},
		{"no round yet", &v1.HealthSummary{}, "has not completed a round"},
		{"stale round", &v1.HealthSummary{CheckTime: timestamppb.New(now.Add(-5 * time.Minute))}, "has not completed a round"},
		{"API down", &v1.HealthSummary{CheckTime: fresh, Checks: []*v1.HealthCheck{{Name: "api-serving", Ok: false, Message: "refused"}}}, "api-serving: refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := watchdogVeto(tt.s, now, 90*time.Second)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Fatalf("watchdogVeto = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSystemdNotifyProtocol runs the agent the way systemd does for a
// Type=notify unit with WatchdogSec: READY=1 arrives once the API serves,
// then WATCHDOG=1 keepalives, on the real notify socket protocol.
func TestSystemdNotifyProtocol(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int((3 * time.Second).Microseconds())))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	a, err := New(testConfig(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	_, done := runAgent(t, ctx, a)
	defer func() { cancel(); <-done }()

	var got []string
	buf := make([]byte, 512)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && (!contains(got, "READY=1") || !contains(got, "WATCHDOG=1")) {
		_ = conn.SetReadDeadline(deadline)
		n, _, err := conn.ReadFromUnix(buf)
		if err != nil {
			break
		}
		got = append(got, strings.TrimSpace(string(buf[:n])))
	}
	if len(got) == 0 || got[0] != "READY=1" || !contains(got, "WATCHDOG=1") {
		t.Fatalf("notifications = %q, want READY=1 first, then WATCHDOG=1", got)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
