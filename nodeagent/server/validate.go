package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

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

// requestHash stands for what a retryable request asked for: a retry with
// the same request id must carry the same hash. Deterministic marshalling
// makes it stable within one agent build (the hash is stored in VM
// metadata and compared after restarts too, so a retry across an upgrade
// that changed the wire form would be refused as a different request,
// never silently merged).
func requestHash(m proto.Message) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		// Messages built here always marshal; an impossible error gets a
		// hash no retry can match.
		return "unmarshalable:" + err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
