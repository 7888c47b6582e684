// Command dvctl is the DebVisor admin CLI.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/debvisor/debvisor/dvctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dvctl.Main(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
