package dvctl

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

func newOperationCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "operation",
		Aliases: []string{"op", "ops"},
		Short:   "List, inspect, wait for and cancel long-running operations",
	}
	var (
		kind   string
		states []string
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List operations, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := g.format()
			if err != nil {
				return err
			}
			req := &v1.ListOperationsRequest{Kind: kind}
			for _, s := range states {
				v, ok := v1.Operation_State_value["STATE_"+strings.ToUpper(s)]
				if !ok {
					return fmt.Errorf("--state %q: want pending, running, succeeded, failed or cancelled", s)
				}
				req.States = append(req.States, v1.Operation_State(v))
			}
			c, err := g.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := g.callCtx(cmd.Context())
			defer cancel()
			resp, err := c.Operations.ListOperations(ctx, req)
			if err != nil {
				return err
			}
			return printProto(g.stdout, f, resp, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tKIND\tTARGET\tSTATE\tPHASE\tPROGRESS\tAGE")
				for _, o := range resp.GetOperations() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.GetId(), o.GetKind(), dash(o.GetTarget()),
						stateWord(o.GetState()), dash(o.GetPhase()), progressWord(o), roundDur(time.Since(o.GetCreateTime().AsTime())))
				}
			})
		},
	}
	list.Flags().StringVar(&kind, "kind", "", "only operations of this kind")
	list.Flags().StringSliceVar(&states, "state", nil, "only operations in these states")

	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show one operation",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.opCall(cmd, func(c opClient) (*v1.Operation, error) {
				return c.GetOperation(cmd.Context(), &v1.GetOperationRequest{OperationId: args[0]})
			})
		},
	}
	var waitFor time.Duration
	wait := &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for an operation to end, showing its progress",
		Args:  cobra.ExactArgs(1),
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
			op, err := c.Operations.GetOperation(ctx, &v1.GetOperationRequest{OperationId: args[0]})
			if err != nil {
				return err
			}
			return g.waitAndPrint(cmd, c, op, f, waitFor)
		},
	}
	wait.Flags().DurationVar(&waitFor, "wait-timeout", 10*time.Minute, "give up waiting after this long")
	cancelCmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Ask an operation to stop",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.opCall(cmd, func(c opClient) (*v1.Operation, error) {
				return c.CancelOperation(cmd.Context(), &v1.CancelOperationRequest{OperationId: args[0]})
			})
		},
	}
	cmd.AddCommand(list, get, wait, cancelCmd)
	return cmd
}

type opClient = v1.OperationServiceClient

func (g *globals) opCall(cmd *cobra.Command, call func(opClient) (*v1.Operation, error)) error {
	f, err := g.format()
	if err != nil {
		return err
	}
	c, err := g.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	op, err := call(c.Operations)
	if err != nil {
		return err
	}
	return printOperation(g, f, op)
}

func printOperation(g *globals, f Format, op *v1.Operation) error {
	return printProto(g.stdout, f, op, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "ID:\t%s\nKIND:\t%s\nTARGET:\t%s\nSTATE:\t%s\nPHASE:\t%s\nPROGRESS:\t%s\nMESSAGE:\t%s\n",
			op.GetId(), op.GetKind(), dash(op.GetTarget()), stateWord(op.GetState()), dash(op.GetPhase()), progressWord(op), dash(op.GetMessage()))
		if op.GetError() != "" {
			fmt.Fprintf(w, "ERROR:\t%s\n", op.GetError())
		}
		keys := slices.Sorted(maps.Keys(op.GetResult()))
		for _, k := range keys {
			fmt.Fprintf(w, "RESULT %s:\t%s\n", k, op.GetResult()[k])
		}
	})
}

// waitAndPrint follows an operation to its end, printing progress lines to
// stderr (so -o json stays clean on stdout), then prints the final state.
func (g *globals) waitAndPrint(cmd *cobra.Command, c interface {
	Wait(ctxT, *v1.Operation, func(*v1.Operation)) (*v1.Operation, error)
}, op *v1.Operation, f Format, limit time.Duration) error {
	ctx, cancel := contextWithTimeout(cmd, limit)
	defer cancel()
	final, err := c.Wait(ctx, op, func(o *v1.Operation) {
		fmt.Fprintf(g.stderr, "%s %s %s %s %s\n", o.GetId(), stateWord(o.GetState()), dash(o.GetPhase()), progressWord(o), o.GetMessage())
	})
	if perr := printOperation(g, f, final); perr != nil {
		return perr
	}
	return err
}

func stateWord(s v1.Operation_State) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

func progressWord(o *v1.Operation) string {
	if o.GetTotal() > 0 {
		return fmt.Sprintf("%d/%d", o.GetDone(), o.GetTotal())
	}
	return "-"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
