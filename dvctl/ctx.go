package dvctl

import (
	"context"
	"time"

	"github.com/spf13/cobra"
)

type ctxT = context.Context

func contextWithTimeout(cmd *cobra.Command, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), d)
}
