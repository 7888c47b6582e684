package dvctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

func newNetworkCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Show and change the node's host networking (bonds, VLANs, bridges, addresses, routes, DNS)",
		Long: `network shows and changes the node's host networking. A change is applied
live and persisted as systemd-networkd files, and it is confirm-or-revert:
unless "dvctl network confirm" arrives before its deadline (60s by default),
the node goes back to the links, addresses, routes and files it had. A change
that cuts you off therefore heals itself.`,
	}
	cmd.AddCommand(newNetworkShowCmd(g), newNetworkApplyCmd(g), newNetworkResolveCmd(g, true), newNetworkResolveCmd(g, false))
	return cmd
}

func newNetworkShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Show live links, addresses, routes and DNS, the desired configuration and any pending change",
		Example: `  dvctl network show
  dvctl network show -o yaml          # the desired configuration in the form "apply" takes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := g.format()
			if err != nil {
				return err
			}
			st, err := g.getNetwork(cmd.Context())
			if err != nil {
				return err
			}
			return printProto(g.stdout, f, st, func(w *tabwriter.Writer) { networkTable(w, st) })
		},
	}
}

func (g *globals) getNetwork(ctx context.Context) (*v1.NetworkState, error) {
	c, err := g.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := g.callCtx(ctx)
	defer cancel()
	return v1.NewNetworkServiceClient(c.Conn()).GetNetwork(ctx, &v1.GetNetworkRequest{})
}

func networkTable(w *tabwriter.Writer, st *v1.NetworkState) {
	fmt.Fprintln(w, "LINK\tKIND\tSTATE\tCARRIER\tMAC\tMTU\tMASTER\tADDRESSES")
	for _, l := range st.GetLinks() {
		state := l.GetOperState()
		if !l.GetUp() {
			state = "admin-down"
		}
		name := l.GetName()
		if name == st.GetManagementInterface() {
			name += " (mgmt)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%s\t%d\t%s\t%s\n", name, l.GetKind(), state, l.GetCarrier(), dash(l.GetMac()),
			l.GetMtu(), dash(l.GetMaster()), dash(strings.Join(l.GetAddresses(), ",")))
	}
	fmt.Fprintln(w, "\nDESTINATION\tGATEWAY\tINTERFACE\tMETRIC\tPROTOCOL")
	for _, r := range st.GetRoutes() {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", r.GetDestination(), dash(r.GetGateway()), r.GetInterface(), r.GetMetric(), r.GetProtocol())
	}
	fmt.Fprintf(w, "\ndns: %s\n", dash(strings.Join(st.GetDnsServers(), " ")))
	if p := st.GetPending(); p != nil {
		fmt.Fprintf(w, "pending: %s by %s, reverts at %s unless confirmed (dvctl network confirm)\n",
			p.GetId(), dash(p.GetRequestedBy()), p.GetDeadline().AsTime().Local().Format(time.RFC3339))
	}
	if l := st.GetLast(); l != nil {
		fmt.Fprintf(w, "last: %s %s at %s", l.GetId(), changeState(l.GetState()), l.GetResolvedAt().AsTime().Local().Format(time.RFC3339))
		if l.GetReason() != "" {
			fmt.Fprintf(w, " (%s)", l.GetReason())
		}
		fmt.Fprintln(w)
	}
}

func changeState(s v1.NetworkChange_State) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

// readNetworkConfig reads a NetworkConfig in YAML or JSON (field names as
// in the API: snake_case or lowerCamelCase).
func readNetworkConfig(path string) (*v1.NetworkConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if j, err := yaml.YAMLToJSON(b); err == nil {
		b = j
	}
	c := &v1.NetworkConfig{}
	if err := protojson.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("%s: not a network configuration: %w", path, err)
	}
	return c, nil
}

func newNetworkApplyCmd(g *globals) *cobra.Command {
	var (
		timeout                  time.Duration
		dryRun, noConfirm, again bool
	)
	cmd := &cobra.Command{
		Use:   "apply FILE",
		Short: "Apply a network configuration (YAML or JSON) with a confirm deadline",
		Long: `apply validates FILE, applies it live and persists it. The change is pending
until "dvctl network confirm" (or --confirm) keeps it; past the deadline the
node reverts it by itself. --dry-run prints the plan and changes nothing.

FILE holds bonds, vlans, bridges, interfaces, routes and dns_servers:

  bridges:
    - name: br0
      ports: [enp1s0]
  interfaces:
    - name: br0
      addresses: [192.0.2.10/24]
      gateway4: 192.0.2.1
  dns_servers: [192.0.2.53]

What an earlier configuration named and FILE does not is removed.`,
		Example: `  dvctl network apply net.yaml --dry-run
  dvctl network apply net.yaml --confirm-timeout 2m      # then: dvctl network confirm
  dvctl network apply net.yaml --confirm                 # confirm from a new connection at once`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := g.format()
			if err != nil {
				return err
			}
			cfg, err := readNetworkConfig(args[0])
			if err != nil {
				return err
			}
			req := &v1.ApplyNetworkRequest{Config: cfg, DryRun: dryRun, NoConfirm: noConfirm}
			if cmd.Flags().Changed("confirm-timeout") {
				req.ConfirmTimeout = durationpb.New(timeout)
			}
			c, err := g.dial()
			if err != nil {
				return err
			}
			ctx, cancel := g.callCtx(cmd.Context())
			resp, err := v1.NewNetworkServiceClient(c.Conn()).ApplyNetwork(ctx, req)
			cancel()
			c.Close()
			if err != nil {
				return err
			}
			ch := resp.GetChange()
			if again && ch.GetState() == v1.NetworkChange_STATE_PENDING {
				// A new connection proves the node is still reachable the
				// way this client reaches it.
				confirmed, err := g.resolveNetwork(cmd.Context(), ch.GetId(), true)
				if err != nil {
					return fmt.Errorf("applied %s but could not confirm it (it reverts at %s): %w",
						ch.GetId(), ch.GetDeadline().AsTime().Local().Format(time.RFC3339), err)
				}
				ch = confirmed
			}
			return printProto(g.stdout, f, ch, func(w *tabwriter.Writer) { changeTable(w, ch) })
		},
	}
	cmd.Flags().DurationVar(&timeout, "confirm-timeout", 0, "revert unless confirmed within this time (default: the node's, 60s)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and print the plan; change nothing")
	cmd.Flags().BoolVar(&noConfirm, "no-confirm", false, "keep the change at once (refused when it touches the management interface)")
	cmd.Flags().BoolVar(&again, "confirm", false, "confirm the change from a new connection right after applying it")
	cmd.MarkFlagsMutuallyExclusive("no-confirm", "confirm-timeout")
	cmd.MarkFlagsMutuallyExclusive("no-confirm", "confirm")
	cmd.MarkFlagsMutuallyExclusive("dry-run", "confirm")
	return cmd
}

func changeTable(w *tabwriter.Writer, ch *v1.NetworkChange) {
	if ch.GetId() != "" {
		fmt.Fprintf(w, "change:\t%s\n", ch.GetId())
	}
	fmt.Fprintf(w, "state:\t%s\n", changeState(ch.GetState()))
	if ch.GetState() == v1.NetworkChange_STATE_PENDING {
		fmt.Fprintf(w, "deadline:\t%s (dvctl network confirm %s)\n", ch.GetDeadline().AsTime().Local().Format(time.RFC3339), ch.GetId())
	}
	if ch.GetReason() != "" {
		fmt.Fprintf(w, "reason:\t%s\n", ch.GetReason())
	}
	if ch.GetTouchesManagement() {
		fmt.Fprintf(w, "note:\tthe change touches the management interface\n")
	}
	if len(ch.GetPlan()) == 0 {
		fmt.Fprintf(w, "plan:\tnothing to change\n")
	}
	for i, s := range ch.GetPlan() {
		fmt.Fprintf(w, "%s\t%s\n", map[bool]string{true: "plan:"}[i == 0], s)
	}
}

// newNetworkResolveCmd is "confirm" (keep) or "revert".
func newNetworkResolveCmd(g *globals, keep bool) *cobra.Command {
	use, short, example := "confirm [ID]", "Keep the pending network change", `  dvctl network confirm
  dvctl network confirm net-4f1c2a9b0d3e5f67`
	if !keep {
		use, short, example = "revert [ID]", "Restore the state from before the pending network change now", `  dvctl network revert
  dvctl network revert net-4f1c2a9b0d3e5f67`
	}
	return &cobra.Command{
		Use: use, Short: short, Example: example,
		Long: short + `. Without ID, the pending change ("dvctl network show" names it).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := g.format()
			if err != nil {
				return err
			}
			var id string
			if len(args) == 1 {
				id = args[0]
			} else {
				st, err := g.getNetwork(cmd.Context())
				if err != nil {
					return err
				}
				if st.GetPending() == nil {
					return errors.New("no network change is pending")
				}
				id = st.GetPending().GetId()
			}
			ch, err := g.resolveNetwork(cmd.Context(), id, keep)
			if err != nil {
				return err
			}
			return printProto(g.stdout, f, ch, func(w *tabwriter.Writer) { changeTable(w, ch) })
		},
	}
}

func (g *globals) resolveNetwork(ctx context.Context, id string, keep bool) (*v1.NetworkChange, error) {
	c, err := g.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := g.callCtx(ctx)
	defer cancel()
	nc := v1.NewNetworkServiceClient(c.Conn())
	if keep {
		return nc.ConfirmNetwork(ctx, &v1.ConfirmNetworkRequest{Id: id})
	}
	return nc.RevertNetwork(ctx, &v1.RevertNetworkRequest{Id: id})
}
