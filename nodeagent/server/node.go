package server

import (
	"context"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/buildinfo"
	"github.com/debvisor/debvisor/nodeagent/health"
	"github.com/debvisor/debvisor/nodeagent/operation"
)

type nodeService struct {
	v1.UnimplementedNodeServiceServer
	s *Server
}

func (n *nodeService) RegisterGRPC(g grpc.ServiceRegistrar) { v1.RegisterNodeServiceServer(g, n) }

func (n *nodeService) RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	return v1.RegisterNodeServiceHandler(ctx, mux, conn)
}

func (n *nodeService) GetNode(context.Context, *v1.GetNodeRequest) (*v1.Node, error) {
	in := n.s.sys.Read()
	now := n.s.now()
	name := n.s.cfg.NodeName
	if name == "" {
		name = in.Hostname
	}
	node := &v1.Node{
		Name:         name,
		Hostname:     in.Hostname,
		MachineId:    in.MachineID,
		AgentVersion: buildinfo.String(),
		OsVersion:    in.OSVersion,
		BootedSlot:   in.BootedSlot,
		Kernel:       in.Kernel,
		Architecture: in.Arch,
		AgentUptime:  durationpb.New(now.Sub(n.s.start)),
		Health:       n.s.hlth.Summary(),
	}
	if !in.BootTime.IsZero() {
		node.BootTime = timestamppb.New(in.BootTime)
		node.Uptime = durationpb.New(now.Sub(in.BootTime))
	}
	return node, nil
}

func (n *nodeService) CheckHealth(ctx context.Context, req *v1.CheckHealthRequest) (*v1.Operation, error) {
	checks, err := n.s.hlth.Select(req.GetChecks())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	phases := make([]string, len(checks))
	for i, c := range checks {
		phases[i] = c.Name
	}
	op := n.s.ops.Start(operation.Spec{
		Kind: "node.check-health", Phases: phases, Locks: []string{"node/health"}, RequestedBy: requestedBy(ctx),
	}, func(ctx context.Context, p *operation.Progress) error {
		var results []*v1.HealthCheck
		failed := 0
		for i, c := range checks {
			p.Phase(c.Name)
			p.Set(int64(i), int64(len(checks)))
			r := n.s.hlth.RunOne(ctx, c)
			results = append(results, r)
			p.Result(c.Name, map[bool]string{true: "ok", false: "failed: " + r.Message}[r.Ok])
			if !r.Ok {
				failed++
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		p.Set(int64(len(checks)), int64(len(checks)))
		sum := n.s.hlth.Record(results)
		p.Result("status", sum.Status.String())
		p.Message("%d of %d checks passed", len(checks)-failed, len(checks))
		return nil
	})
	return op, nil
}

// DefaultChecks registers the checks every agent has: its state dir is
// writable and has room, its certificate has at least a week left, and its
// mTLS API answers a TLS handshake with a certificate chaining to the
// cluster CA.
func DefaultChecks(s *Server) error {
	for _, c := range []health.Check{
		{Name: "state-dir-writable", Critical: true, Run: health.DirWritable(s.cfg.StateDir)},
		{Name: "state-dir-free-space", Run: health.FreeSpace(s.cfg.StateDir, 0.05)},
		{Name: "node-certificate", Run: health.CertValidFor(s.pki.Leaf, s.now, CertMinValidity)},
		{Name: "api-serving", Critical: true, Run: func(ctx context.Context) error {
			return health.TLSServing(s.Addrs().GRPC, s.pki.Roots)(ctx)
		}},
	} {
		if err := s.hlth.Add(c); err != nil {
			return err
		}
	}
	return nil
}

// CertMinValidity is how long the node certificate must still be valid for
// the node to count as healthy.
const CertMinValidity = 7 * 24 * time.Hour
