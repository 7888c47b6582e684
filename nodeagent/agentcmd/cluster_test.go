package agentcmd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runAgentCmd runs debvisor-agent's command line in-process.
func runAgentCmd(args ...string) (string, error) {
	var out, errb bytes.Buffer
	root := NewRoot(&Env{Stdout: &out, Stderr: &errb})
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// nodeConfig writes an agent config for a node living in dir.
func nodeConfig(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.yaml")
	cfg := fmt.Sprintf("node_name: %s\nstate_dir: %s\ntls:\n  ca: %s\n  cert: %s\n  key: %s\nlibvirt:\n  socket: \"\"\ncluster:\n  bind: 127.0.0.1:0\n  mdns: false\n",
		name, filepath.Join(dir, "state"), filepath.Join(dir, "pki/ca.crt"), filepath.Join(dir, "pki/node.crt"), filepath.Join(dir, "pki/node.key"))
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestClusterInitAndTypedJoin: `cluster init` on one node prints the CA hash
// and a token; a running agent serves it; `cluster join ADDRESS --token
// --ca-cert-hash` typed on another node enrolls it; bad input is refused
// before anything is written.
func TestClusterInitAndTypedJoin(t *testing.T) {
	first := nodeConfig(t, "c1")
	out, err := runAgentCmd("cluster", "init", "--config", first, "--name", "lab")
	if err != nil {
		t.Fatalf("cluster init: %v\n%s", err, out)
	}
	hash := regexp.MustCompile(`CA certificate hash: (sha256:[0-9a-f]{64})`).FindStringSubmatch(out)
	tok := regexp.MustCompile(`join token:\s+([a-z0-9]{6}\.[a-z0-9]{16})`).FindStringSubmatch(out)
	if hash == nil || tok == nil || !strings.Contains(out, "cluster lab bootstrapped on c1") {
		t.Fatalf("cluster init output:\n%s", out)
	}
	if _, err := runAgentCmd("cluster", "init", "--config", first); err == nil || !strings.Contains(err.Error(), "already in a cluster") {
		t.Fatalf("second init: %v", err)
	}
	// Serve the first node from its config with the real binary.
	addr := freePort(t)
	srv := exec.Command(buildAgent(t), "serve", "--config", first, "--listen", addr, "--rest-listen", "", "--socket", "", "--metrics-listen", "")
	var logb bytes.Buffer
	srv.Stderr = &logb
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not listening on %s:\n%s", addr, logb.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	second := nodeConfig(t, "c2")
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--token", "nope", "--ca-cert-hash", hash[1], "127.0.0.1:1"}, "token:"},
		{[]string{"--token", tok[1], "--ca-cert-hash", "sha256:00", "127.0.0.1:1"}, "ca cert hash"},
		{[]string{"--token", tok[1], "--ca-cert-hash", hash[1]}, "nothing to join"},
		{[]string{"--ca-cert-hash", hash[1], "127.0.0.1:1"}, `"token" not set`},
	}
	for _, b := range bad {
		out, err := runAgentCmd(append([]string{"cluster", "join", "--config", second}, b.args...)...)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("cluster join %v = %v\n%s; want %q", b.args, err, out, b.want)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(second), "pki")); err == nil {
		t.Fatal("a refused join wrote the PKI directory")
	}
	out, err = runAgentCmd("cluster", "join", "--config", second, addr, "--token", tok[1], "--ca-cert-hash", hash[1], "--wait", "20s")
	if err != nil || !strings.Contains(out, "joined cluster lab as c2 via "+addr+" (certificate signed by c1)") {
		t.Fatalf("typed join: %v\n%s\nagent log:\n%s", err, out, logb.String())
	}
	for _, f := range []string{"pki/ca.crt", "pki/node.crt", "pki/node.key", "state/cluster/state.json"} {
		if _, err := os.Stat(filepath.Join(filepath.Dir(second), f)); err != nil {
			t.Errorf("after the join: %v", err)
		}
	}
}
