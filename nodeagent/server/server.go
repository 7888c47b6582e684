// Package server owns the agent's API surface: the mTLS gRPC listener, the
// REST/JSON gateway, the local unix socket, authentication and the role
// table, metrics, and one file per gRPC service implementation.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	"github.com/debvisor/debvisor/nodeagent/config"
	"github.com/debvisor/debvisor/nodeagent/health"
	"github.com/debvisor/debvisor/nodeagent/libvirtconn"
	"github.com/debvisor/debvisor/nodeagent/operation"
	"github.com/debvisor/debvisor/nodeagent/storage"
	"github.com/debvisor/debvisor/nodeagent/sysinfo"
	"github.com/debvisor/debvisor/nodeagent/vm"
)

// service is one gRPC service implementation, registered on every listener
// and on the REST gateway.
type service interface {
	register(grpc.ServiceRegistrar)
	registerGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error
}

// Deps are the collaborators the server needs; tests inject their own.
type Deps struct {
	Log     *slog.Logger
	Now     func() time.Time
	Health  *health.Registry
	Ops     *operation.Manager
	SysInfo sysinfo.Reader
	// Registry receives the agent's metrics; a new one when nil.
	Registry *prometheus.Registry
	// Libvirt is the hypervisor connection; nil runs the agent without the
	// VM and storage services (they answer FailedPrecondition).
	Libvirt *libvirtconn.Conn
}

// Server is a running (or ready to run) agent API.
type Server struct {
	cfg   config.Config
	log   *slog.Logger
	now   func() time.Time
	start time.Time
	uid   int
	pki   *pkiStore
	ops   *operation.Manager
	hlth  *health.Registry
	sys   *sysinfo.Cached
	reg   *prometheus.Registry
	met   *metrics

	verified verifyCache

	// nil without libvirt
	vms     *vm.Manager
	storage *storage.Manager

	services []service
	grpcs    []*grpc.Server
	healthS  *grpchealth.Server

	mu    sync.Mutex
	addrs Addrs
	ready chan struct{}
}

// Addrs are the addresses the server actually listens on (ports resolved).
type Addrs struct {
	GRPC, REST, Metrics, Socket string
}

// New validates cfg, loads the PKI and builds the server; Run starts it.
func New(cfg config.Config, d Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Health == nil {
		d.Health = health.NewRegistry(d.Now)
	}
	if d.Ops == nil {
		d.Ops = operation.NewManager(d.Log)
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	store, err := newPKIStore(cfg.TLS, d.Now)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: d.Log, now: d.Now, start: d.Now(), uid: os.Getuid(),
		pki: store, ops: d.Ops, hlth: d.Health, sys: sysinfo.NewCached(d.SysInfo), reg: d.Registry,
		ready: make(chan struct{}),
	}
	s.met = newMetrics(d.Registry)
	if d.Libvirt != nil {
		seeds := cfg.Libvirt.SeedDir
		if seeds == "" {
			seeds = filepath.Join(cfg.StateDir, "vm-seeds")
		}
		s.vms = vm.New(d.Libvirt, vm.Config{SeedDir: seeds, DomainType: cfg.Libvirt.DomainType}, d.Log.With("component", "vm"))
		s.storage = storage.New(d.Libvirt, d.Log.With("component", "storage"))
	}
	s.services = []service{
		&nodeService{s: s},
		&operationService{s: s},
		&vmService{s: s},
		&storageService{s: s},
	}
	return s, nil
}

// Ready is closed once every listener is accepting.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addrs returns the bound addresses; valid after Ready.
func (s *Server) Addrs() Addrs {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrs
}

func (s *Server) newGRPC(creds credentials.TransportCredentials, mode authMode) *grpc.Server {
	g := grpc.NewServer(
		grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(s.met.unary, s.unaryAuth(mode)),
		grpc.ChainStreamInterceptor(s.met.stream, s.streamAuth(mode)),
	)
	for _, svc := range s.services {
		svc.register(g)
	}
	healthpb.RegisterHealthServer(g, s.healthS)
	s.grpcs = append(s.grpcs, g)
	return g
}

// Run serves until ctx is cancelled, then shuts down gracefully within the
// configured timeout.
func (s *Server) Run(ctx context.Context) error {
	s.healthS = grpchealth.NewServer()
	var lc net.ListenConfig

	tcpLn, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen gRPC %s: %w", s.cfg.Listen, err)
	}
	tlsGRPC := s.newGRPC(credentials.NewTLS(s.pki.serverTLS()), authTLS)

	var (
		serveErr = make(chan error, 8)
		servers  []func(context.Context)
		addrs    = Addrs{GRPC: tcpLn.Addr().String()}
	)
	go func() { serveErr <- wrap("gRPC", tlsGRPC.Serve(tcpLn)) }()

	if s.cfg.Socket != "" {
		ln, err := listenSocket(s.cfg.Socket)
		if err != nil {
			return err
		}
		local := s.newGRPC(peerCreds{}, authLocal)
		addrs.Socket = s.cfg.Socket
		go func() { serveErr <- wrap("socket", local.Serve(ln)) }()
		defer os.Remove(s.cfg.Socket)
	}

	if s.cfg.RESTListen != "" {
		// The gateway talks to an in-memory gRPC server whose only auth is
		// the identity the gateway itself verified from the client cert.
		mem := bufconn.Listen(1 << 20)
		inner := s.newGRPC(insecure.NewCredentials(), authGateway)
		go func() { serveErr <- wrap("gateway backend", inner.Serve(mem)) }()
		h, closeGW, err := s.gatewayHandler(ctx, mem)
		if err != nil {
			return err
		}
		defer closeGW()
		ln, err := lc.Listen(ctx, "tcp", s.cfg.RESTListen)
		if err != nil {
			return fmt.Errorf("listen REST %s: %w", s.cfg.RESTListen, err)
		}
		addrs.REST = ln.Addr().String()
		hs := &http.Server{Handler: h, TLSConfig: s.pki.serverTLS(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
		go func() { serveErr <- wrap("REST", hs.ServeTLS(ln, "", "")) }()
		servers = append(servers, func(ctx context.Context) { _ = hs.Shutdown(ctx) })
	}

	if s.cfg.MetricsListen != "" {
		ln, err := lc.Listen(ctx, "tcp", s.cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("listen metrics %s: %w", s.cfg.MetricsListen, err)
		}
		addrs.Metrics = ln.Addr().String()
		hs := &http.Server{Handler: s.met.handler(s.reg), ReadHeaderTimeout: 10 * time.Second}
		go func() { serveErr <- wrap("metrics", hs.Serve(ln)) }()
		servers = append(servers, func(ctx context.Context) { _ = hs.Shutdown(ctx) })
	}

	// The first round runs before the agent reports itself serving, so
	// GetNode never shows a partial summary (every check is cheap).
	s.hlth.RunAll(ctx)
	s.mu.Lock()
	s.addrs = addrs
	s.mu.Unlock()
	s.healthS.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	close(s.ready)
	s.log.Info("agent serving", "grpc", addrs.GRPC, "rest", addrs.REST, "socket", addrs.Socket, "metrics", addrs.Metrics)

	go s.healthLoop(ctx)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
	}
	s.shutdown(servers)
	return runErr
}

func (s *Server) shutdown(servers []func(context.Context)) {
	grace := s.cfg.ShutdownGrace()
	s.log.Info("shutting down", "grace", grace)
	s.healthS.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, f := range servers {
		f(ctx)
	}
	var wg sync.WaitGroup
	for _, g := range s.grpcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			go func() { g.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				g.Stop()
			}
		}()
	}
	wg.Wait()
	if err := s.ops.Close(ctx); err != nil {
		s.log.Warn("shutdown", "err", err)
	}
}

// healthLoop runs all checks every minute.
func (s *Server) healthLoop(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.hlth.RunAll(ctx)
	}
}

// listenSocket creates the root-only unix socket, replacing a stale one.
func listenSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	// Owner only. The peer-credential check backs this up for the instant
	// between bind and chmod.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

func wrap(what string, err error) error {
	if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return fmt.Errorf("%s server: %w", what, err)
}
