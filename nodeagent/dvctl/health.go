package dvctl

import (
	"time"

	"github.com/spf13/cobra"

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
			f, err := g.format()
			if err != nil {
				return err
			}
			c, err := g.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := g.callCtx(cmd.Context())
			defer cancel()
			op, err := c.Node.CheckHealth(ctx, &v1.CheckHealthRequest{Checks: args})
			if err != nil {
				return err
			}
			if noWait {
				return printOperation(g, f, op)
			}
			return g.waitAndPrint(cmd, c, op, f, 5*time.Minute)
		},
	}
	check.Flags().BoolVar(&noWait, "no-wait", false, "return the operation id at once")
	cmd.AddCommand(check)
	return cmd
}
