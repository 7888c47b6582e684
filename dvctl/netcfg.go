package dvctl

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/netcfg"
)

func newNetcfgCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "netcfg",
		Short: "Full-screen network configuration of a node: bonds, VLANs, addressing, confirm-or-revert",
		Long: `netcfg is the node console's network screen, run from this terminal
against any agent dvctl reaches (the local socket on the node, or mTLS).
It lists the links (state, carrier, MAC, master, addresses), builds a bond
from the NICs you tick with Space, adds VLANs, sets DHCP or a static address
and gateway, shows the plan the node validated (or why it refuses), and
applies it with a confirm deadline and a countdown: confirm in time, or the
node reverts on its own. Keyboard only; it fits 80x24.

It is "dvctl network show|apply|confirm|revert" with a form in front: the
same NetworkService calls. Keys are listed at the bottom of every screen.`,
		Example: `  dvctl netcfg                                  # on the node, over the local socket
  dvctl --context lab netcfg --confirm-timeout 2m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cc, err := g.clientConfig()
			if err != nil {
				return err
			}
			c, err := g.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			return netcfg.Run(cmd.Context(), netcfg.Options{
				Service: netcfg.FromClient(v1.NewNetworkServiceClient(c.Conn())), Source: cc.Endpoint,
				ConfirmTimeout: timeout, CallTimeout: g.timeout,
			}, os.Stdin, g.stdout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "confirm-timeout", 0, "confirm deadline of a change (default: the node's)")
	return cmd
}
