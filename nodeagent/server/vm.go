package server

import (
	"context"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/nodeagent/fault"
	"github.com/debvisor/debvisor/nodeagent/operation"
	"github.com/debvisor/debvisor/nodeagent/storage"
	"github.com/debvisor/debvisor/nodeagent/vm"
)

const (
	defaultStopTimeout = 60 * time.Second
	maxStopTimeout     = 10 * time.Minute
)

type vmService struct {
	v1.UnimplementedVMServiceServer
	vms *vm.Manager // nil without libvirt
	ops *operation.Manager
}

// NewVMService serves VMService with m; a nil m (no libvirt configured)
// answers every call with FailedPrecondition.
func NewVMService(m *vm.Manager, ops *operation.Manager) Service {
	return &vmService{vms: m, ops: ops}
}

func (v *vmService) RegisterGRPC(g grpc.ServiceRegistrar) { v1.RegisterVMServiceServer(g, v) }

func (v *vmService) RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	return v1.RegisterVMServiceHandler(ctx, mux, conn)
}

func (v *vmService) mgr() (*vm.Manager, error) {
	if v.vms == nil {
		return nil, errNoLibvirt
	}
	return v.vms, nil
}

// start runs fn as an operation on VM name holding the VM's lock and the
// locks of the volumes in specs.
func (v *vmService) start(ctx context.Context, kind, name string, phases []string, specs []*v1.VMSpec, fn operation.Func) *v1.Operation {
	return v.ops.Start(v.spec(ctx, kind, name, phases, specs), fn)
}

func (v *vmService) spec(ctx context.Context, kind, name string, phases []string, specs []*v1.VMSpec) operation.Spec {
	return operation.Spec{
		Kind: kind, Target: "vm/" + name, Phases: phases,
		Locks: vm.Locks(name, specs...), RequestedBy: requestedBy(ctx),
	}
}

func (v *vmService) CreateVM(ctx context.Context, req *v1.CreateVMRequest) (*v1.Operation, error) {
	m, err := v.mgr()
	if err != nil {
		return nil, err
	}
	in := req.GetVm()
	if in == nil {
		return nil, invalid("vm", "must be set")
	}
	name := in.GetName()
	if err := storage.CheckName("vm.name", name); err != nil {
		return nil, err
	}
	if err := rules.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, invalid("request_id", "%v", err)
	}
	spec := proto.Clone(in.GetSpec()).(*v1.VMSpec)
	if in.GetSpec() == nil {
		spec = nil
	}
	if err := vm.Normalize("vm.spec", spec); err != nil {
		return nil, err
	}
	// The request as the client sent it (before defaults such as MACs are
	// filled in) is what a retry repeats.
	creq := vm.Request{ID: req.GetRequestId(), Hash: requestHash(&v1.VM{Name: name, Spec: in.GetSpec()})}
	opReq := operation.Request{Scope: "vm.create", ID: creq.ID, Hash: creq.Hash}
	if creq.ID != "" {
		// A retry of a create this agent still remembers: its operation.
		if op, ok, err := v.ops.Lookup(opReq); err != nil || ok {
			return op, err
		}
	}
	// Fail fast on a name that is taken (unless this request took it); the
	// operation checks again under the VM's lock. A read: it does not wait
	// behind other VMs' mutations.
	if err := m.CheckCreate(ctx, name, creq); fault.Is(err, fault.AlreadyExists) {
		return nil, fault.Wrap(err, "vm.name")
	} else if err != nil {
		return nil, err
	}
	run := func(ctx context.Context, p *operation.Progress) error {
		id, err := m.Create(ctx, name, spec, creq)
		if err != nil {
			return err
		}
		p.Result("uuid", id)
		return nil
	}
	if creq.ID == "" {
		return v.start(ctx, "vm.create", name, []string{"define", "start"}, []*v1.VMSpec{spec}, run), nil
	}
	op, _, err := v.ops.StartOnce(v.spec(ctx, "vm.create", name, []string{"define", "start"}, []*v1.VMSpec{spec}), opReq, run)
	return op, err
}

func (v *vmService) GetVM(ctx context.Context, req *v1.GetVMRequest) (*v1.VM, error) {
	m, err := v.mgr()
	if err != nil {
		return nil, err
	}
	if err := storage.CheckName("name", req.GetName()); err != nil {
		return nil, err
	}
	return m.Get(ctx, req.GetName())
}

func (v *vmService) ListVMs(ctx context.Context, _ *v1.ListVMsRequest) (*v1.ListVMsResponse, error) {
	m, err := v.mgr()
	if err != nil {
		return nil, err
	}
	vms, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	return &v1.ListVMsResponse{Vms: vms}, nil
}

func (v *vmService) UpdateVM(ctx context.Context, req *v1.UpdateVMRequest) (*v1.Operation, error) {
	m, err := v.mgr()
	if err != nil {
		return nil, err
	}
	name := req.GetName()
	if err := storage.CheckName("name", name); err != nil {
		return nil, err
	}
	if req.GetSpec() == nil {
		return nil, invalid("spec", "must be set (the full desired spec)")
	}
	spec := proto.Clone(req.GetSpec()).(*v1.VMSpec)
	if err := vm.Normalize("spec", spec); err != nil {
		return nil, err
	}
	cur, err := m.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	// Lock the volumes the VM has now and the ones it will have.
	return v.start(ctx, "vm.update", name, []string{"update"}, []*v1.VMSpec{spec, cur.GetSpec()},
		func(ctx context.Context, p *operation.Progress) error {
			res, err := m.Update(ctx, name, spec)
			if err != nil {
				return err
			}
			p.Result("live", strings.Join(res.Live, ", "))
			p.Result("pending", strings.Join(res.Pending, ", "))
			if len(res.Pending) > 0 {
				p.Message("%d change(s) apply at the next power cycle", len(res.Pending))
			}
			return nil
		}), nil
}

func (v *vmService) StartVM(ctx context.Context, req *v1.StartVMRequest) (*v1.Operation, error) {
	return v.simple(ctx, "vm.start", req.GetName(), func(ctx context.Context, m *vm.Manager) error {
		return m.Start(ctx, req.GetName())
	})
}

func (v *vmService) StopVM(ctx context.Context, req *v1.StopVMRequest) (*v1.Operation, error) {
	timeout := defaultStopTimeout
	if t := req.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, invalid("timeout", "%v", err)
		}
		d := t.AsDuration()
		switch {
		case d < 0:
			return nil, invalid("timeout", "must not be negative (got %s)", d)
		case d > maxStopTimeout:
			return nil, invalid("timeout", "must be at most %s (got %s)", maxStopTimeout, d)
		case d > 0:
			timeout = d
		}
	}
	return v.simple(ctx, "vm.stop", req.GetName(), func(ctx context.Context, m *vm.Manager) error {
		return m.Stop(ctx, req.GetName(), timeout, req.GetForce())
	})
}

func (v *vmService) RebootVM(ctx context.Context, req *v1.RebootVMRequest) (*v1.Operation, error) {
	return v.simple(ctx, "vm.reboot", req.GetName(), func(ctx context.Context, m *vm.Manager) error {
		return m.Reboot(ctx, req.GetName(), req.GetForce())
	})
}

func (v *vmService) DeleteVM(ctx context.Context, req *v1.DeleteVMRequest) (*v1.Operation, error) {
	return v.simple(ctx, "vm.delete", req.GetName(), func(ctx context.Context, m *vm.Manager) error {
		return m.Delete(ctx, req.GetName())
	})
}

// simple validates the name, checks the VM exists (NotFound at once rather
// than in the operation) and runs fn under the VM's lock.
func (v *vmService) simple(ctx context.Context, kind, name string, fn func(context.Context, *vm.Manager) error) (*v1.Operation, error) {
	m, err := v.mgr()
	if err != nil {
		return nil, err
	}
	if err := storage.CheckName("name", name); err != nil {
		return nil, err
	}
	if ok, err := m.Exists(ctx, name); err != nil {
		return nil, err
	} else if !ok {
		return nil, status.Errorf(codes.NotFound, "VM %q not found", name)
	}
	return v.start(ctx, kind, name, []string{strings.TrimPrefix(kind, "vm.")}, nil,
		func(ctx context.Context, _ *operation.Progress) error { return fn(ctx, m) }), nil
}

func (v *vmService) StreamConsole(req *v1.StreamConsoleRequest, stream v1.VMService_StreamConsoleServer) error {
	m, err := v.mgr()
	if err != nil {
		return err
	}
	if err := storage.CheckName("name", req.GetName()); err != nil {
		return err
	}
	return m.Console(stream.Context(), req.GetName(), consoleWriter{stream})
}

// consoleWriter sends each console chunk as one message.
type consoleWriter struct {
	stream v1.VMService_StreamConsoleServer
}

func (c consoleWriter) Write(b []byte) (int, error) {
	if err := c.stream.Send(&v1.ConsoleOutput{Data: append([]byte(nil), b...)}); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (v *vmService) GetVMAddresses(ctx context.Context, req *v1.GetVMAddressesRequest) (*v1.GetVMAddressesResponse, error) {
	m, err := v.mgr()
	if err != nil {
		return nil, err
	}
	if err := storage.CheckName("name", req.GetName()); err != nil {
		return nil, err
	}
	var wait time.Duration
	if t := req.GetWaitTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, invalid("wait_timeout", "%v", err)
		}
		wait = t.AsDuration()
		if wait < 0 || wait > maxWait {
			return nil, invalid("wait_timeout", "must be between 0 and %s (got %s)", maxWait, wait)
		}
	}
	for i, s := range req.GetSources() {
		if s == v1.VMAddress_SOURCE_UNSPECIFIED || v1.VMAddress_Source_name[int32(s)] == "" {
			return nil, invalid("sources", "entry %d (%d) is not agent, lease or arp", i, s)
		}
	}
	addrs, err := m.Addresses(ctx, req.GetName(), wait, req.GetSources())
	if err != nil {
		return nil, err
	}
	return &v1.GetVMAddressesResponse{Addresses: addrs}, nil
}
