package server

import (
	"context"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/cluster"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

type clusterService struct {
	v1.UnimplementedClusterServiceServer
	c   *cluster.Node
	now func() time.Time
}

// NewClusterService serves membership, join tokens and Join from c; c is
// nil on a node that is not in a cluster, which then answers every call
// with FailedPrecondition saying how to enroll it.
func NewClusterService(c *cluster.Node, now func() time.Time) Service {
	if now == nil {
		now = time.Now
	}
	return &clusterService{c: c, now: now}
}

// RouterFor adapts a cluster node for call forwarding; nil when c is nil.
func RouterFor(c *cluster.Node) Router {
	if c == nil {
		return nil
	}
	return clusterRouter{c}
}

type clusterRouter struct{ c *cluster.Node }

func (r clusterRouter) Self() string { return r.c.Name() }

func (r clusterRouter) Lookup(name string) (string, error) {
	m, err := r.c.Member(name)
	if err != nil {
		return "", err
	}
	if m.APIAddr == "" {
		return "", fault.Errorf(fault.Unavailable, "member %q has not announced its API address yet", name)
	}
	return m.APIAddr, nil
}

func (s *clusterService) RegisterGRPC(g grpc.ServiceRegistrar) { v1.RegisterClusterServiceServer(g, s) }

func (s *clusterService) RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	return v1.RegisterClusterServiceHandler(ctx, mux, conn)
}

func (s *clusterService) node() (*cluster.Node, error) {
	if s.c == nil {
		return nil, fault.Errorf(fault.FailedPrecondition, "%w: bootstrap a cluster on the first node (`debvisor-agent cluster init`) or join one (`debvisor-agent cluster join ADDRESS --token … --ca-cert-hash …`), or preseed it", cluster.ErrNotEnrolled)
	}
	return s.c, nil
}

func (s *clusterService) GetCluster(context.Context, *v1.GetClusterRequest) (*v1.Cluster, error) {
	c, err := s.node()
	if err != nil {
		return nil, err
	}
	return &v1.Cluster{
		Id: c.ClusterID(), CaCertHash: c.CAHash(), Self: c.Name(), HoldsCa: c.HoldsCA(),
		MemberCount: int32(len(c.Members())), Signers: c.Signers(),
	}, nil
}

func (s *clusterService) ListMembers(context.Context, *v1.ListMembersRequest) (*v1.ListMembersResponse, error) {
	c, err := s.node()
	if err != nil {
		return nil, err
	}
	resp := &v1.ListMembersResponse{}
	for _, m := range c.Members() {
		resp.Members = append(resp.Members, &v1.Member{
			Name: m.Name, NodeId: m.NodeID, ApiAddress: m.APIAddr, GossipAddress: m.GossipAddr,
			AgentVersion: m.Version, HoldsCa: m.HoldsCA, CertFingerprint: m.CertFingerprint, Self: m.Self,
		})
	}
	return resp, nil
}

func (s *clusterService) CreateJoinToken(_ context.Context, req *v1.CreateJoinTokenRequest) (*v1.CreateJoinTokenResponse, error) {
	c, err := s.node()
	if err != nil {
		return nil, err
	}
	var ttl time.Duration
	if req.GetTtl() != nil {
		if err := req.GetTtl().CheckValid(); err != nil {
			return nil, fault.Invalidf("ttl", "%w", err)
		}
		if ttl = req.GetTtl().AsDuration(); ttl <= 0 {
			return nil, fault.Invalidf("ttl", "%s is not a positive duration", ttl)
		}
	}
	tok, info, err := c.CreateToken(ttl, req.GetDescription())
	if err != nil {
		return nil, err
	}
	return &v1.CreateJoinTokenResponse{Token: tok, Info: s.tokenProto(info), CaCertHash: c.CAHash()}, nil
}

func (s *clusterService) ListJoinTokens(context.Context, *v1.ListJoinTokensRequest) (*v1.ListJoinTokensResponse, error) {
	c, err := s.node()
	if err != nil {
		return nil, err
	}
	list, err := c.ListTokens()
	if err != nil {
		return nil, err
	}
	resp := &v1.ListJoinTokensResponse{}
	for _, t := range list {
		resp.Tokens = append(resp.Tokens, s.tokenProto(t))
	}
	return resp, nil
}

func (s *clusterService) DeleteJoinToken(_ context.Context, req *v1.DeleteJoinTokenRequest) (*v1.DeleteJoinTokenResponse, error) {
	c, err := s.node()
	if err != nil {
		return nil, err
	}
	if err := c.DeleteToken(req.GetId()); err != nil {
		return nil, err
	}
	return &v1.DeleteJoinTokenResponse{}, nil
}

func (s *clusterService) Join(ctx context.Context, req *v1.JoinRequest) (*v1.JoinResponse, error) {
	c, err := s.node()
	if err != nil {
		return nil, err
	}
	res, err := c.Join(ctx, cluster.JoinRequestFromProto(req))
	if err != nil {
		return nil, err
	}
	return res.Proto(), nil
}

func (s *clusterService) tokenProto(t cluster.Token) *v1.JoinToken {
	return &v1.JoinToken{
		Id: t.ID, Description: t.Description, CreateTime: timestamppb.New(t.Created), ExpireTime: timestamppb.New(t.Expires),
		Uses: int32(t.Uses), Expired: t.Expired(s.now()),
	}
}
