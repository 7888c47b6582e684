package server

import (
	"context"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/pki"
	"github.com/debvisor/debvisor/nodeagent/network"
)

type networkService struct {
	v1.UnimplementedNetworkServiceServer
	m *network.Manager // nil when the agent does not manage the host's network
}

// NewNetworkService serves NetworkService with m; a nil m (the agent does
// not own this host's networking) answers every call with
// FailedPrecondition.
func NewNetworkService(m *network.Manager) Service { return &networkService{m: m} }

func (n *networkService) RegisterGRPC(g grpc.ServiceRegistrar) { v1.RegisterNetworkServiceServer(g, n) }

func (n *networkService) RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	return v1.RegisterNetworkServiceHandler(ctx, mux, conn)
}

var errNoNetwork = status.Error(codes.FailedPrecondition, "host networking is not managed by this agent (it runs off a DebVisor node, or network.enabled is false in the agent config)")

func (n *networkService) mgr() (*network.Manager, error) {
	if n.m == nil {
		return nil, errNoNetwork
	}
	return n.m, nil
}

func (n *networkService) GetNetwork(ctx context.Context, _ *v1.GetNetworkRequest) (*v1.NetworkState, error) {
	m, err := n.mgr()
	if err != nil {
		return nil, err
	}
	return m.Get(ctx)
}

func (n *networkService) ApplyNetwork(ctx context.Context, req *v1.ApplyNetworkRequest) (*v1.ApplyNetworkResponse, error) {
	m, err := n.mgr()
	if err != nil {
		return nil, err
	}
	r := network.Request{Config: req.GetConfig(), DryRun: req.GetDryRun(), NoConfirm: req.GetNoConfirm(), RequestedBy: requestedBy(ctx)}
	if d := req.GetConfirmTimeout(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, invalid("confirm_timeout", "%v", err)
		}
		if r.Timeout = d.AsDuration(); r.Timeout <= 0 {
			return nil, invalid("confirm_timeout", "must be positive (unset uses the node's default)")
		}
	}
	if r.NoConfirm && req.GetConfirmTimeout() != nil {
		return nil, invalid("no_confirm", "contradicts confirm_timeout: choose one")
	}
	ch, err := m.Apply(ctx, r)
	if err != nil {
		return nil, err
	}
	return &v1.ApplyNetworkResponse{Change: ch}, nil
}

func requireChangeID(id string) error {
	switch {
	case id == "":
		return invalid("id", "must not be empty (dvctl network show lists the pending change)")
	case !strings.HasPrefix(id, "net-") || len(id) > 64:
		return invalid("id", "%q is not a network change id (they look like net-0123456789abcdef)", id)
	}
	return nil
}

func (n *networkService) ConfirmNetwork(ctx context.Context, req *v1.ConfirmNetworkRequest) (*v1.NetworkChange, error) {
	m, err := n.mgr()
	if err != nil {
		return nil, err
	}
	if err := requireChangeID(req.GetId()); err != nil {
		return nil, err
	}
	return m.Confirm(ctx, req.GetId(), requestedBy(ctx))
}

func (n *networkService) RevertNetwork(ctx context.Context, req *v1.RevertNetworkRequest) (*v1.NetworkChange, error) {
	m, err := n.mgr()
	if err != nil {
		return nil, err
	}
	if err := requireChangeID(req.GetId()); err != nil {
		return nil, err
	}
	return m.Revert(ctx, req.GetId(), requestedBy(ctx))
}

// NewLocalNetworkServer is NetworkService without a listener: the same
// handlers, called in process by the node's console (debvisor-agent
// netcfg) when no agent serves the local socket. The console runs as root
// on the node, so it acts as an admin named who; changes record that name
// as their requester.
func NewLocalNetworkServer(m *network.Manager, who string) v1.NetworkServiceServer {
	return localNetwork{n: &networkService{m: m}, id: Identity{Name: who, Role: pki.RoleAdmin}}
}

type localNetwork struct {
	v1.UnimplementedNetworkServiceServer
	n  *networkService
	id Identity
}

func (l localNetwork) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, identityKey{}, l.id)
}

func (l localNetwork) GetNetwork(ctx context.Context, r *v1.GetNetworkRequest) (*v1.NetworkState, error) {
	return l.n.GetNetwork(l.ctx(ctx), r)
}

func (l localNetwork) ApplyNetwork(ctx context.Context, r *v1.ApplyNetworkRequest) (*v1.ApplyNetworkResponse, error) {
	return l.n.ApplyNetwork(l.ctx(ctx), r)
}

func (l localNetwork) ConfirmNetwork(ctx context.Context, r *v1.ConfirmNetworkRequest) (*v1.NetworkChange, error) {
	return l.n.ConfirmNetwork(l.ctx(ctx), r)
}

func (l localNetwork) RevertNetwork(ctx context.Context, r *v1.RevertNetworkRequest) (*v1.NetworkChange, error) {
	return l.n.RevertNetwork(l.ctx(ctx), r)
}
