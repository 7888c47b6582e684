package dvctl

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

func newUpgradeCmd(g *globals) *cobra.Command {
	var stage, force, noWait bool
	cmd := &cobra.Command{
		Use:   "upgrade REF",
		Short: "Install a DebVisor OS image into the inactive slot and boot it",
		Long: `upgrade writes the signed DebVisor slot image REF (an OCI reference) into the
inactive A/B slot and makes it the next boot. The agent first verifies the
signature against the node's trusted keys, the architecture, and that the
version is newer than the booted one (--force allows a downgrade or a
reinstall); nothing reaches the slot before that. The write streams with
bounded memory, is read back and verified, and only then does GRUB's
environment point at the new slot.

By default the node reboots into it. After the reboot the agent commits the
new slot once its health report passes; if it does not pass in time, or the
new system panics or hangs, the node comes back on the previous slot and
"dvctl slots" says why.`,
		Example: `  dvctl upgrade registry.example:5000/debvisor/os:0.2.0
  dvctl upgrade registry.example:5000/debvisor/os@sha256:4f1c... --stage
  dvctl upgrade registry.example:5000/debvisor/os:0.1.9 --force`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mode := v1.UpgradeRequest_MODE_REBOOT
			if stage {
				mode = v1.UpgradeRequest_MODE_STAGE
			}
			return g.mutateFor(cmd, noWait, time.Hour, func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
				return v1.NewUpgradeServiceClient(c.Conn()).Upgrade(ctx, &v1.UpgradeRequest{Ref: args[0], Mode: mode, Force: force})
			})
		},
	}
	cmd.Flags().BoolVar(&stage, "stage", false, "write and activate, but boot it at the next reboot")
	cmd.Flags().BoolVar(&force, "force", false, "allow a version that is not newer than the booted one")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return the operation id at once")
	return cmd
}

func newSlotsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "slots",
		Short: "Show the A/B slots: versions, boot counters, what boots next, last results",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			st, err := v1.NewUpgradeServiceClient(c.Conn()).GetSlots(ctx, &v1.GetSlotsRequest{})
			if err != nil {
				return err
			}
			return printProto(g.stdout, f, st, func(w *tabwriter.Writer) { slotTable(w, st) })
		},
	}
}

// slotTable renders a SlotStatus for people (also the emergency mode's).
func slotTable(w *tabwriter.Writer, st *v1.SlotStatus) {
	fmt.Fprintln(w, "SLOT\tPART\tVERSION\tBOOTABLE\tTRIED\tSTATE\tLAST RESULT\tREASON")
	for _, s := range st.GetSlots() {
		var state []string
		if s.GetBooted() {
			state = append(state, "booted")
		}
		if s.GetPrimary() {
			state = append(state, "primary")
		}
		if s.GetCommitted() {
			state = append(state, "committed")
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%v\t%v\t%s\t%s\t%s\n", s.GetName(), s.GetPartition(), dash(s.GetVersion()),
			s.GetBootable(), s.GetTried(), dash(joinComma(state)), dash(s.GetLastResult()), dash(s.GetReason()))
	}
	next := st.GetNextBoot()
	if st.GetNextBootOnce() {
		next += " (once)"
	}
	fmt.Fprintf(w, "\nbooted: %s%s\tnext boot: %s\n", dash(st.GetBootedSlot()), map[bool]string{true: " (fallback)"}[st.GetFallbackBoot()], next)
	if st.GetEnvRepaired() != "" {
		fmt.Fprintf(w, "boot environment: %s\n", st.GetEnvRepaired())
	}
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

func newRollbackCmd(g *globals) *cobra.Command {
	var once, reboot bool
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Boot the other slot: once, or from now on",
		Long: `rollback makes GRUB boot the slot the node is not running.

  --once   the next boot only; the boot after it returns to the current slot
           (try the previous version, keep the current one as the default)
  default  persistently: the other slot becomes the primary

The other slot must hold a bootable system. It takes effect at the next
reboot (--reboot reboots right away). With the agent stopped or broken, use
"dvctl emergency rollback" on the node's console instead.`,
		Example: `  dvctl rollback --once --reboot
  dvctl rollback`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			st, err := v1.NewUpgradeServiceClient(c.Conn()).Rollback(ctx, &v1.RollbackRequest{Once: once, Reboot: reboot})
			if err != nil {
				return err
			}
			return printProto(g.stdout, f, st, func(w *tabwriter.Writer) { slotTable(w, st) })
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "boot the other slot at the next boot only")
	cmd.Flags().BoolVar(&reboot, "reboot", false, "reboot right away")
	return cmd
}

func newCommitCmd(g *globals) *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:   "commit",
		Short: "Run the health report now and commit the booted slot if it passes",
		Long: `The agent commits every boot by itself once the health report passes. Use
commit after fixing what held a boot back, to mark it good without waiting.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.mutateFor(cmd, noWait, 10*time.Minute, func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
				return v1.NewUpgradeServiceClient(c.Conn()).Commit(ctx, &v1.CommitRequest{})
			})
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return the operation id at once")
	return cmd
}
