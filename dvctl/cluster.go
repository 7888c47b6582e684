package dvctl

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
)

func newClusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Cluster membership and join tokens",
		Long: `Nodes form a cluster with gossip (memberlist) and find their first contact
with mDNS. A new node joins with a join token and the CA certificate hash:
make a token here, then on the new node run
  debvisor-agent cluster join ADDRESS --token TOKEN --ca-cert-hash HASH
or put both in its preseed. Any member forwards a call to another: --node NAME.`,
	}
	info := &cobra.Command{
		Use: "info", Short: "Show the cluster this node is in", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.Cluster, error) {
				return c.Cluster.GetCluster(ctx, &v1.GetClusterRequest{})
			}, func(w *tabwriter.Writer, c *v1.Cluster) {
				fmt.Fprintf(w, "CLUSTER:\t%s\nCA CERT HASH:\t%s\nTHIS NODE:\t%s\nHOLDS CA:\t%v\nMEMBERS:\t%d\nSIGNERS:\t%s\n",
					c.GetId(), c.GetCaCertHash(), c.GetSelf(), c.GetHoldsCa(), c.GetMemberCount(), strings.Join(c.GetSigners(), ", "))
			})
		},
	}
	members := &cobra.Command{
		Use: "members", Short: "List the members this node sees", Args: cobra.NoArgs,
		Example: `  dvctl cluster members
  dvctl cluster members -o json | jq -r '.members[].name'`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.ListMembersResponse, error) {
				return c.Cluster.ListMembers(ctx, &v1.ListMembersRequest{})
			}, membersTable)
		},
	}
	cmd.AddCommand(info, members, newTokenCmd(g))
	return cmd
}

func membersTable(w *tabwriter.Writer, r *v1.ListMembersResponse) {
	fmt.Fprintln(w, "NAME\tAPI\tGOSSIP\tVERSION\tCA\tSELF")
	for _, m := range r.GetMembers() {
		self := ""
		if m.GetSelf() {
			self = "*"
		}
		ca := ""
		if m.GetHoldsCa() {
			ca = "yes"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.GetName(), dash(m.GetApiAddress()), dash(m.GetGossipAddress()), dash(m.GetAgentVersion()), dash(ca), self)
	}
}

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Join tokens (kept on the nodes holding the CA key; admin only)",
	}
	var (
		ttl  time.Duration
		desc string
	)
	create := &cobra.Command{
		Use: "create", Short: "Make a join token and print the command that joins a node with it", Args: cobra.NoArgs,
		Example: `  dvctl cluster token create --ttl 2h --description "rack 4"
  dvctl --node n1 cluster token create    # on the member holding the CA`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rules.CheckJoinTokenTTL(ttl); err != nil || ttl <= 0 {
				return fmt.Errorf("--ttl %s: want a duration in (0, %s]", ttl, rules.MaxJoinTokenTTL)
			}
			var endpoint string
			if cc, err := g.clientConfig(); err == nil {
				endpoint = cc.Endpoint
			}
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.CreateJoinTokenResponse, error) {
				return c.Cluster.CreateJoinToken(ctx, &v1.CreateJoinTokenRequest{Ttl: durationpb.New(ttl), Description: desc})
			}, func(w *tabwriter.Writer, r *v1.CreateJoinTokenResponse) {
				fmt.Fprintf(w, "TOKEN:\t%s\nCA CERT HASH:\t%s\nEXPIRES:\t%s\n\nOn the new node:\n  debvisor-agent cluster join %s --token %s --ca-cert-hash %s\n",
					r.GetToken(), r.GetCaCertHash(), r.GetInfo().GetExpireTime().AsTime().UTC().Format(time.RFC3339),
					joinAddr(endpoint), r.GetToken(), r.GetCaCertHash())
			})
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", rules.DefaultJoinTokenTTL, "how long the token is valid (at most 720h)")
	create.Flags().StringVar(&desc, "description", "", "shown in token list")
	list := &cobra.Command{
		Use: "list", Short: "List join tokens (ids only; secrets are not kept)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.ListJoinTokensResponse, error) {
				return c.Cluster.ListJoinTokens(ctx, &v1.ListJoinTokensRequest{})
			}, func(w *tabwriter.Writer, r *v1.ListJoinTokensResponse) {
				fmt.Fprintln(w, "ID\tEXPIRES\tUSES\tDESCRIPTION")
				for _, t := range r.GetTokens() {
					exp := t.GetExpireTime().AsTime().UTC().Format(time.RFC3339)
					if t.GetExpired() {
						exp += " (expired)"
					}
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", t.GetId(), exp, t.GetUses(), dash(t.GetDescription()))
				}
			})
		},
	}
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a join token (nodes can no longer join with it)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, _, _ := strings.Cut(args[0], ".") // a whole token names its id too
			if err := rules.CheckJoinTokenID(id); err != nil {
				return err
			}
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.DeleteJoinTokenResponse, error) {
				return c.Cluster.DeleteJoinToken(ctx, &v1.DeleteJoinTokenRequest{Id: id})
			}, func(w *tabwriter.Writer, _ *v1.DeleteJoinTokenResponse) {
				fmt.Fprintf(w, "join token %s deleted\n", id)
			})
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

// joinAddr is the address to print in the join hint: the endpoint when it
// is a TCP one.
func joinAddr(endpoint string) string {
	if endpoint == "" || strings.HasPrefix(endpoint, "unix://") {
		return "ADDRESS:7443"
	}
	return endpoint
}
