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
		Short: "One-time node setup run by debvisor-firstboot.service (preseed, network check)",
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

func init() { register(newGrowDataCmd) }

func newGrowDataCmd(env *Env) *cobra.Command {
	var stamp string
	cmd := &cobra.Command{
		Use:   "growdata",
		Short: "Grow the data partition and its filesystem to fill the disk (debvisor-growdata.service, every boot)",
		Long: `Grows debvisor-data, the disk's last partition, to the end of the disk and then its
ext4 filesystem, both online. The disk's size is recorded in the stamp file: while the disk
keeps that size nothing runs, and a disk made larger since is filled on the next boot.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := newLogger(env.Stderr, slog.LevelInfo, "text").With("component", "growdata")
			return firstboot.GrowData(cmd.Context(), log, stamp)
		},
	}
	cmd.Flags().StringVar(&stamp, "stamp", firstboot.GrowStamp, "file recording the disk size the partition was grown to fill")
	return cmd
}
