package agentcmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/internal/buildinfo"
)

func init() { register(newVersionCmd) }

func newVersionCmd(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the agent version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintln(env.Stdout, "debvisor-agent", buildinfo.String())
		},
	}
}
