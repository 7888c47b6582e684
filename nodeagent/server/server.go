// Package server owns the agent's API surface: the mTLS gRPC listener, the
// REST/JSON gateway, the local unix socket, authentication and the role
// table, metrics, and one file per gRPC service implementation.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	"github.com/debvisor/debvisor/nodeagent/config"
	"github.com/debvisor/debvisor/nodeagent/health"
	"github.com/debvisor/debvisor/nodeagent/operation"
	"github.com/debvisor/debvisor/nodeagent/sysinfo"
)

// Service is one gRPC service implementation. The server exposes every
// registered service on each listener (mTLS, unix socket) and on the REST
// gateway; the composition root (nodeagent/agent) builds the services with
// their collaborators and registers them before Run.
type Service interface {
	RegisterGRPC(grpc.ServiceRegistrar)
	RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error
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
	// Router resolves cluster members for forwarded calls; nil on a node
	// that is not in a cluster (forwarding is then refused).
	Router Router
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
	router   Router
	fwd      forwarder

	services []Service
	grpcs    []*grpc.Server
	healthS  *grpchealth.Server

	mu      sync.Mutex
	running bool
	addrs   Addrs
	ready   chan struct{}
}

// Addrs are the addresses the server actually listens on (ports resolved).
type Addrs struct {
	GRPC, REST, Metrics, Socket string
}

// New validates cfg, loads the PKI and builds the server with its own
// services (node, operations); Register adds the others; Run starts it.
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
		ready: make(chan struct{}), router: d.Router,
	}
	s.met = newMetrics(d.Registry)
	s.services = []Service{&nodeService{s: s}, &operationService{s: s}}
	return s, nil
}

// Register adds services; it must be called before Run.
func (s *Server) Register(svcs ...Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return errors.New("server: Register after Run")
	}
	s.services = append(s.services, svcs...)
	return nil
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
		grpc.ChainUnaryInterceptor(s.met.unary, s.unaryAuth(mode), s.unaryForward),
		grpc.ChainStreamInterceptor(s.met.stream, s.streamAuth(mode), s.streamForward),
	)
	for _, svc := range s.services {
		svc.RegisterGRPC(g)
	}
	healthpb.RegisterHealthServer(g, s.healthS)
	s.grpcs = append(s.grpcs, g)
	return g
}

// listener is one bound endpoint and how to serve and stop it.
type listener struct {
	name  string
	ln    io.Closer // the bound socket, closed when Run fails before serving
	serve func() error
	stop  func(ctx context.Context)
}

// Run binds every listener, serves until ctx is cancelled or one listener
// fails, then stops all of them gracefully within the configured timeout.
// A listener that fails (or stops on its own) takes the others down with
// it, and the returned error names it: a node never half-serves its API.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("server: Run called twice")
	}
	s.running = true
	s.mu.Unlock()

	s.healthS = grpchealth.NewServer()
	lns, addrs, cleanup, err := s.bind(ctx)
	defer cleanup()
	if err != nil {
		for _, l := range lns {
			l.ln.Close()
		}
		return err
	}
	s.mu.Lock()
	s.addrs = addrs
	s.mu.Unlock()

	g, gctx := errgroup.WithContext(ctx)
	for _, l := range lns {
		g.Go(func() error {
			err := l.serve()
			if gctx.Err() != nil {
				return nil // stopped by the shutdown below
			}
			if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
				err = errors.New("stopped unexpectedly")
			}
			return fmt.Errorf("%s listener: %w", l.name, err)
		})
	}
	// The first health round runs once the listeners serve (api-serving
	// dials them) but before the agent reports itself serving, so GetNode
	// never shows a partial summary.
	s.hlth.RunAll(gctx)
	s.healthS.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	close(s.ready)
	s.log.Info("agent serving", "grpc", addrs.GRPC, "rest", addrs.REST, "socket", addrs.Socket, "metrics", addrs.Metrics)

	g.Go(func() error {
		<-gctx.Done()
		s.shutdown(lns)
		return nil
	})
	err = g.Wait()
	if err != nil {
		s.log.Error("API stopped", "err", err)
	}
	return err
}

// bind opens every configured listener. On error the listeners bound so
// far are returned so the caller can stop them.
func (s *Server) bind(ctx context.Context) (lns []listener, addrs Addrs, cleanup func(), err error) {
	var (
		lc       net.ListenConfig
		cleanups []func()
	)
	cleanup = func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	grpcStop := func(g *grpc.Server) func(context.Context) {
		return func(ctx context.Context) {
			done := make(chan struct{})
			go func() { g.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				g.Stop()
			}
		}
	}

	tcpLn, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return nil, addrs, cleanup, fmt.Errorf("listen gRPC %s: %w", s.cfg.Listen, err)
	}
	addrs.GRPC = tcpLn.Addr().String()
	tlsGRPC := s.newGRPC(credentials.NewTLS(s.pki.serverTLS()), authTLS)
	lns = append(lns, listener{"gRPC " + addrs.GRPC, tcpLn, func() error { return tlsGRPC.Serve(tcpLn) }, grpcStop(tlsGRPC)})

	if s.cfg.Socket != "" {
		ln, err := listenSocket(s.cfg.Socket)
		if err != nil {
			return lns, addrs, cleanup, err
		}
		local := s.newGRPC(peerCreds{}, authLocal)
		addrs.Socket = s.cfg.Socket
		cleanups = append(cleanups, func() { os.Remove(s.cfg.Socket) })
		lns = append(lns, listener{"socket " + s.cfg.Socket, ln, func() error { return local.Serve(ln) }, grpcStop(local)})
	}

	if s.cfg.RESTListen != "" {
		// The gateway talks to an in-memory gRPC server whose only auth is
		// the identity the gateway itself verified from the client cert.
		mem := bufconn.Listen(1 << 20)
		inner := s.newGRPC(insecure.NewCredentials(), authGateway)
		lns = append(lns, listener{"gateway backend", mem, func() error { return inner.Serve(mem) }, grpcStop(inner)})
		h, closeGW, err := s.gatewayHandler(ctx, mem)
		if err != nil {
			return lns, addrs, cleanup, err
		}
		cleanups = append(cleanups, closeGW)
		ln, err := lc.Listen(ctx, "tcp", s.cfg.RESTListen)
		if err != nil {
			return lns, addrs, cleanup, fmt.Errorf("listen REST %s: %w", s.cfg.RESTListen, err)
		}
		addrs.REST = ln.Addr().String()
		hs := &http.Server{Handler: h, TLSConfig: s.pki.serverTLS(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
		lns = append(lns, listener{"REST " + addrs.REST, ln, func() error { return hs.ServeTLS(ln, "", "") }, func(ctx context.Context) { _ = hs.Shutdown(ctx) }})
	}

	if s.cfg.MetricsListen != "" {
		ln, err := lc.Listen(ctx, "tcp", s.cfg.MetricsListen)
		if err != nil {
			return lns, addrs, cleanup, fmt.Errorf("listen metrics %s: %w", s.cfg.MetricsListen, err)
		}
		addrs.Metrics = ln.Addr().String()
		hs := &http.Server{Handler: s.met.handler(s.reg), ReadHeaderTimeout: 10 * time.Second}
		lns = append(lns, listener{"metrics " + addrs.Metrics, ln, func() error { return hs.Serve(ln) }, func(ctx context.Context) { _ = hs.Shutdown(ctx) }})
	}
	return lns, addrs, cleanup, nil
}

func (s *Server) shutdown(lns []listener) {
	grace := s.cfg.ShutdownGrace()
	s.log.Info("shutting down", "grace", grace)
	s.healthS.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.stop(ctx)
		}()
	}
	wg.Wait()
	s.fwd.close()
	if err := s.ops.Close(ctx); err != nil {
		s.log.Warn("shutdown", "err", err)
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
