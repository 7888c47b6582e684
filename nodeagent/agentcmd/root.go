// Package agentcmd owns the debvisor-agent command line: the daemon
// ("serve") and the node-local helpers the image's units call ("firstboot").
// Each subcommand lives in its own file and registers itself in init, so
// later capabilities add commands without touching the others.
package agentcmd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/internal/buildinfo"
)

// Env is what every subcommand gets from main: streams and a logger factory.
type Env struct {
	Stdin          io.Reader // os.Stdin when nil
	Stdout, Stderr io.Writer
}

var subcommands []func(env *Env) *cobra.Command

// register adds a subcommand constructor; called from init in each file.
func register(f func(env *Env) *cobra.Command) { subcommands = append(subcommands, f) }

// NewRoot builds the debvisor-agent command tree.
func NewRoot(env *Env) *cobra.Command {
	root := &cobra.Command{
		Use:           "debvisor-agent",
		Short:         "DebVisor node agent: the API daemon and node-local tasks",
		Long:          "debvisor-agent runs on every DebVisor node. \"serve\" is the mTLS gRPC/REST API daemon (debvisor-rpcd.service);\nthe other subcommands are the node-local tasks the image's systemd units run.",
		Version:       buildinfo.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	for _, f := range subcommands {
		root.AddCommand(f(env))
	}
	return root
}

// Main runs the command line and returns the process exit code.
func Main(ctx context.Context, args []string) int {
	env := &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	root := NewRoot(env)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(env.Stderr, "debvisor-agent:", err)
		return 1
	}
	return 0
}

// newLogger builds the structured logger daemons write to stderr (journald
// picks it up under systemd).
func newLogger(w io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
