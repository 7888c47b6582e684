package server

import (
	"context"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/operation"
	"github.com/debvisor/debvisor/nodeagent/upgrade"
)

type upgradeService struct {
	v1.UnimplementedUpgradeServiceServer
	m   *upgrade.Manager // nil when the agent does not run on a DebVisor node
	ops *operation.Manager
}

// NewUpgradeService serves UpgradeService with m; a nil m (not a DebVisor
// node: no slots, no ESP) answers every call with FailedPrecondition.
func NewUpgradeService(m *upgrade.Manager, ops *operation.Manager) Service {
	return &upgradeService{m: m, ops: ops}
}

func (u *upgradeService) RegisterGRPC(g grpc.ServiceRegistrar) { v1.RegisterUpgradeServiceServer(g, u) }

func (u *upgradeService) RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	return v1.RegisterUpgradeServiceHandler(ctx, mux, conn)
}

var errNoSlots = status.Error(codes.FailedPrecondition, "no A/B slots: this agent does not run on a DebVisor node (upgrade.enabled in the agent config)")

func (u *upgradeService) mgr() (*upgrade.Manager, error) {
	if u.m == nil {
		return nil, errNoSlots
	}
	return u.m, nil
}

// opProgress adapts an operation's progress to the upgrade's.
type opProgress struct{ p *operation.Progress }

func (o opProgress) Phase(name, message string) {
	o.p.Phase(name)
	o.p.Message("%s", message)
}
func (o opProgress) Bytes(done, total int64) { o.p.Set(done, total) }
func (o opProgress) Result(k, v string)      { o.p.Result(k, v) }

func (u *upgradeService) Upgrade(ctx context.Context, req *v1.UpgradeRequest) (*v1.Operation, error) {
	m, err := u.mgr()
	if err != nil {
		return nil, err
	}
	r := upgrade.Request{Ref: req.GetRef(), Force: req.GetForce(), Reboot: req.GetMode() != v1.UpgradeRequest_MODE_STAGE}
	switch req.GetMode() {
	case v1.UpgradeRequest_MODE_UNSPECIFIED, v1.UpgradeRequest_MODE_REBOOT, v1.UpgradeRequest_MODE_STAGE:
	default:
		return nil, invalid("mode", "%d is not reboot or stage", req.GetMode())
	}
	if err := m.CheckRequest(r); err != nil {
		return nil, err
	}
	return u.ops.Start(operation.Spec{
		Kind: "node.upgrade", Target: "slots", Phases: upgrade.Phases,
		Locks: []string{upgrade.Lock}, RequestedBy: requestedBy(ctx),
	}, func(ctx context.Context, p *operation.Progress) error {
		return m.Upgrade(ctx, r, opProgress{p})
	}), nil
}

func (u *upgradeService) GetSlots(ctx context.Context, _ *v1.GetSlotsRequest) (*v1.SlotStatus, error) {
	m, err := u.mgr()
	if err != nil {
		return nil, err
	}
	return m.Status(ctx)
}

func (u *upgradeService) Rollback(ctx context.Context, req *v1.RollbackRequest) (*v1.SlotStatus, error) {
	m, err := u.mgr()
	if err != nil {
		return nil, err
	}
	if err := m.Rollback(ctx, req.GetOnce()); err != nil {
		return nil, err
	}
	if req.GetReboot() {
		m.RebootSoon()
	}
	return m.Status(ctx)
}

func (u *upgradeService) Commit(ctx context.Context, _ *v1.CommitRequest) (*v1.Operation, error) {
	m, err := u.mgr()
	if err != nil {
		return nil, err
	}
	return u.ops.Start(operation.Spec{
		Kind: "node.commit", Target: "slots", Phases: []string{"health", "commit"},
		Locks: []string{upgrade.Lock}, RequestedBy: requestedBy(ctx),
	}, func(ctx context.Context, p *operation.Progress) error {
		p.Phase("health")
		return m.Commit(ctx)
	}), nil
}
