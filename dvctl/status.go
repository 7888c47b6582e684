package dvctl

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the node: identity, versions, booted slot, uptime, health",
		Example: `  dvctl status
  dvctl status -o json | jq .health.status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.Node, error) {
				return c.Node.GetNode(ctx, &v1.GetNodeRequest{})
			}, nodeTable)
		},
	}
}

func nodeTable(w *tabwriter.Writer, n *v1.Node) {
	slot := n.GetBootedSlot()
	if slot == "" {
		slot = "- (not booted from a DebVisor slot)"
	}
	rows := [][2]string{
		{"NODE", n.GetName()},
		{"HOSTNAME", n.GetHostname()},
		{"MACHINE ID", n.GetMachineId()},
		{"AGENT", n.GetAgentVersion()},
		{"OS", n.GetOsVersion()},
		{"SLOT", slot},
		{"KERNEL", n.GetKernel() + " " + n.GetArchitecture()},
		{"UPTIME", roundDur(n.GetUptime().AsDuration())},
		{"AGENT UPTIME", roundDur(n.GetAgentUptime().AsDuration())},
		{"HEALTH", healthWord(n.GetHealth().GetStatus())},
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%s:\t%s\n", r[0], r[1])
	}
	for _, c := range n.GetHealth().GetChecks() {
		mark := "ok"
		if !c.GetOk() {
			mark = "FAIL: " + c.GetMessage()
		}
		fmt.Fprintf(w, "  %s\t%s\n", c.GetName(), mark)
	}
}

func healthWord(s v1.HealthSummary_Status) string {
	if s == v1.HealthSummary_STATUS_UNSPECIFIED {
		return "unknown (no checks run yet)"
	}
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATUS_"))
}

func roundDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Minute:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}
