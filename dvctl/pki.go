package dvctl

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/internal/pki"
)

func newPKICmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Create the cluster CA and issue node and client certificates (offline)",
		Long: `pki works on files only; it needs no agent. Keep the CA key (ca.key) off the
nodes: it can mint admin certificates.`,
	}
	var (
		dir      string
		cluster  string
		force    bool
		validity time.Duration
	)
	initCA := &cobra.Command{
		Use:     "init-ca",
		Short:   "Create a new cluster CA (ca.crt, ca.key) in --dir",
		Example: `  dvctl pki init-ca --dir ./pki --cluster lab`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := pki.NewCA(cluster, pki.Options{Validity: validity})
			if err != nil {
				return err
			}
			files := pki.Files{Cert: filepath.Join(dir, "ca.crt"), Key: filepath.Join(dir, "ca.key")}
			if err := pki.Save(files, ca.Cert, ca.Key, force); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "CA %q written to %s (key %s, keep it safe)\n", ca.Cert.Subject.CommonName, files.Cert, files.Key)
			return nil
		},
	}
	initCA.Flags().StringVar(&cluster, "cluster", "debvisor", "cluster name, recorded in the CA's subject")

	issue := &cobra.Command{Use: "issue", Short: "Issue a node or client certificate signed by the CA in --dir"}
	var (
		hosts  []string
		role   string
		outDir string
	)
	node := &cobra.Command{
		Use:     "node NAME",
		Short:   "Issue a node (server) certificate: NAME.crt, NAME.key",
		Example: `  dvctl pki issue node node1 --dir ./pki --host 192.0.2.10 --host node1.lab`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ca, err := pki.LoadCA(pki.Files{Cert: filepath.Join(dir, "ca.crt"), Key: filepath.Join(dir, "ca.key")})
			if err != nil {
				return err
			}
			is, err := ca.IssueNode(args[0], hosts, pki.Options{Validity: validity})
			if err != nil {
				return err
			}
			return g.saveIssued(outDirOr(outDir, dir), args[0], is, force)
		},
	}
	node.Flags().StringSliceVar(&hosts, "host", nil, "DNS name or IP the node answers on (repeatable)")
	client := &cobra.Command{
		Use:     "client NAME",
		Short:   "Issue a client certificate with a role: NAME.crt, NAME.key",
		Example: `  dvctl pki issue client alice --role admin --dir ./pki`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := pki.ParseRole(role)
			if err != nil {
				return fmt.Errorf("--role: %w", err)
			}
			ca, err := pki.LoadCA(pki.Files{Cert: filepath.Join(dir, "ca.crt"), Key: filepath.Join(dir, "ca.key")})
			if err != nil {
				return err
			}
			is, err := ca.IssueClient(args[0], r, pki.Options{Validity: validity})
			if err != nil {
				return err
			}
			return g.saveIssued(outDirOr(outDir, dir), args[0], is, force)
		},
	}
	client.Flags().StringVar(&role, "role", "", "reader, operator or admin (required)")
	_ = client.MarkFlagRequired("role")
	_ = client.RegisterFlagCompletionFunc("role", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"reader", "operator", "admin"}, cobra.ShellCompDirectiveNoFileComp
	})
	for _, c := range []*cobra.Command{node, client} {
		c.Flags().StringVar(&outDir, "out-dir", "", "where to write NAME.crt and NAME.key (default: --dir)")
	}
	issue.AddCommand(node, client)

	show := &cobra.Command{
		Use:   "show CERT",
		Short: "Show what a certificate grants: subject, role, validity, issuer",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			certs, err := pki.ParseCerts(data)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			for _, c := range certs {
				showCert(tw, c, time.Now())
			}
			return tw.Flush()
		},
	}
	for _, c := range []*cobra.Command{initCA, node, client} {
		c.Flags().BoolVar(&force, "force", false, "overwrite existing files")
		c.Flags().DurationVar(&validity, "validity", 0, "lifetime (default: CA 10y, node 1y, client 90d)")
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", ".", "directory holding ca.crt and ca.key")
	cmd.AddCommand(initCA, issue, show)
	return cmd
}

func outDirOr(out, dir string) string {
	if out != "" {
		return out
	}
	return dir
}

func (g *globals) saveIssued(dir, name string, is *pki.Issued, force bool) error {
	files := pki.Files{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
	if err := pki.Save(files, is.Cert, is.Key, force); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "%s written (valid until %s)\n", files.Cert, is.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func showCert(w *tabwriter.Writer, c *x509.Certificate, now time.Time) {
	kind := "client"
	switch {
	case c.IsCA:
		kind = "CA"
	case pki.IsNode(c):
		kind = "node"
	}
	validity := "valid"
	switch {
	case now.After(c.NotAfter):
		validity = "EXPIRED"
	case now.Before(c.NotBefore):
		validity = "NOT YET VALID"
	}
	fmt.Fprintf(w, "SUBJECT:\t%s\n", c.Subject.CommonName)
	fmt.Fprintf(w, "KIND:\t%s\n", kind)
	if kind == "client" {
		fmt.Fprintf(w, "ROLE:\t%s\n", pki.RoleOf(c))
	}
	fmt.Fprintf(w, "ISSUER:\t%s\n", c.Issuer.CommonName)
	fmt.Fprintf(w, "NOT BEFORE:\t%s\n", c.NotBefore.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "NOT AFTER:\t%s (%s)\n", c.NotAfter.UTC().Format(time.RFC3339), validity)
	if names := append(c.DNSNames, ipStrings(c)...); len(names) > 0 {
		fmt.Fprintf(w, "NAMES:\t%s\n", strings.Join(names, ", "))
	}
	fmt.Fprintf(w, "SERIAL:\t%x\n", c.SerialNumber)
}

func ipStrings(c *x509.Certificate) []string {
	var out []string
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}
