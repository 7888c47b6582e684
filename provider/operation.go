package provider

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-log/tflog"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// wait follows an operation the agent started until it ends or timeout passes, logging its
// progress. start is the RPC that returned the operation (CreatePool, UpdateVM…).
func (p *providerData) wait(ctx context.Context, timeout time.Duration, what string, start func(context.Context) (*v1.Operation, error)) (*v1.Operation, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Anything this provider changes makes listed volumes (size, used_by) stale.
	defer p.volumes.invalidate()
	op, err := start(ctx)
	if err != nil {
		return nil, &apiError{msg: what + ": " + describe(p.endpoint, err), err: err}
	}
	op, err = p.client.Wait(ctx, op, func(op *v1.Operation) {
		tflog.Debug(ctx, what, map[string]any{"operation": op.GetId(), "state": op.GetState().String(),
			"phase": op.GetPhase(), "done": op.GetDone(), "total": op.GetTotal(), "message": op.GetMessage()})
	})
	if err != nil {
		if ctx.Err() != nil {
			return op, fmt.Errorf("%s: operation %s still %s after %s (phase %q); raise the resource's timeouts or the "+
				"provider's operation_timeout", what, op.GetId(), op.GetState(), timeout, op.GetPhase())
		}
		return op, &apiError{msg: fmt.Sprintf("%s (operation %s): %s", what, op.GetId(), describe(p.endpoint, err)), err: err}
	}
	return op, nil
}

// call bounds one unary API call by request_timeout.
func (p *providerData) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, p.requestTimeout)
}

// apiError carries a described message for the user and the gRPC error underneath, so callers can
// still ask status.Code (e.g. NOT_FOUND on delete).
type apiError struct {
	msg string
	err error
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.err }
