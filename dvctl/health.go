package dvctl

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

func newHealthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Run and inspect the node's health checks",
	}
	var noWait bool
	check := &cobra.Command{
		Use:   "check [CHECK...]",
		Short: "Run health checks now (all when none are named)",
		Example: `  dvctl health check
  dvctl health check state-dir-writable --no-wait -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.mutateFor(cmd, noWait, 5*time.Minute, func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
				return c.Node.CheckHealth(ctx, &v1.CheckHealthRequest{Checks: args})
			})
		},
	}
	check.Flags().BoolVar(&noWait, "no-wait", false, "return the operation id at once")
	cmd.AddCommand(check)
	return cmd
}
