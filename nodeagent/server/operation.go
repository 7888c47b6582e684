package server

import (
	"context"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/operation"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
	defaultWait     = 30 * time.Second
	maxWait         = 10 * time.Minute
)

type operationService struct {
	v1.UnimplementedOperationServiceServer
	s *Server
}

func (o *operationService) RegisterGRPC(g grpc.ServiceRegistrar) {
	v1.RegisterOperationServiceServer(g, o)
}

func (o *operationService) RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	return v1.RegisterOperationServiceHandler(ctx, mux, conn)
}

func (o *operationService) ListOperations(_ context.Context, req *v1.ListOperationsRequest) (*v1.ListOperationsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, invalid("page_size", "must not be negative (got %d)", size)
	case size > maxPageSize:
		return nil, invalid("page_size", "must be at most %d (got %d)", maxPageSize, size)
	case size == 0:
		size = defaultPageSize
	}
	offset := 0
	if t := req.GetPageToken(); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return nil, invalid("page_token", "%q is not a token returned by ListOperations", t)
		}
		offset = n
	}
	for i, st := range req.GetStates() {
		if _, ok := v1.Operation_State_name[int32(st)]; !ok || st == v1.Operation_STATE_UNSPECIFIED {
			return nil, invalid("states["+strconv.Itoa(i)+"]", "%d is not an operation state", st)
		}
	}
	all := o.s.ops.List(operation.Filter{States: req.GetStates(), Kind: req.GetKind()})
	resp := &v1.ListOperationsResponse{}
	if offset < len(all) {
		end := min(offset+size, len(all))
		resp.Operations = all[offset:end]
		if end < len(all) {
			resp.NextPageToken = strconv.Itoa(end)
		}
	}
	return resp, nil
}

func (o *operationService) GetOperation(_ context.Context, req *v1.GetOperationRequest) (*v1.Operation, error) {
	if err := requireOperationID("operation_id", req.GetOperationId()); err != nil {
		return nil, err
	}
	op, err := o.s.ops.Get(req.GetOperationId())
	if err != nil {
		return nil, opError(err)
	}
	return op, nil
}

func (o *operationService) WaitOperation(ctx context.Context, req *v1.WaitOperationRequest) (*v1.Operation, error) {
	if err := requireOperationID("operation_id", req.GetOperationId()); err != nil {
		return nil, err
	}
	wait := defaultWait
	if t := req.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, invalid("timeout", "%v", err)
		}
		d := t.AsDuration()
		switch {
		case d < 0:
			return nil, invalid("timeout", "must not be negative (got %s)", d)
		case d > maxWait:
			return nil, invalid("timeout", "must be at most %s (got %s)", maxWait, d)
		case d > 0:
			wait = d
		}
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	op, err := o.s.ops.Wait(ctx, req.GetOperationId())
	if err != nil {
		return nil, opError(err)
	}
	return op, nil
}

func (o *operationService) CancelOperation(_ context.Context, req *v1.CancelOperationRequest) (*v1.Operation, error) {
	if err := requireOperationID("operation_id", req.GetOperationId()); err != nil {
		return nil, err
	}
	op, err := o.s.ops.Cancel(req.GetOperationId())
	if err != nil {
		return nil, opError(err)
	}
	return op, nil
}
