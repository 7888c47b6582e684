package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/debvisor/debvisor/nodeagent/config"
	"github.com/debvisor/debvisor/nodeagent/network"
)

// NewNetwork builds the host network manager for the agent's own
// namespace. The management interface is the configured one, else the
// link of the default route as the agent starts. The console
// (debvisor-agent netcfg) builds one too when no agent serves the socket.
func NewNetwork(cfg config.Config, log *slog.Logger) (*network.Manager, error) {
	mgmt := cfg.Network.ManagementInterface
	if mgmt == "" {
		var err error
		if mgmt, err = network.DefaultRouteInterface(nil); err != nil {
			log.Warn("no management interface: the default route's link could not be read", "err", err)
		}
	}
	var reload func(context.Context) error
	if cfg.Network.ReloadNetworkd {
		reload = func(ctx context.Context) error {
			out, err := exec.CommandContext(ctx, "networkctl", "reload").CombinedOutput()
			if err != nil {
				return fmt.Errorf("networkctl reload: %w: %s", err, strings.TrimSpace(string(out)))
			}
			return nil
		}
	}
	m, err := network.New(network.Config{
		NetworkdDir: cfg.Network.NetworkdDir, StateDir: filepath.Join(cfg.StateDir, "network"),
		Management: mgmt, Deadline: cfg.Network.Deadline(), ResolvConf: cfg.Network.ResolvConf,
		Reload: reload, Log: log, FilesOnly: cfg.Network.FilesOnly,
	})
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	log.Info("managing host networking", "networkd_dir", cfg.Network.NetworkdDir, "management_interface", mgmt)
	return m, nil
}
