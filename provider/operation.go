package provider

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-log/tflog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// Retry policy. The defaults fit one 2-core node starting 50 guests at once: the agent answers
// reads from libvirtd (or its snapshot) within a request even then, so retries are for an agent
// that restarts or a libvirtd that stalls, not for a queue.
const (
	// retryMin and retryMax bound the back-off between attempts (jittered, doubling).
	retryMin = 250 * time.Millisecond
	retryMax = 5 * time.Second
	// readRetryFor is how long a read keeps retrying UNAVAILABLE and DEADLINE_EXCEEDED: long
	// enough for an agent restart, short enough that a dead node fails the refresh.
	readRetryFor = 2 * time.Minute
)

// transient reports whether a failed call may succeed when sent again: the agent was unreachable
// or restarting (UNAVAILABLE), overloaded, or the call ran out of time (DEADLINE_EXCEEDED).
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// unsent reports whether a failed call certainly never reached the agent, so a create that got
// it cannot have been started.
func unsent(err error) bool {
	return status.Code(err) == codes.Unavailable && strings.Contains(status.Convert(err).Message(), "connection refused")
}

// mayHaveArrived reports whether a call that failed this way may still have been received and
// acted on by the agent.
func mayHaveArrived(err error) bool {
	if unsent(err) {
		return false
	}
	return transient(err) || status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled)
}

// backoff waits before attempt n (0-based) and reports false when ctx ended first.
func backoff(ctx context.Context, n int) bool {
	d := retryMin << min(n, 5)
	d = min(d, retryMax)
	d = d/2 + rand.N(d/2+1) //nolint:gosec // jitter, not security
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// read runs one read call, each attempt bounded by request_timeout, retrying transient failures
// for up to readRetryFor (and never beyond ctx). what names it in logs.
func (p *providerData) read(ctx context.Context, what string, call func(context.Context) error) error {
	until := time.Now().Add(readRetryFor)
	for n := 0; ; n++ {
		cctx, cancel := p.call(ctx)
		err := call(cctx)
		cancel()
		if err == nil || !transient(err) || ctx.Err() != nil || time.Now().After(until) {
			return err
		}
		tflog.Debug(ctx, "retrying read", map[string]any{"what": what, "attempt": n + 1, "error": err.Error()})
		if !backoff(ctx, n) {
			return err
		}
	}
}

// outcome is how far a mutation got.
type outcome struct {
	// op is the agent's operation, at its end when err is nil.
	op *v1.Operation
	// accepted: the agent returned an operation, so it has the request.
	accepted bool
	// unsure: never accepted, but an attempt may have reached the agent (its answer was lost).
	unsure bool
}

// refused reports whether the agent's operation failed because another object of that name
// exists (ALREADY_EXISTS): the object is someone else's, and must not be recorded as this
// resource's.
func (o outcome) refused() bool {
	return o.op.GetState() == v1.Operation_STATE_FAILED && codes.Code(o.op.GetErrorCode()) == codes.AlreadyExists
}

// run sends a mutation and follows its operation until it ends or timeout passes.
//
// Sending is retried on transient failures until the timeout; for creates that is safe because
// they carry a request id (the agent returns the first attempt's operation). accepted, when not
// nil, is called as soon as the agent returns an operation — before waiting — so callers record
// the object in state first: whatever fails afterwards then taints it instead of losing it.
// Following retries transient failures too; an operation the agent no longer knows (it restarted
// and forgot it) is sent again with start, which is idempotent for every mutation the provider
// makes (creates by request id, updates carry the whole desired spec, deletes of what is gone
// answer NOT_FOUND).
func (p *providerData) run(ctx context.Context, timeout time.Duration, what string, start func(context.Context) (*v1.Operation, error), accepted func(*v1.Operation)) (outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Anything this provider changes makes listed volumes (size, used_by) stale.
	defer p.volumes.invalidate()
	var out outcome
	send := func() error {
		for n := 0; ; n++ {
			cctx, ccancel := p.call(ctx)
			op, err := start(cctx)
			ccancel()
			if err == nil {
				out.op = op
				if !out.accepted && accepted != nil {
					accepted(op)
				}
				out.accepted = true
				return nil
			}
			// Only the last answer counts: a definitive one (ALREADY_EXISTS for a VM another
			// request made) settles what an earlier lost answer left open, because the agent
			// answers a resent create with the first attempt's operation.
			out.unsure = !out.accepted && mayHaveArrived(err)
			if !transient(err) || ctx.Err() != nil {
				return err
			}
			tflog.Debug(ctx, "retrying "+what, map[string]any{"attempt": n + 1, "error": err.Error()})
			if !backoff(ctx, n) {
				return err
			}
		}
	}
	if err := send(); err != nil {
		return out, p.failed(ctx, timeout, what, out, err)
	}
	for n := 0; ; {
		op, err := p.client.Wait(ctx, out.op, func(op *v1.Operation) {
			tflog.Debug(ctx, what, map[string]any{"operation": op.GetId(), "state": op.GetState().String(),
				"phase": op.GetPhase(), "done": op.GetDone(), "total": op.GetTotal(), "message": op.GetMessage()})
		})
		if op != nil {
			out.op = op
		}
		switch {
		case err == nil:
			return out, nil
		case isNotFound(err) && op.GetState() != v1.Operation_STATE_FAILED:
			// WaitOperation's NOT_FOUND: the agent restarted and forgot the operation.
			tflog.Info(ctx, what+": the agent no longer knows the operation (restarted?); sending the request again",
				map[string]any{"operation": out.op.GetId()})
			if err := send(); err != nil {
				return out, p.failed(ctx, timeout, what, out, err)
			}
			continue
		case transient(err) && ctx.Err() == nil && !ended(op):
			// A call failed, not the operation: an operation that ended with a transient
			// code (an upgrade whose registry was unreachable) stays ended however often
			// it is asked about.
			tflog.Debug(ctx, "retrying wait for "+what, map[string]any{"attempt": n + 1, "error": err.Error()})
			if backoff(ctx, n) {
				n++
				continue
			}
		}
		if ctx.Err() != nil {
			return out, p.failed(ctx, timeout, what, out, err)
		}
		return out, &apiError{msg: fmt.Sprintf("%s (operation %s): %s", what, out.op.GetId(), describe(p.endpoint, err)), err: err}
	}
}

// failed explains a mutation that ended without an answer: the timeout passed, the CLI was
// interrupted, or the agent stayed unreachable.
func (p *providerData) failed(ctx context.Context, timeout time.Duration, what string, out outcome, err error) error {
	switch {
	case out.accepted && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%s: operation %s still %s after %s (phase %q); raise the resource's timeouts or the "+
			"provider's operation_timeout", what, out.op.GetId(), out.op.GetState(), timeout, out.op.GetPhase())
	case out.accepted && ctx.Err() != nil:
		return fmt.Errorf("%s: interrupted while the agent ran operation %s (last seen %s); it goes on on the node, and "+
			"the object is kept in the state (tainted) so the next apply reconciles it", what, out.op.GetId(),
			strings.ToLower(strings.TrimPrefix(out.op.GetState().String(), "STATE_")))
	case out.accepted:
		return &apiError{msg: fmt.Sprintf("%s (operation %s): %s", what, out.op.GetId(), describe(p.endpoint, err)), err: err}
	}
	return &apiError{msg: what + ": " + describe(p.endpoint, err), err: err}
}

// ended reports whether op reached a final state.
func ended(op *v1.Operation) bool {
	switch op.GetState() {
	case v1.Operation_STATE_SUCCEEDED, v1.Operation_STATE_FAILED, v1.Operation_STATE_CANCELLED:
		return true
	}
	return false
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
