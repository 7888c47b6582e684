package agentcmd

import (
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/nodeagent/firstboot"
)

func init() { register(newFirstbootCmd) }

func newFirstbootCmd(env *Env) *cobra.Command {
	var cfg firstboot.Config
	cmd := &cobra.Command{
		Use:   "firstboot",
		Short: "One-time node setup run by debvisor-firstboot.service (host keys, data partition, preseed, network check)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Log = newLogger(env.Stderr, slog.LevelInfo, "text").With("component", "firstboot")
			_, err := firstboot.Run(cmd.Context(), cfg)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Root, "root", "/", "system root to configure (not / only in tests: device steps are skipped)")
	f.DurationVar(&cfg.NetworkWait, "network-wait", 30*time.Second, "how long to wait for an address before starting the network console")
	f.BoolVar(&cfg.Force, "force", false, "run even if the first boot already completed")
	return cmd
}
