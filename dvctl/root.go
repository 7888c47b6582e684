// Package dvctl owns the dvctl command line: the admin CLI that talks to an
// agent over mTLS or the local socket, and manages dvctl contexts and PKI.
package dvctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/api/client"
	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/internal/buildinfo"
)

// LocalSocket is the agent's default unix socket.
const LocalSocket = "unix:///run/debvisor/agent.sock"

// globals are the flags every command shares.
type globals struct {
	configPath string
	context    string
	endpoint   string
	node       string
	ca         string
	cert       string
	key        string
	serverName string
	output     string
	timeout    time.Duration

	stdout, stderr io.Writer
}

// NewRoot builds the dvctl command tree writing to stdout and stderr.
func NewRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "dvctl",
		Short: "DebVisor admin CLI",
		Long: `dvctl manages DebVisor nodes: status, operations, health, PKI.

It talks to an agent over mTLS (--endpoint HOST:PORT with --ca/--cert/--key,
or a context from the config file), or, on the node itself as root, over the
local socket (--endpoint unix:///run/debvisor/agent.sock, the default when no
context is configured). In a cluster, --node NAME runs the command on another
member through that one endpoint.`,
		Example: `  dvctl status
  dvctl --endpoint 10.0.0.5:7443 --ca ca.crt --cert admin.crt --key admin.key status -o json
  dvctl --node n3 status        # through the context's endpoint, on member n3
  dvctl config set-context lab --endpoint 127.0.0.1:7443 --ca ca.crt --cert admin.crt --key admin.key
  dvctl completion bash > /etc/bash_completion.d/dvctl`,
		Version:       buildinfo.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", DefaultConfigPath(), "dvctl config file ($DVCTL_CONFIG)")
	pf.StringVar(&g.context, "context", "", "context to use (default: current_context)")
	pf.StringVarP(&g.endpoint, "endpoint", "e", os.Getenv("DEBVISOR_ENDPOINT"), "agent endpoint HOST:PORT or unix:///PATH, overrides the context ($DEBVISOR_ENDPOINT)")
	pf.StringVarP(&g.node, "node", "n", "", "cluster member NAME to run the command on, forwarded by the endpoint's agent; HOST:PORT or unix:///PATH is taken as --endpoint")
	pf.StringVar(&g.ca, "ca", os.Getenv("DEBVISOR_CA"), "cluster CA certificate file ($DEBVISOR_CA)")
	pf.StringVar(&g.cert, "cert", os.Getenv("DEBVISOR_CERT"), "client certificate file ($DEBVISOR_CERT)")
	pf.StringVar(&g.key, "key", os.Getenv("DEBVISOR_KEY"), "client key file ($DEBVISOR_KEY)")
	pf.StringVar(&g.serverName, "server-name", "", "name to expect in the node certificate (default: endpoint host)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	pf.DurationVar(&g.timeout, "timeout", 30*time.Second, "timeout for each API call")
	_ = root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
	})
	_ = root.RegisterFlagCompletionFunc("context", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		f, err := LoadFile(g.configPath)
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var names []string
		for _, c := range f.Contexts {
			names = append(names, c.Name)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})

	root.AddCommand(
		newVersionCmd(g),
		newStatusCmd(g),
		newHealthCmd(g),
		newOperationCmd(g),
		newConfigCmd(g),
		newPKICmd(g),
		newVMCmd(g), newPoolCmd(g), newVolumeCmd(g),
		newClusterCmd(g),
		newUpgradeCmd(g), newSlotsCmd(g), newRollbackCmd(g), newCommitCmd(g), newEmergencyCmd(g),
		newNetworkCmd(g),
		newNetcfgCmd(g),
	)
	return root
}

// Main runs dvctl and returns the exit code.
func Main(ctx context.Context, args []string) int {
	root := NewRoot(os.Stdout, os.Stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "dvctl:", describe(err))
		return 1
	}
	return 0
}

// clientConfig resolves flags over the selected context.
func (g *globals) clientConfig() (client.Config, error) {
	var cc client.Config
	f, err := LoadFile(g.configPath)
	if err != nil {
		return cc, fmt.Errorf("dvctl config %s: %w", g.configPath, err)
	}
	name := g.context
	if name == "" {
		name = f.CurrentContext
	}
	if name != "" {
		c, ok := f.Get(name)
		if !ok {
			return cc, fmt.Errorf("context %q not found in %s", name, g.configPath)
		}
		cc = client.Config{Endpoint: c.Endpoint, CAFile: c.CA, CertFile: c.Cert, KeyFile: c.Key, ServerName: c.ServerName}
	}
	endpoint, member, err := splitNode(g.endpoint, g.node)
	if err != nil {
		return cc, err
	}
	cc.Node = member
	for dst, v := range map[*string]string{&cc.Endpoint: endpoint, &cc.CAFile: g.ca, &cc.CertFile: g.cert, &cc.KeyFile: g.key, &cc.ServerName: g.serverName} {
		if v != "" {
			*dst = v
		}
	}
	if cc.Endpoint == "" {
		cc.Endpoint = LocalSocket
	}
	return cc, nil
}

// splitNode reads --node: a member name to forward to, or (as before
// clusters) an endpoint, which then wins over --endpoint.
func splitNode(endpoint, node string) (string, string, error) {
	switch {
	case node == "":
		return endpoint, "", nil
	case strings.HasPrefix(node, "unix://") || strings.Contains(node, ":"):
		return node, "", nil
	}
	if err := rules.CheckHostname(node); err != nil {
		return "", "", fmt.Errorf("--node %q is neither a member name nor an endpoint (HOST:PORT, unix:///PATH): %w", node, err)
	}
	return endpoint, node, nil
}

func (g *globals) dial() (*client.Client, error) {
	cc, err := g.clientConfig()
	if err != nil {
		return nil, err
	}
	return client.New(cc)
}

func (g *globals) format() (Format, error) { return parseFormat(g.output) }

func (g *globals) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, g.timeout)
}
