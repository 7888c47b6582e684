// Package agent is the node agent's composition root: Run builds every
// collaborator from the configuration exactly once (libvirt connection,
// storage, VMs, operations, health, the API server and its services) and
// runs the API and the background services under one errgroup. If any of
// them fails, all stop cleanly and the error names which one.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/debvisor/debvisor/internal/buildinfo"
	"github.com/debvisor/debvisor/nodeagent/cluster"
	"github.com/debvisor/debvisor/nodeagent/config"
	"github.com/debvisor/debvisor/nodeagent/health"
	"github.com/debvisor/debvisor/nodeagent/libvirtconn"
	"github.com/debvisor/debvisor/nodeagent/network"
	"github.com/debvisor/debvisor/nodeagent/operation"
	"github.com/debvisor/debvisor/nodeagent/server"
	"github.com/debvisor/debvisor/nodeagent/storage"
	"github.com/debvisor/debvisor/nodeagent/sysinfo"
	"github.com/debvisor/debvisor/nodeagent/upgrade"
	"github.com/debvisor/debvisor/nodeagent/vm"
)

// HealthInterval is how often the background health loop runs every check
// (the systemd watchdog is fed only while rounds keep completing).
const HealthInterval = 30 * time.Second

// Options are the process-level collaborators main hands in.
type Options struct {
	Log *slog.Logger
	// Root is the filesystem root sysinfo reads ("/" on a node).
	Root string
	// Ready, when set, is called once the API is serving, with its addresses.
	Ready func(server.Addrs)
	// Cmdline is the kernel command line file that tells a DebVisor node
	// (booted from a slot) from any other host; "/proc/cmdline" when empty.
	Cmdline string
}

// Background is a long-running service of the agent besides the API: the
// health loop, cluster gossip and mDNS discovery; upgrade commit and others
// register here.
type Background struct {
	Name string
	Run  func(ctx context.Context) error
}

// Agent is the assembled node agent.
type Agent struct {
	Server     *server.Server
	Health     *health.Registry
	Ops        *operation.Manager
	Storage    *storage.Manager // nil without libvirt
	VMs        *vm.Manager      // nil without libvirt
	Upgrade    *upgrade.Manager // nil when not booted from a DebVisor slot
	Network    *network.Manager // nil off a DebVisor node or with network.enabled false
	Background []Background

	log     *slog.Logger
	libvirt *libvirtconn.Conn
	ready   func(server.Addrs)
}

// New builds the agent from cfg without starting anything.
func New(cfg config.Config, o Options) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Root == "" {
		o.Root = "/"
	}
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	a := &Agent{
		log:    log,
		Ops:    operation.NewManager(log.With("component", "operations")),
		Health: health.NewRegistry(nil),
		ready:  o.Ready,
	}
	if cfg.Libvirt.Socket != "" {
		a.libvirt = libvirtconn.New(libvirtconn.Config{Socket: cfg.Libvirt.Socket, URI: cfg.Libvirt.URI}, log.With("component", "libvirt"))
		a.Storage = storage.New(a.libvirt, storage.Config{Policy: StoragePolicy(cfg), StateDir: cfg.StateDir}, log.With("component", "storage"))
		seeds := cfg.Libvirt.SeedDir
		if seeds == "" {
			seeds = filepath.Join(cfg.StateDir, "vm-seeds")
		}
		a.VMs = vm.New(a.libvirt, a.Storage, vm.Config{SeedDir: seeds, DomainType: cfg.Libvirt.DomainType}, log.With("component", "vm"))
	}
	cl, err := openCluster(cfg, log)
	if err != nil {
		a.Close()
		return nil, err
	}
	srv, err := server.New(cfg, server.Deps{
		Log: log, Ops: a.Ops, Health: a.Health, SysInfo: sysinfo.Reader{Root: o.Root},
		Router: server.RouterFor(cl),
	})
	if err != nil {
		a.Close()
		return nil, err
	}
	a.Server = srv
	if o.Cmdline == "" {
		o.Cmdline = cfg.Upgrade.CmdlineFile
	}
	onNode := health.OnDebVisorNode(o.Cmdline)
	if onNode {
		if a.Upgrade, err = a.newUpgrade(cfg, o.Cmdline); err != nil {
			a.Close()
			return nil, err
		}
	}
	if onNode && cfg.Network.Enabled {
		if a.Network, err = NewNetwork(cfg, log.With("component", "network")); err != nil {
			a.Close()
			return nil, err
		}
	}
	if err := srv.Register(
		server.NewNetworkService(a.Network),
		server.NewStorageService(a.Storage, a.Ops),
		server.NewVMService(a.VMs, a.Ops),
		server.NewClusterService(cl, nil),
		server.NewUpgradeService(a.Upgrade, a.Ops),
	); err != nil {
		a.Close()
		return nil, err
	}
	if err := server.DefaultChecks(srv); err != nil {
		a.Close()
		return nil, err
	}
	if err := a.nodeChecks(onNode); err != nil {
		a.Close()
		return nil, err
	}
	a.Background = append(a.Background, Background{Name: "health loop", Run: func(ctx context.Context) error {
		return a.Health.Loop(ctx, HealthInterval)
	}}, a.systemd())
	if cfg.Storage.DefaultPool != "" && a.Storage != nil {
		a.Background = append(a.Background, a.defaultPool(cfg))
	}
	if a.VMs != nil {
		// Keeps VM snapshots honest, so reads can answer while libvirtd is slow.
		a.Background = append(a.Background, Background{Name: "vm events", Run: a.VMs.WatchEvents})
	}
	if a.Upgrade != nil {
		// Commit this boot once the health report passes (or roll back).
		a.Background = append(a.Background, Background{Name: "boot commit", Run: func(ctx context.Context) error {
			if err := a.Upgrade.Boot(ctx); err != nil {
				return err
			}
			<-ctx.Done()
			return nil
		}})
	}
	if a.Network != nil {
		// Reverts unconfirmed network changes at their deadline, also one
		// left pending by the previous run.
		a.Background = append(a.Background, Background{Name: "network deadlines", Run: a.Network.Run})
	}
	if cl != nil {
		a.Background = append(a.Background, Background{Name: "cluster gossip", Run: func(ctx context.Context) error {
			return cl.Run(ctx, a.apiAddr)
		}})
		if cfg.Cluster.MDNS {
			a.Background = append(a.Background, Background{Name: "mDNS discovery", Run: func(ctx context.Context) error {
				return cl.Discover(ctx, cluster.MDNS{Log: log.With("component", "mdns")})
			}})
		}
	}
	return a, nil
}

// apiAddr waits until the API listens and returns its gRPC address.
func (a *Agent) apiAddr(ctx context.Context) (string, error) {
	select {
	case <-a.Server.Ready():
		return a.Server.Addrs().GRPC, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// clusterConfig maps the agent configuration for nodeagent/cluster.
func clusterConfig(cfg config.Config, log *slog.Logger) cluster.Config {
	return cluster.Config{
		NodeName: cluster.MemberName(cfg.NodeName), StateDir: cfg.StateDir,
		CAFile: cfg.TLS.CA, CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key,
		Bind: cfg.Cluster.Bind, Advertise: cfg.Cluster.Advertise,
		Version: buildinfo.String(), Log: log.With("component", "cluster"),
	}
}

// openCluster returns the node's cluster membership, nil when clustering
// is off or the node is not enrolled (it then runs standalone).
func openCluster(cfg config.Config, log *slog.Logger) (*cluster.Node, error) {
	if !cfg.Cluster.Enabled {
		return nil, nil
	}
	cl, err := cluster.Open(clusterConfig(cfg, log))
	if errors.Is(err, cluster.ErrNotEnrolled) {
		log.Info("not in a cluster: running standalone", "reason", err)
		return nil, nil
	}
	return cl, err
}

// Enroll acts on a pending cluster enrollment (the enroll file firstboot
// writes from the preseed): bootstrap a cluster, or join one, before the
// API starts, since a joining node gets its certificate from the join.
func Enroll(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	if !cfg.Cluster.Enabled {
		return nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	did, err := cluster.Enroll(ctx, clusterConfig(cfg, log), cfg.Cluster.EnrollFile, cfg.Cluster.Join, cfg.Cluster.MDNS)
	if err != nil {
		return err
	}
	if did != "" {
		log.Info("cluster enrollment done", "result", did)
	}
	return nil
}

// Run serves the API and runs the background services until ctx ends or
// one of them fails; then all stop and the error names the one that
// failed.
func (a *Agent) Run(ctx context.Context) error {
	defer a.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := a.Server.Run(gctx); err != nil {
			return fmt.Errorf("API server: %w", err)
		}
		if ctx.Err() == nil && gctx.Err() == nil {
			return fmt.Errorf("API server: stopped unexpectedly")
		}
		return nil
	})
	if a.ready != nil {
		g.Go(func() error {
			select {
			case <-a.Server.Ready():
				a.ready(a.Server.Addrs())
			case <-gctx.Done():
			}
			return nil
		})
	}
	for _, b := range a.Background {
		g.Go(func() error {
			err := b.Run(gctx)
			if err == nil && gctx.Err() == nil {
				err = fmt.Errorf("stopped unexpectedly")
			}
			if err != nil && gctx.Err() == nil {
				a.log.Error("background service failed; stopping the agent", "service", b.Name, "err", err)
				return fmt.Errorf("%s: %w", b.Name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// Close releases what New opened (the libvirt connection, the netlink
// handle; a pending network change stays on disk for the next start).
func (a *Agent) Close() {
	if a.libvirt != nil {
		_ = a.libvirt.Close()
	}
	if a.Network != nil {
		a.Network.Close()
	}
}

// StoragePolicy is what clients' pools may touch on this node: the admin's
// pool roots, and never the system directories, the agent's state dir or
// the directories holding its PKI files.
func StoragePolicy(cfg config.Config) storage.Policy {
	protected := append([]string{cfg.StateDir}, storage.SystemProtected...)
	for _, f := range []string{cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key} {
		protected = append(protected, filepath.Dir(f))
	}
	return storage.Policy{Roots: cfg.Storage.PoolRoots, Protected: protected}
}

// Run enrolls the node in its cluster if that is pending, builds the
// agent from cfg and runs it until ctx ends.
func Run(ctx context.Context, cfg config.Config, o Options) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := Enroll(ctx, cfg, log); err != nil {
		return err
	}
	a, err := New(cfg, o)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
