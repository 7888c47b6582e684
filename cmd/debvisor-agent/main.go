// Command debvisor-agent is the DebVisor node agent.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/debvisor/debvisor/nodeagent/agentcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := agentcmd.Main(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
