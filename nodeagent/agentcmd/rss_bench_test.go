package agentcmd

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/debvisor/debvisor/internal/pki"
)

// BenchmarkAgentRSSAtRest starts the real agent binary with all listeners,
// lets it settle, and reports its resident memory (VmRSS) at rest.
//
//	go test -run '^$' -bench AgentRSS -benchtime 3x ./nodeagent/agentcmd/
func BenchmarkAgentRSSAtRest(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "debvisor-agent")
	if out, err := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "github.com/debvisor/debvisor/cmd/debvisor-agent").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	dir := b.TempDir()
	ca, err := pki.NewCA("bench", pki.Options{})
	if err != nil {
		b.Fatal(err)
	}
	node, err := ca.IssueNode("n1", []string{"127.0.0.1"}, pki.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := pki.Save(pki.Files{Cert: filepath.Join(dir, "ca.crt"), Key: filepath.Join(dir, "ca.key")}, ca.Cert, ca.Key, false); err != nil {
		b.Fatal(err)
	}
	if err := pki.Save(pki.Files{Cert: filepath.Join(dir, "n1.crt"), Key: filepath.Join(dir, "n1.key")}, node.Cert, node.Key, false); err != nil {
		b.Fatal(err)
	}
	var total float64
	for i := 0; i < b.N; i++ {
		cfg := fmt.Sprintf("listen: 127.0.0.1:0\nrest_listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\n"+
			"socket: %[1]s/a%[2]d.sock\nstate_dir: %[1]s/state\n"+
			"tls:\n  ca: %[1]s/ca.crt\n  cert: %[1]s/n1.crt\n  key: %[1]s/n1.key\n", dir, i)
		p := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(bin, "serve", "--config", p)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(3 * time.Second) // at rest: started, first health checks done
		rss, err := vmRSS(cmd.Process.Pid)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err != nil {
			b.Fatal(err)
		}
		total += rss
	}
	b.ReportMetric(total/float64(b.N), "rss-MiB")
}

func vmRSS(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d (did the agent exit?)", pid)
}
