package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/config"
	"github.com/debvisor/debvisor/nodeagent/health"
	"github.com/debvisor/debvisor/nodeagent/libvirtconn"
	"github.com/debvisor/debvisor/nodeagent/operation"
	"github.com/debvisor/debvisor/nodeagent/storage"
	"github.com/debvisor/debvisor/nodeagent/sysinfo"
	"github.com/debvisor/debvisor/nodeagent/vm"
	"github.com/debvisor/debvisor/testenv/libvirtd"
)

// lvAgent is an agent connected to the real libvirtd, with clients.
type lvAgent struct {
	*testAgent
	vms     v1.VMServiceClient
	storage v1.StorageServiceClient
	ops     v1.OperationServiceClient
	// prefix makes this test's libvirt objects unique on a shared libvirtd.
	prefix string
	dir    string
}

// startLibvirtAgent starts an agent wired to the real libvirtd (started by
// the harness when needed) and returns operator clients.
func startLibvirtAgent(t testing.TB) *lvAgent {
	t.Helper()
	env := libvirtd.EnsureRunning(t)
	p := newTestPKI(t)
	// libvirt's qemu user must reach pool and seed files: a world-traversable
	// directory, not t.TempDir's 0700 one.
	dir, err := os.MkdirTemp("/var/tmp", "dvtest-")
	must(t, err)
	must(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	sockDir, err := os.MkdirTemp("", "dvsock")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	cfg := config.Default()
	cfg.NodeName = "node1"
	cfg.Listen = "127.0.0.1:0"
	cfg.RESTListen = ""
	cfg.MetricsListen = ""
	cfg.Socket = filepath.Join(sockDir, "agent.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	must(t, os.MkdirAll(cfg.StateDir, 0o755))
	cfg.ShutdownTimeout = "5s"
	cfg.TLS = config.TLS{CA: filepath.Join(p.dir, "ca.crt"), Cert: filepath.Join(p.dir, "node.crt"), Key: filepath.Join(p.dir, "node.key")}
	cfg.Libvirt.Socket = env.Socket
	cfg.Libvirt.SeedDir = "" // state_dir/vm-seeds, inside this test's directory

	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	conn := libvirtconn.New(libvirtconn.Config{Socket: env.Socket}, log)
	t.Cleanup(func() { conn.Close() })
	ops := operation.NewManager(log)
	srv, err := New(cfg, Deps{Log: log, Ops: ops, Health: health.NewRegistry(nil), SysInfo: sysinfo.Reader{Root: "/"}})
	must(t, err)
	// Pools may live anywhere in this test's directory, never in this
	// agent's state (dir/state) or PKI.
	cfg.Storage.PoolRoots = []string{dir}
	st := storage.New(conn, storage.Config{Policy: storage.Policy{Roots: cfg.Storage.PoolRoots,
		Protected: append([]string{cfg.StateDir, p.dir}, storage.SystemProtected...)}, StateDir: cfg.StateDir}, log)
	vms := vm.New(conn, st, vm.Config{SeedDir: filepath.Join(cfg.StateDir, "vm-seeds")}, log)
	must(t, srv.Register(
		NewStorageService(st, ops),
		NewVMService(vms, ops),
	))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	events := make(chan error, 1)
	go func() { events <- vms.WatchEvents(ctx) }()
	t.Cleanup(func() { cancel(); <-events })
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("agent did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("agent Run: %v", err)
		}
	})
	a := &testAgent{srv: srv, cfg: cfg, pki: p, addr: srv.Addrs()}
	c := a.dial(t, "admin")
	var b [3]byte
	_, _ = rand.Read(b[:])
	return &lvAgent{
		testAgent: a, vms: v1.NewVMServiceClient(c), storage: v1.NewStorageServiceClient(c), ops: v1.NewOperationServiceClient(c),
		prefix: "dvt-" + hex.EncodeToString(b[:]) + "-", dir: dir,
	}
}

// ok returns a function that blocks until an operation ends and fails the
// test unless it succeeded: a.ok(t)(a.vms.StartVM(ctx, req)).
func (a *lvAgent) ok(t testing.TB) func(*v1.Operation, error) *v1.Operation {
	return func(op *v1.Operation, err error) *v1.Operation {
		t.Helper()
		if err != nil {
			t.Fatalf("start operation: %v", err)
		}
		done := a.waitEnd(t, op)
		if done.GetState() != v1.Operation_STATE_SUCCEEDED {
			t.Fatalf("operation %s (%s %s) %s: %s (code %s)", done.GetId(), done.GetKind(), done.GetTarget(), done.GetState(), done.GetError(), codes.Code(done.GetErrorCode()))
		}
		return done
	}
}

func (a *lvAgent) waitEnd(t testing.TB, op *v1.Operation) *v1.Operation {
	t.Helper()
	for {
		done, err := a.ops.WaitOperation(context.Background(), &v1.WaitOperationRequest{OperationId: op.GetId(), Timeout: durationpb.New(2 * time.Minute)})
		if err != nil {
			t.Fatalf("wait %s: %v", op.GetId(), err)
		}
		switch done.GetState() {
		case v1.Operation_STATE_PENDING, v1.Operation_STATE_RUNNING:
			continue
		}
		return done
	}
}

// pool creates a dir pool for the test and removes it (with its volumes)
// at the end.
func (a *lvAgent) pool(t testing.TB) string {
	t.Helper()
	name := a.prefix + "pool"
	path := filepath.Join(a.dir, "pool")
	a.ok(t)(a.storage.CreatePool(context.Background(), &v1.CreatePoolRequest{
		Pool: &v1.Pool{Name: name, Type: v1.Pool_TYPE_DIR, Path: path}, Build: true,
	}))
	t.Cleanup(func() {
		op, err := a.storage.DeletePool(context.Background(), &v1.DeletePoolRequest{Name: name, DeleteVolumes: true, DeleteStorage: true})
		if status.Code(err) == codes.NotFound {
			return
		}
		if err != nil {
			t.Errorf("cleanup pool: %v", err)
			return
		}
		if done := a.waitEnd(t, op); done.GetState() != v1.Operation_STATE_SUCCEEDED {
			t.Errorf("cleanup pool: %s", done.GetError())
		}
	})
	return name
}

// upload streams data into a new volume.
func (a *lvAgent) upload(t testing.TB, pool, name string, data []byte) {
	t.Helper()
	s, err := a.storage.UploadVolume(context.Background())
	must(t, err)
	must(t, s.Send(&v1.UploadVolumeRequest{Msg: &v1.UploadVolumeRequest_Header_{Header: &v1.UploadVolumeRequest_Header{
		Pool: pool, Name: name, Format: v1.Volume_FORMAT_RAW, SizeBytes: int64(len(data)),
	}}}))
	for off := 0; off < len(data); off += 256 << 10 {
		end := min(off+256<<10, len(data))
		must(t, s.Send(&v1.UploadVolumeRequest{Msg: &v1.UploadVolumeRequest_Chunk{Chunk: data[off:end]}}))
	}
	a.ok(t)(s.CloseAndRecv())
}

// deleteVM removes a VM at the end of the test if it still exists.
func (a *lvAgent) cleanupVM(t testing.TB, name string) {
	t.Cleanup(func() {
		op, err := a.vms.DeleteVM(context.Background(), &v1.DeleteVMRequest{Name: name})
		if status.Code(err) == codes.NotFound {
			return
		}
		if err != nil {
			t.Errorf("cleanup VM %s: %v", name, err)
			return
		}
		a.waitEnd(t, op)
	})
}

// virsh runs virsh against qemu:///system: the independent witness.
func virsh(t testing.TB, args ...string) (string, error) {
	t.Helper()
	out, err := osexec.Command("virsh", append([]string{"-c", "qemu:///system", "-q"}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func mustVirsh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := virsh(t, args...)
	if err != nil {
		t.Fatalf("virsh %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// readConsole reads the VM's console through the API until want appears
// or the deadline passes, and returns what it read.
func (a *lvAgent) readConsole(t testing.TB, name, want string, within time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	s, err := a.vms.StreamConsole(ctx, &v1.StreamConsoleRequest{Name: name})
	must(t, err)
	var got bytes.Buffer
	for !strings.Contains(got.String(), want) {
		msg, err := s.Recv()
		if err != nil {
			t.Fatalf("console of %s: %v after reading %q", name, err, got.String())
		}
		got.Write(msg.GetData())
	}
	return got.String()
}

func statusIs(t testing.TB, err error, code codes.Code, substr string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want %s", err, code)
	}
	if !strings.Contains(status.Convert(err).Message(), substr) {
		t.Fatalf("message %q does not contain %q", status.Convert(err).Message(), substr)
	}
}

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }

func sprintfErr(f string, a ...any) error { return fmt.Errorf(f, a...) }

// exec runs a command and returns its combined output.
func exec(name string, args ...string) (string, error) {
	out, err := osexec.Command(name, args...).CombinedOutput()
	return string(out), err
}
