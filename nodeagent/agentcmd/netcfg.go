package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/netcfg"
	"github.com/debvisor/debvisor/nodeagent/agent"
	"github.com/debvisor/debvisor/nodeagent/config"
	"github.com/debvisor/debvisor/nodeagent/server"
)

func init() { register(newNetcfgCmd) }

func newNetcfgCmd(env *Env) *cobra.Command {
	var (
		cfgPath string
		local   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "netcfg",
		Short: "Network configuration screen for the node's console: links, bonds, VLANs, addressing, confirm-or-revert",
		Long: `netcfg is the keyboard screen debvisor-netcfg.service shows on tty1 when
firstboot finds no network up; run it on any console of the node too. It
lists the links (state, carrier, MAC, master, addresses), builds a bond from
the NICs you tick, adds VLANs, sets DHCP or a static address and gateway,
shows the plan the node validated, and applies it with a confirm deadline:
unless you confirm in time, the node reverts.

It talks to the running agent over its local socket (config: socket), so the
agent's deadline timer owns the change. When no agent answers there (no
certificate yet, no network), it runs the agent's network service in this
process on the same state and networkd files; quitting with a change pending
leaves it on disk, and whichever starts next (this screen again, or the
agent) reverts it at its deadline.`,
		Example: `  debvisor-agent netcfg
  debvisor-agent netcfg --confirm-timeout 2m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			ctx := cmd.Context()
			svc, source, closeSvc, err := consoleService(ctx, cfg, local, consoleLogger(env.Stderr))
			if err != nil {
				return err
			}
			defer closeSvc()
			in := env.Stdin
			if in == nil {
				in = os.Stdin
			}
			return netcfg.Run(ctx, netcfg.Options{Service: svc, Source: source, ConfirmTimeout: timeout}, in, env.Stdout)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", config.DefaultPath, "agent config file")
	f.BoolVar(&local, "local", false, "do not try the agent's socket: run the network service in this process")
	f.DurationVar(&timeout, "confirm-timeout", 0, "confirm deadline of a change (default: the node's, network.confirm_deadline)")
	return cmd
}

// consoleLogger logs to stderr unless stderr is the screen itself: under
// systemd it is the journal, in a terminal the lines would tear the TUI.
func consoleLogger(w io.Writer) *slog.Logger {
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		return slog.New(slog.DiscardHandler)
	}
	return newLogger(w, slog.LevelInfo, "text").With("component", "netcfg")
}

// consoleService is the NetworkService the screen drives. The agent's
// socket comes first: one owner of the pending change and its timer.
// Without an agent there, the same handlers run in process over a
// manager of the same state directory.
func consoleService(ctx context.Context, cfg config.Config, local bool, log *slog.Logger) (netcfg.Service, string, func(), error) {
	if !local && cfg.Socket != "" {
		if _, err := os.Stat(cfg.Socket); err == nil {
			c, err := client.New(client.Config{Endpoint: "unix://" + cfg.Socket})
			if err != nil {
				return nil, "", nil, err
			}
			svc := v1.NewNetworkServiceClient(c.Conn())
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err = svc.GetNetwork(pctx, &v1.GetNetworkRequest{})
			cancel()
			// An agent that answers owns the network, even to say no.
			if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
				log.Info("using the agent's socket", "socket", cfg.Socket)
				return netcfg.FromClient(svc), "agent " + cfg.Socket, func() { c.Close() }, nil
			}
			c.Close()
			log.Warn("the agent does not answer on its socket: running the network service here", "socket", cfg.Socket, "err", err)
		}
	}
	if !cfg.Network.Enabled {
		return nil, "", nil, errors.New("network.enabled is false in the agent config: DebVisor does not manage this host's network")
	}
	m, err := agent.NewNetwork(cfg, log)
	if err != nil {
		return nil, "", nil, err
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Arms the deadline of a change an earlier run left pending.
		_ = m.Run(runCtx)
	}()
	source := "this console"
	if cfg.Network.FilesOnly {
		source += ", networkd files only"
	}
	return server.NewLocalNetworkServer(m, fmt.Sprintf("console (uid %d)", os.Getuid())), source, func() {
		stop()
		<-done
		m.Close()
	}, nil
}
