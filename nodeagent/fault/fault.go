// Package fault owns the agent's error kinds. Domain packages (vm, storage,
// libvirtconn, operation, and later upgrade, network, cluster) say *what*
// went wrong with a Kind and a clear message that wraps its cause (%w);
// they never build gRPC statuses. This package is the one place that maps a
// Kind to a gRPC code: *Error implements GRPCStatus, which grpc-go's status
// package and the REST gateway read, also through wrapping.
package fault

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind classifies an error by what the caller can do about it.
type Kind int

// The kinds, each named for the caller's situation.
const (
	// Internal: a bug or an unexpected failure; nothing the caller did.
	Internal Kind = iota
	// Invalid: the request itself is wrong ("field: message").
	Invalid
	// NotFound: the object named does not exist.
	NotFound
	// AlreadyExists: an object with that name exists.
	AlreadyExists
	// FailedPrecondition: the request is fine but the system is not in a
	// state that allows it (a volume in use, a pool not running).
	FailedPrecondition
	// Unavailable: a dependency (libvirtd, a registry) cannot be reached
	// now; retrying later may work.
	Unavailable
	// DeadlineExceeded: the work did not finish in time.
	DeadlineExceeded
	// Canceled: the caller or the agent's shutdown cancelled the work.
	Canceled
	// PermissionDenied: the caller's role may not touch this.
	PermissionDenied
	// ResourceExhausted: out of space, slots or quota.
	ResourceExhausted
	// Aborted: a concurrent change got in the way; retry the whole request.
	Aborted
	// Unauthenticated: a credential the request carries itself (a join
	// token) is missing, wrong or expired.
	Unauthenticated
)

var codeOf = map[Kind]codes.Code{
	Internal:           codes.Internal,
	Invalid:            codes.InvalidArgument,
	NotFound:           codes.NotFound,
	AlreadyExists:      codes.AlreadyExists,
	FailedPrecondition: codes.FailedPrecondition,
	Unavailable:        codes.Unavailable,
	DeadlineExceeded:   codes.DeadlineExceeded,
	Canceled:           codes.Canceled,
	PermissionDenied:   codes.PermissionDenied,
	ResourceExhausted:  codes.ResourceExhausted,
	Aborted:            codes.Aborted,
	Unauthenticated:    codes.Unauthenticated,
}

// String names the kind as its gRPC code does.
func (k Kind) String() string { return k.Code().String() }

// Code is the gRPC code for the kind.
func (k Kind) Code() codes.Code {
	if c, ok := codeOf[k]; ok {
		return c
	}
	return codes.Internal
}

// Error is an error with a kind. Its message is the whole message (the
// cause's text included when it was formatted with %w); Unwrap reaches the
// cause.
type Error struct {
	Kind Kind
	msg  string
	err  error
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.err }

// GRPCStatus maps the kind to its gRPC code, keeping the message.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Kind.Code(), e.msg) }

// Errorf makes an error of kind k; a %w verb wraps the cause.
func Errorf(k Kind, format string, args ...any) error {
	wrapped := fmt.Errorf(format, args...)
	return &Error{Kind: k, msg: wrapped.Error(), err: errors.Unwrap(wrapped)}
}

// Invalidf is an Invalid error in the API's "field: message" form.
func Invalidf(field, format string, args ...any) error {
	wrapped := fmt.Errorf(format, args...)
	return &Error{Kind: Invalid, msg: field + ": " + wrapped.Error(), err: errors.Unwrap(wrapped)}
}

// Wrap keeps err's kind (Internal when it has none) and puts what was
// being done in front of its message.
func Wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: KindOf(err), msg: fmt.Sprintf(format, args...) + ": " + err.Error(), err: err}
}

// KindOf returns the kind of err: the first *Error in its chain, then
// context cancellation and deadlines, then a gRPC status (an error that
// came from another agent), else Internal.
func KindOf(err error) Kind {
	var fe *Error
	switch {
	case err == nil:
		return Internal
	case errors.As(err, &fe):
		return fe.Kind
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	}
	if st, ok := status.FromError(err); ok {
		for k, c := range codeOf {
			if c == st.Code() {
				return k
			}
		}
	}
	return Internal
}

// Is reports whether err is of kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }
