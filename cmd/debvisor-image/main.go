// Command debvisor-image builds and inspects DebVisor A/B disk images.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/debvisor/debvisor/imagebuilder/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
