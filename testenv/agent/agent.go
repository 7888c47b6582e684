// Package agent starts a real debvisor-agent for tests: it builds the agent binary, makes a fresh
// cluster PKI, runs "debvisor-agent serve" on 127.0.0.1 with a free port, and hands back the endpoint
// and the client credentials. It is test infrastructure: the Terraform provider's tests use it so that
// the provider itself never imports agent internals.
package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/debvisor/debvisor/internal/pki"
)

// Credentials are the PEM files and bytes of one client certificate.
type Credentials struct {
	CAFile, CertFile, KeyFile string
	CAPEM, CertPEM, KeyPEM    []byte
}

// Agent is a running debvisor-agent.
type Agent struct {
	// Endpoint is the gRPC mTLS address, host:port.
	Endpoint string
	// Admin holds an admin client certificate; Reader a reader one; Foreign an admin certificate from
	// a CA the agent does not trust.
	Admin, Reader, Foreign Credentials
	// ForeignCAPEM is the certificate of that other CA: a client trusting it refuses the agent.
	ForeignCAPEM []byte
	// Dir holds the PKI, the agent's config, state dir and log.
	Dir     string
	LogFile string
	// NodeName is the name the agent reports.
	NodeName string

	binary string
	netns  string
	// cfg is the agent's config with listenMarker for the gRPC address.
	cfg string

	mu   sync.Mutex
	proc *process
}

// process is one run of the agent binary (Restart makes another).
type process struct {
	cmd  *exec.Cmd
	done chan error
	once sync.Once
}

// listenMarker stands for the gRPC address in Agent.cfg.
const listenMarker = "@LISTEN@"

// startTimeout is Options.StartTimeout's default.
const startTimeout = 60 * time.Second

// Options tune Start.
type Options struct {
	// Binary is a prebuilt debvisor-agent; when empty Build makes one in Dir (or $DEBVISOR_AGENT_BIN).
	Binary string
	// NodeName defaults to "acc-node".
	NodeName string
	// Dir is where PKI, config, state and log go; required.
	Dir string
	// StartTimeout bounds the wait for "agent serving"; default 60 s.
	StartTimeout time.Duration
	// Netns runs the agent inside that network namespace (ip netns exec).
	Netns string
	// Listen is the gRPC address; default 127.0.0.1:0.
	Listen string
	// NoPKI leaves Dir/pki empty: the agent makes or gets its certificate
	// itself (cluster bootstrap or join); Admin, Reader, Foreign stay empty.
	NoPKI bool
	// NoLibvirt runs the agent without VM and storage services.
	NoLibvirt bool
	// ExtraConfig is YAML appended to the agent config (e.g. a cluster
	// section); it must not repeat the keys Start writes.
	ExtraConfig string
}

// Build compiles cmd/debvisor-agent into dir and returns its path. $DEBVISOR_AGENT_BIN, when set,
// is returned instead (make builds the binary once for every package that needs it).
func Build(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv("DEBVISOR_AGENT_BIN"); p != "" {
		return p, nil
	}
	out := filepath.Join(dir, "debvisor-agent")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/debvisor/debvisor/cmd/debvisor-agent")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build debvisor-agent: %w\n%s", err, b)
	}
	return out, nil
}

// Start makes the PKI and starts the agent; Stop ends it. For tests, New is shorter.
func Start(ctx context.Context, o Options) (*Agent, error) {
	if o.Dir == "" {
		return nil, errors.New("agent: Options.Dir is required")
	}
	if o.NodeName == "" {
		o.NodeName = "acc-node"
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = startTimeout
	}
	if o.Binary == "" {
		b, err := Build(ctx, o.Dir)
		if err != nil {
			return nil, err
		}
		o.Binary = b
	}
	a := &Agent{Dir: o.Dir, NodeName: o.NodeName, LogFile: filepath.Join(o.Dir, "agent.log"), binary: o.Binary, netns: o.Netns}
	// QEMU runs as its own user and opens files under the state dir (cloud-init seed ISOs): the
	// directories on the way must be traversable, which temporary directories (0700) are not.
	if err := os.MkdirAll(filepath.Join(o.Dir, "state"), 0o755); err != nil {
		return nil, err
	}
	for _, d := range []string{o.Dir, filepath.Join(o.Dir, "state")} {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}
	if o.NoPKI {
		if err := os.MkdirAll(filepath.Join(o.Dir, "pki"), 0o700); err != nil {
			return nil, err
		}
	} else if err := a.makePKI(); err != nil {
		return nil, fmt.Errorf("agent PKI: %w", err)
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	cfg := fmt.Sprintf(`node_name: %s
listen: %s
rest_listen: ""
socket: ""
metrics_listen: ""
state_dir: %s
log_level: info
log_format: json
shutdown_timeout: 10s
tls:
  ca: %s
  cert: %s
  key: %s
storage:
  # Tests make their pools in their own temporary directories.
  pool_roots: [%s]
`, o.NodeName, listenMarker, filepath.Join(o.Dir, "state"), filepath.Join(o.Dir, "pki", "ca.crt"),
		filepath.Join(o.Dir, "pki", "node.crt"), filepath.Join(o.Dir, "pki", "node.key"), os.TempDir())
	if o.NoLibvirt {
		cfg += "libvirt:\n  socket: \"\"\n"
	}
	cfg += o.ExtraConfig
	a.cfg = cfg
	if err := a.launch(ctx, o.Listen, o.StartTimeout); err != nil {
		return nil, err
	}
	return a, nil
}

// launch writes the config with the gRPC address listen and runs the agent until it serves.
func (a *Agent) launch(ctx context.Context, listen string, timeout time.Duration) error {
	cfgPath := filepath.Join(a.Dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(a.cfg, listenMarker, listen, 1)), 0o600); err != nil {
		return err
	}
	logf, err := os.OpenFile(a.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// Not CommandContext: the agent outlives the context that started it and is ended by Stop.
	p := &process{}
	if a.netns != "" {
		// ip execs the agent after entering the namespace: same pid, so
		// signals reach the agent itself.
		p.cmd = exec.Command("ip", "netns", "exec", a.netns, a.binary, "serve", "--config", cfgPath)
	} else {
		p.cmd = exec.Command(a.binary, "serve", "--config", cfgPath)
	}
	p.cmd.Stdout = logf
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return err
	}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", a.binary, err)
	}
	addr := make(chan string, 1)
	go func() {
		// Copy every line to the log file, and pick the gRPC address out of "agent serving".
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = logf.Write(append(line, '\n'))
			if sent {
				continue
			}
			var rec struct {
				Msg  string `json:"msg"`
				GRPC string `json:"grpc"`
			}
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "agent serving" && rec.GRPC != "" {
				addr <- rec.GRPC
				sent = true
			}
		}
		_, _ = io.Copy(logf, stderr)
	}()
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait(); logf.Close() }()
	a.mu.Lock()
	a.proc = p
	a.mu.Unlock()

	select {
	case a.Endpoint = <-addr:
		return nil
	case err := <-p.done:
		p.done <- err
		return fmt.Errorf("debvisor-agent exited before serving (%w); log:\n%s", err, a.Log())
	case <-time.After(timeout):
		a.Stop()
		return fmt.Errorf("debvisor-agent not serving after %s; log:\n%s", timeout, a.Log())
	case <-ctx.Done():
		a.Stop()
		return ctx.Err()
	}
}

// New starts an agent in a temporary directory and stops it when the test ends; any failure
// fails the test with the reason.
func New(t testing.TB) *Agent {
	t.Helper()
	a, err := Start(context.Background(), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start debvisor-agent: %v", err)
	}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("debvisor-agent log:\n%s", a.Log())
		}
	})
	return a
}

// current is the running (or last) process.
func (a *Agent) current() *process {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.proc
}

// PID is the running agent process's id (for memory measurements).
func (a *Agent) PID() int { return a.current().cmd.Process.Pid }

// Stop sends SIGTERM and waits for the agent to drain (killing it after 15 s).
func (a *Agent) Stop() {
	p := a.current()
	if p == nil || p.cmd.Process == nil {
		return
	}
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-p.done:
			p.done <- err // later readers see the exit too
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			p.done <- <-p.done
		}
	})
}

// Kill ends the agent with SIGKILL, as a crash or power cut would: no
// graceful leave, no goodbye, no cancelled operations, half-done work left
// as it is.
func (a *Agent) Kill() {
	p := a.current()
	if p == nil || p.cmd.Process == nil {
		return
	}
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		err := <-p.done
		p.done <- err
	})
}

// Restart starts the agent again after Stop or Kill (stopping it first if it runs), on the same
// address with the same PKI, config and state directory, as its service manager would.
func (a *Agent) Restart(ctx context.Context) error {
	a.Stop()
	return a.launch(ctx, a.Endpoint, startTimeout)
}

// Binary is the agent binary this Agent runs (for starting another one without building again).
func (a *Agent) Binary() string { return a.binary }

// Exited reports whether the agent has exited (by itself or stopped) and
// with what error.
func (a *Agent) Exited() (bool, error) {
	p := a.current()
	if p == nil {
		return false, nil
	}
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// Log returns the agent's log so far (the last 64 KiB).
func (a *Agent) Log() string {
	b, _ := os.ReadFile(a.LogFile)
	if len(b) > 64<<10 {
		b = b[len(b)-64<<10:]
	}
	return string(b)
}

// Env returns DEBVISOR_* variables that point a client at this agent with the admin certificate.
func (a *Agent) Env() []string {
	return []string{
		"DEBVISOR_ENDPOINT=" + a.Endpoint,
		"DEBVISOR_CA=" + a.Admin.CAFile,
		"DEBVISOR_CERT=" + a.Admin.CertFile,
		"DEBVISOR_KEY=" + a.Admin.KeyFile,
	}
}

func (a *Agent) makePKI() error {
	dir := filepath.Join(a.Dir, "pki")
	ca, err := pki.NewCA("acc", pki.Options{})
	if err != nil {
		return err
	}
	if err := pki.Save(pki.Files{Cert: filepath.Join(dir, "ca.crt"), Key: filepath.Join(dir, "ca.key")}, ca.Cert, ca.Key, true); err != nil {
		return err
	}
	node, err := ca.IssueNode(a.NodeName, []string{"127.0.0.1", "localhost"}, pki.Options{})
	if err != nil {
		return err
	}
	if err := pki.Save(pki.Files{Cert: filepath.Join(dir, "node.crt"), Key: filepath.Join(dir, "node.key")}, node.Cert, node.Key, true); err != nil {
		return err
	}
	issue := func(c *pki.CA, name string, role pki.Role) (Credentials, error) {
		is, err := c.IssueClient(name, role, pki.Options{})
		if err != nil {
			return Credentials{}, err
		}
		cr := Credentials{
			CAFile:   filepath.Join(dir, "ca.crt"),
			CertFile: filepath.Join(dir, name+".crt"),
			KeyFile:  filepath.Join(dir, name+".key"),
		}
		if err := pki.Save(pki.Files{Cert: cr.CertFile, Key: cr.KeyFile}, is.Cert, is.Key, true); err != nil {
			return Credentials{}, err
		}
		for p, dst := range map[string]*[]byte{cr.CAFile: &cr.CAPEM, cr.CertFile: &cr.CertPEM, cr.KeyFile: &cr.KeyPEM} {
			if *dst, err = os.ReadFile(p); err != nil {
				return Credentials{}, err
			}
		}
		return cr, nil
	}
	if a.Admin, err = issue(ca, "acc-admin", pki.RoleAdmin); err != nil {
		return err
	}
	if a.Reader, err = issue(ca, "acc-reader", pki.RoleReader); err != nil {
		return err
	}
	other, err := pki.NewCA("foreign", pki.Options{})
	if err != nil {
		return err
	}
	if a.Foreign, err = issue(other, "mallory", pki.RoleAdmin); err != nil {
		return err
	}
	a.ForeignCAPEM = pki.EncodeCert(other.Cert)
	return nil
}

// String is for logs.
func (a *Agent) String() string {
	return strings.Join([]string{"debvisor-agent", a.NodeName, a.Endpoint}, " ")
}
