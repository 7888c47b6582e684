package dvctl

import (
	"fmt"

	"github.com/spf13/cobra"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/buildinfo"
)

func newVersionCmd(g *globals) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the dvctl version and, if reachable, the agent's",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(g.stdout, "client: dvctl %s\n", buildinfo.String())
			if clientOnly {
				return nil
			}
			c, err := g.dial()
			if err != nil {
				fmt.Fprintf(g.stdout, "agent:  not configured (%v)\n", err)
				return nil
			}
			defer c.Close()
			ctx, cancel := g.callCtx(cmd.Context())
			defer cancel()
			n, err := c.Node.GetNode(ctx, &v1.GetNodeRequest{})
			if err != nil {
				fmt.Fprintf(g.stdout, "agent:  unreachable: %s\n", describe(err))
				return nil
			}
			fmt.Fprintf(g.stdout, "agent:  debvisor-agent %s on %s (OS %s)\n", n.GetAgentVersion(), n.GetName(), n.GetOsVersion())
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only the client version")
	return cmd
}
