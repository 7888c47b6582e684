package dvctl

import (
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Manage dvctl contexts (endpoint + credentials)",
	}
	var c Context
	var use bool
	set := &cobra.Command{
		Use:     "set-context NAME",
		Short:   "Add or replace a context",
		Example: `  dvctl config set-context lab --endpoint 127.0.0.1:7443 --ca-file pki/ca.crt --cert-file pki/admin.crt --key-file pki/admin.key --use`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if c.Endpoint == "" {
				return fmt.Errorf("--endpoint is required (HOST:PORT or unix:///PATH)")
			}
			f, err := LoadFile(g.configPath)
			if err != nil {
				return err
			}
			c.Name = args[0]
			for _, p := range []*string{&c.CA, &c.Cert, &c.Key} {
				if *p != "" {
					abs, err := filepath.Abs(*p)
					if err != nil {
						return err
					}
					*p = abs
				}
			}
			f.Set(c)
			if use || f.CurrentContext == "" {
				f.CurrentContext = c.Name
			}
			if err := f.Save(g.configPath); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "context %q saved in %s\n", c.Name, g.configPath)
			return nil
		},
	}
	set.Flags().StringVar(&c.Endpoint, "endpoint", "", "HOST:PORT or unix:///PATH")
	set.Flags().StringVar(&c.CA, "ca-file", "", "cluster CA certificate")
	set.Flags().StringVar(&c.Cert, "cert-file", "", "client certificate")
	set.Flags().StringVar(&c.Key, "key-file", "", "client key")
	set.Flags().StringVar(&c.ServerName, "tls-server-name", "", "name expected in the node certificate")
	set.Flags().BoolVar(&use, "use", false, "make it the current context")

	useCmd := &cobra.Command{
		Use:   "use-context NAME",
		Short: "Select the current context",
		Args:  cobra.ExactArgs(1),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			f, _ := LoadFile(g.configPath)
			var names []string
			if f != nil {
				for _, c := range f.Contexts {
					names = append(names, c.Name)
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := LoadFile(g.configPath)
			if err != nil {
				return err
			}
			if _, ok := f.Get(args[0]); !ok {
				return fmt.Errorf("context %q not found in %s", args[0], g.configPath)
			}
			f.CurrentContext = args[0]
			return f.Save(g.configPath)
		},
	}
	get := &cobra.Command{
		Use:   "get-contexts",
		Short: "List contexts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := LoadFile(g.configPath)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CURRENT\tNAME\tENDPOINT\tCERT")
			for _, c := range f.Contexts {
				cur := ""
				if c.Name == f.CurrentContext {
					cur = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cur, c.Name, c.Endpoint, dash(c.Cert))
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(set, useCmd, get)
	return cmd
}
