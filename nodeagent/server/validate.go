package server

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/debvisor/debvisor/nodeagent/operation"
)

// invalid returns InvalidArgument with the field path first, the API's
// convention: "operation_id: must not be empty".
func invalid(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, args...))
}

func requireOperationID(field, id string) error {
	switch {
	case id == "":
		return invalid(field, "must not be empty")
	case !strings.HasPrefix(id, "op-") || len(id) > 64:
		return invalid(field, "%q is not an operation id (they look like op-0123456789abcdef)", id)
	}
	return nil
}

// opError maps operation-manager errors to gRPC statuses.
func opError(err error) error {
	if errors.Is(err, operation.ErrNotFound) {
		return status.Error(codes.NotFound, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
