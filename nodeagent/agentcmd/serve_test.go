package agentcmd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/debvisor/debvisor/dvctl"
)

// buildAgent compiles the real binary once per test run.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "debvisor-agent")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/debvisor/debvisor/cmd/debvisor-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// runDvctl runs dvctl in-process and returns stdout.
func runDvctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := dvctl.NewRoot(&out, &errb)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

// TestServeAndShutdown runs the way an operator would: dvctl makes the PKI,
// the real agent binary serves it, dvctl talks to it, SIGTERM stops it.
func TestServeAndShutdown(t *testing.T) {
	bin := buildAgent(t)
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	t.Setenv("DVCTL_CONFIG", filepath.Join(dir, "dvctl.yaml"))
	for _, args := range [][]string{
		{"pki", "init-ca", "--dir", pkiDir, "--cluster", "t"},
		{"pki", "issue", "node", "n1", "--dir", pkiDir, "--host", "127.0.0.1"},
		{"pki", "issue", "client", "root", "--role", "admin", "--dir", pkiDir},
	} {
		if out, err := runDvctl(t, args...); err != nil {
			t.Fatalf("dvctl %v: %v\n%s", args, err, out)
		}
	}
	addr := freePort(t)
	sock := filepath.Join(dir, "a.sock")
	cfg := fmt.Sprintf("node_name: n1\nlisten: %s\nrest_listen: \"\"\nmetrics_listen: \"\"\nsocket: %s\nstate_dir: state\nshutdown_timeout: 5s\ntls:\n  ca: pki/ca.crt\n  cert: pki/n1.crt\n  key: pki/n1.key\n", addr, sock)
	if err := os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", filepath.Join(dir, "agent.yaml"), "--log-format", "json")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitFor(t, lines, "agent serving")

	if out, err := runDvctl(t, "config", "set-context", "t", "--endpoint", addr, "--ca-file", filepath.Join(pkiDir, "ca.crt"),
		"--cert-file", filepath.Join(pkiDir, "root.crt"), "--key-file", filepath.Join(pkiDir, "root.key")); err != nil {
		t.Fatalf("set-context: %v\n%s", err, out)
	}
	out, err := runDvctl(t, "status", "-o", "json")
	if err != nil {
		t.Fatalf("dvctl status: %v\n%s", err, out)
	}
	var node struct {
		Name   string `json:"name"`
		Health struct {
			Status string `json:"status"`
		} `json:"health"`
	}
	if err := json.Unmarshal([]byte(out), &node); err != nil {
		t.Fatalf("status -o json is not JSON: %v\n%s", err, out)
	}
	if node.Name != "n1" {
		t.Errorf("status name = %q", node.Name)
	}
	if out, err := runDvctl(t, "--node", "unix://"+sock, "health", "check"); err != nil || !strings.Contains(out, "succeeded") {
		t.Errorf("health check over the socket: %v\n%s", err, out)
	}
	if out, err := runDvctl(t, "status", "-o", "yaml"); err != nil || !strings.Contains(out, "name: n1") {
		t.Errorf("status -o yaml: %v\n%s", err, out)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not stop within 20 s of SIGTERM")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind after shutdown: %v", err)
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	bin := buildAgent(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(p, []byte("listen: :7443\nlisten_addr: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "serve", "--config", p).CombinedOutput()
	if err == nil {
		t.Fatal("agent started with an unknown config key")
	}
	if !strings.Contains(string(out), "listen_addr") || !strings.Contains(string(out), "[2:1]") {
		t.Errorf("error does not name the line and key:\n%s", out)
	}
	out, err = exec.Command(bin, "serve", "--config", filepath.Join(dir, "missing.yaml")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "missing.yaml") {
		t.Errorf("missing config: %v\n%s", err, out)
	}
}

func waitFor(t *testing.T, lines <-chan string, what string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	var seen []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("agent exited before %q:\n%s", what, strings.Join(seen, "\n"))
			}
			seen = append(seen, l)
			if strings.Contains(l, what) {
				return
			}
		case <-deadline:
			t.Fatalf("no %q within 20 s:\n%s", what, strings.Join(seen, "\n"))
		}
	}
}
