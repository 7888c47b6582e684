package provider

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// TestRetryPolicy: which failures are retried, and which leave it open whether the agent got the
// request (so an unanswered VM create is kept as unconfirmed rather than forgotten).
func TestRetryPolicy(t *testing.T) {
	tests := []struct {
		err              error
		transient, maybe bool
	}{
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`), true, false},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), true, true},
		{status.Error(codes.Unavailable, `libvirtd did not answer DomainGetState within 10s`), true, true},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), true, true},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), true, true},
		{status.Error(codes.Canceled, "context canceled"), false, true},
		{context.Canceled, false, true},
		{status.Error(codes.ResourceExhausted, "too many"), true, true},
		{status.Error(codes.AlreadyExists, `vm.name: VM "a" already exists`), false, false},
		{status.Error(codes.InvalidArgument, "request_id: bad"), false, false},
		{status.Error(codes.PermissionDenied, "reader"), false, false},
		{errors.New("plain"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			if got := transient(tt.err); got != tt.transient {
				t.Errorf("transient = %v, want %v", got, tt.transient)
			}
			if got := mayHaveArrived(tt.err); got != tt.maybe {
				t.Errorf("mayHaveArrived = %v, want %v", got, tt.maybe)
			}
		})
	}
}

// TestRefused: only an operation that failed with ALREADY_EXISTS means the name is another's.
func TestRefused(t *testing.T) {
	for _, tt := range []struct {
		op   *v1.Operation
		want bool
	}{
		{&v1.Operation{State: v1.Operation_STATE_FAILED, ErrorCode: int32(codes.AlreadyExists)}, true},
		{&v1.Operation{State: v1.Operation_STATE_FAILED, ErrorCode: int32(codes.Internal)}, false},
		{&v1.Operation{State: v1.Operation_STATE_RUNNING}, false},
		{nil, false},
	} {
		if got := (outcome{op: tt.op}).refused(); got != tt.want {
			t.Errorf("refused(%v) = %v, want %v", tt.op, got, tt.want)
		}
	}
}

// endedOps answers every wait with the operation failed with code.
type endedOps struct {
	v1.UnimplementedOperationServiceServer
	code codes.Code
}

func (e endedOps) WaitOperation(_ context.Context, req *v1.WaitOperationRequest) (*v1.Operation, error) {
	return &v1.Operation{Id: req.GetOperationId(), State: v1.Operation_STATE_FAILED, ErrorCode: int32(e.code),
		Error: "resolve os:2: registry unreachable"}, nil
}

// TestRunEndsOnFailedOperation: an operation that failed with a code that would be transient for a
// call (an upgrade whose registry was unreachable fails UNAVAILABLE) is an answer, not a reason to
// ask again until the timeout.
func TestRunEndsOnFailedOperation(t *testing.T) {
	for _, code := range []codes.Code{codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.FailedPrecondition} {
		t.Run(code.String(), func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "agent.sock")
			l, err := net.Listen("unix", sock)
			must(t, err)
			srv := grpc.NewServer()
			v1.RegisterOperationServiceServer(srv, endedOps{code: code})
			go srv.Serve(l) // ends with Stop
			t.Cleanup(srv.Stop)
			c, err := client.New(client.Config{Endpoint: "unix://" + sock})
			must(t, err)
			t.Cleanup(func() { c.Close() })
			p := &providerData{client: c, endpoint: "unix://" + sock, requestTimeout: 5 * time.Second}

			start := time.Now()
			out, err := p.run(context.Background(), time.Minute, "upgrade", func(context.Context) (*v1.Operation, error) {
				return &v1.Operation{Id: "op-1", State: v1.Operation_STATE_RUNNING}, nil
			}, nil)
			if err == nil || out.op.GetState() != v1.Operation_STATE_FAILED || status.Code(errors.Unwrap(err)) != code {
				t.Fatalf("run = %+v, %v; want the failed operation and its code %s", out.op, err, code)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("run took %s: it kept asking about an operation that had ended", d)
			}
		})
	}
}
