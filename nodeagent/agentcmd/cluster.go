package agentcmd

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/nodeagent/cluster"
	"github.com/debvisor/debvisor/nodeagent/config"
)

func init() { register(newClusterCmd) }

// newClusterCmd holds the node-local enrollment commands. They run before
// the node has a certificate (so not through the API); afterwards `dvctl
// cluster …` manages the cluster.
func newClusterCmd(env *Env) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Enroll this node: bootstrap a new cluster or join one (run as root on the node)",
		Long: `cluster init makes this node the first member of a new cluster: the cluster CA
(unless tls.ca and ca.key beside it exist), this node's certificate, the gossip
key and a join token. cluster join enrolls this node in an existing cluster with
a join token and the CA certificate hash (as kubeadm's --token and
--discovery-token-ca-cert-hash): it checks the member's certificate against the
hash before sending anything, sends a certificate request, and installs the node
certificate, the CA bundle and the gossip keys it gets back.

Restart debvisor-rpcd.service afterwards. An unattended install does the same
from the preseed's cluster section on first boot.`,
		Example: `  debvisor-agent cluster init --name lab
  debvisor-agent cluster join 10.0.0.5:7443 --token abcdef.0123456789abcdef --ca-cert-hash sha256:…
  debvisor-agent cluster join --mdns --token abcdef.0123456789abcdef --ca-cert-hash sha256:…`,
	}
	cmd.PersistentFlags().StringVarP(&cfgPath, "config", "c", config.DefaultPath, "agent config file")
	load := func() (config.Config, cluster.Config, error) {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			return cfg, cluster.Config{}, err
		}
		log := newLogger(env.Stderr, slog.LevelInfo, "text")
		return cfg, cluster.Config{
			NodeName: cluster.MemberName(cfg.NodeName), StateDir: cfg.StateDir,
			CAFile: cfg.TLS.CA, CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key,
			Bind: cfg.Cluster.Bind, Advertise: cfg.Cluster.Advertise, Log: log,
		}, nil
	}

	var (
		name, token string
		ttl         time.Duration
	)
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Bootstrap a new cluster with this node as its first member",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, ccfg, err := load()
			if err != nil {
				return err
			}
			b, err := cluster.Bootstrap(cmd.Context(), ccfg, cluster.BootstrapOptions{ClusterID: name, Token: token, TokenTTL: ttl})
			if err != nil {
				return err
			}
			if token == "" {
				n, err := cluster.Open(ccfg)
				if err != nil {
					return err
				}
				if token, _, err = n.CreateToken(ttl, "made by cluster init"); err != nil {
					return err
				}
			}
			fmt.Fprintf(env.Stdout, "cluster %s bootstrapped on %s\nCA certificate hash: %s\njoin token:          %s\n\nOn each other node:\n  debvisor-agent cluster join %s:7443 --token %s --ca-cert-hash %s\nor, on this LAN, with --mdns instead of the address. Then restart debvisor-rpcd.service.\n",
				b.ClusterID, ccfg.NodeName, b.CAHash, token, ccfg.NodeName, token, b.CAHash)
			return nil
		},
	}
	initCmd.Flags().StringVar(&name, "name", "", "cluster id (a host name label); random when empty")
	initCmd.Flags().StringVar(&token, "token", "", "register this join token (abcdef.0123456789abcdef); one is made when empty")
	initCmd.Flags().DurationVar(&ttl, "token-ttl", 24*time.Hour, "how long the token stays valid (at most 720h)")

	var (
		caHash string
		mdns   bool
		wait   time.Duration
	)
	joinCmd := &cobra.Command{
		Use:   "join [ADDRESS...]",
		Short: "Join an existing cluster through a member's API address (or one found by mDNS)",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, ccfg, err := load()
			if err != nil {
				return err
			}
			if len(args) == 0 {
				args = cfg.Cluster.Join
			}
			ctx := cmd.Context()
			if wait > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, wait)
				defer cancel()
			}
			j, err := cluster.JoinCluster(ctx, ccfg, cluster.JoinOptions{Token: token, CAHash: caHash, Addrs: args, MDNS: mdns})
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "joined cluster %s as %s via %s (certificate signed by %s); restart debvisor-rpcd.service\n", j.ClusterID, ccfg.NodeName, j.Via, j.SignedBy)
			return nil
		},
	}
	joinCmd.Flags().StringVar(&token, "token", "", "join token from `dvctl cluster token create` (required)")
	joinCmd.Flags().StringVar(&caHash, "ca-cert-hash", "", "sha256:… hash of the cluster CA (required; printed with the token)")
	joinCmd.Flags().BoolVar(&mdns, "mdns", false, "look for a member on the LAN with mDNS")
	joinCmd.Flags().DurationVar(&wait, "wait", 2*time.Minute, "give up when no member answered within this time")
	_ = joinCmd.MarkFlagRequired("token")
	_ = joinCmd.MarkFlagRequired("ca-cert-hash")
	cmd.AddCommand(initCmd, joinCmd)
	return cmd
}
