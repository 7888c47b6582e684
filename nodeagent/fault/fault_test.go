package fault

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestKindsMapToCodes(t *testing.T) {
	cause := fs.ErrNotExist
	tests := []struct {
		name     string
		err      error
		wantCode codes.Code
		wantMsg  string
	}{
		{"invalid field", Invalidf("vm.name", "%q is not a valid name", "a/b"), codes.InvalidArgument, `vm.name: "a/b" is not a valid name`},
		{"not found", Errorf(NotFound, "VM %q not found", "web"), codes.NotFound, `VM "web" not found`},
		{"wrapped cause", Errorf(FailedPrecondition, "seed: %w", cause), codes.FailedPrecondition, "seed: file does not exist"},
		{"wrap keeps kind", Wrap(Errorf(AlreadyExists, "pool %q exists", "p"), "create pool"), codes.AlreadyExists, `create pool: pool "p" exists`},
		{"wrap of plain error", Wrap(errors.New("boom"), "define"), codes.Internal, "define: boom"},
		{"fmt wrap of fault", fmt.Errorf("outer: %w", Errorf(Unavailable, "libvirtd is down")), codes.Unavailable, "outer: libvirtd is down"},
		{"context cancel", Wrap(context.Canceled, "wait"), codes.Canceled, "wait: context canceled"},
		{"deadline", Wrap(context.DeadlineExceeded, "libvirt call"), codes.DeadlineExceeded, "libvirt call: context deadline exceeded"},
		{"remote status", Wrap(status.Error(codes.PermissionDenied, "no"), "forward"), codes.PermissionDenied, "forward: rpc error: code = PermissionDenied desc = no"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, ok := status.FromError(tt.err)
			if !ok {
				t.Fatalf("status.FromError(%v) found no status", tt.err)
			}
			if st.Code() != tt.wantCode {
				t.Errorf("code = %v, want %v", st.Code(), tt.wantCode)
			}
			if tt.err.Error() != tt.wantMsg {
				t.Errorf("message = %q, want %q", tt.err.Error(), tt.wantMsg)
			}
		})
	}
	if !errors.Is(Errorf(FailedPrecondition, "seed: %w", cause), fs.ErrNotExist) {
		t.Error("the cause is not reachable with errors.Is")
	}
	if Wrap(nil, "x") != nil {
		t.Error("Wrap(nil) != nil")
	}
}
