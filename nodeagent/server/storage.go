package server

import (
	"context"
	"errors"
	"io"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/nodeagent/operation"
	"github.com/debvisor/debvisor/nodeagent/storage"
)

// maxUploadChunk bounds one UploadVolume message.
const maxUploadChunk = 4 << 20

type storageService struct {
	v1.UnimplementedStorageServiceServer
	storage *storage.Manager // nil without libvirt
	ops     *operation.Manager
}

// NewStorageService serves StorageService with m; a nil m (no libvirt
// configured) answers every call with FailedPrecondition.
func NewStorageService(m *storage.Manager, ops *operation.Manager) Service {
	return &storageService{storage: m, ops: ops}
}

func (st *storageService) RegisterGRPC(g grpc.ServiceRegistrar) {
	v1.RegisterStorageServiceServer(g, st)
}

func (st *storageService) RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	return v1.RegisterStorageServiceHandler(ctx, mux, conn)
}

// mgr returns the storage manager, or FailedPrecondition when the agent
// runs without libvirt.
func (st *storageService) mgr() (*storage.Manager, error) {
	if st.storage == nil {
		return nil, errNoLibvirt
	}
	return st.storage, nil
}

var errNoLibvirt = status.Error(codes.FailedPrecondition, "libvirt not available: the agent has no libvirt connection configured (libvirt.socket in the agent config)")

func (st *storageService) CreatePool(ctx context.Context, req *v1.CreatePoolRequest) (*v1.Operation, error) {
	m, err := st.mgr()
	if err != nil {
		return nil, err
	}
	p := req.GetPool()
	retry, err := retryable("pool.create", req.GetRequestId(), &v1.CreatePoolRequest{Pool: p, Build: req.GetBuild(), FormatSource: req.GetFormatSource()})
	if err != nil {
		return nil, err
	}
	if op, ok, err := st.remembered(retry); err != nil || ok {
		return op, err
	}
	if err := m.CheckPoolSpec(p); err != nil {
		return nil, err
	}
	return st.startOnce(retry, operation.Spec{
		Kind: "pool.create", Target: "pool/" + p.GetName(), Phases: []string{"define", "start"},
		Locks: []string{storage.PoolLock(p.GetName())}, RequestedBy: requestedBy(ctx),
	}, func(ctx context.Context, pr *operation.Progress) error {
		out, err := m.CreatePool(ctx, p, req.GetBuild(), req.GetFormatSource())
		if err != nil {
			return err
		}
		pr.Result("uuid", out.GetUuid())
		return nil
	})
}

// retryable returns the operation-manager key of a create the client may
// send again (nil without a request id), after checking the id.
func retryable(scope, id string, req proto.Message) (*operation.Request, error) {
	if err := rules.CheckRequestID(id); err != nil {
		return nil, invalid("request_id", "%v", err)
	}
	if id == "" {
		return nil, nil
	}
	return &operation.Request{Scope: scope, ID: id, Hash: requestHash(req)}, nil
}

// remembered returns the operation an earlier send of the same request
// started, while the agent remembers it: checked before anything the first
// attempt's own work would now make fail (a pool's directory no longer
// empty, a volume that now exists).
func (st *storageService) remembered(r *operation.Request) (*v1.Operation, bool, error) {
	if r == nil {
		return nil, false, nil
	}
	return st.ops.Lookup(*r)
}

func (st *storageService) startOnce(r *operation.Request, spec operation.Spec, fn operation.Func) (*v1.Operation, error) {
	if r == nil {
		return st.ops.Start(spec, fn), nil
	}
	op, _, err := st.ops.StartOnce(spec, *r, fn)
	return op, err
}

func (st *storageService) GetPool(ctx context.Context, req *v1.GetPoolRequest) (*v1.Pool, error) {
	m, err := st.mgr()
	if err != nil {
		return nil, err
	}
	if err := storage.CheckName("name", req.GetName()); err != nil {
		return nil, err
	}
	return m.GetPool(ctx, req.GetName())
}

func (st *storageService) ListPools(ctx context.Context, _ *v1.ListPoolsRequest) (*v1.ListPoolsResponse, error) {
	m, err := st.mgr()
	if err != nil {
		return nil, err
	}
	pools, err := m.ListPools(ctx)
	if err != nil {
		return nil, err
	}
	return &v1.ListPoolsResponse{Pools: pools}, nil
}

func (st *storageService) DeletePool(ctx context.Context, req *v1.DeletePoolRequest) (*v1.Operation, error) {
	m, err := st.mgr()
	if err != nil {
		return nil, err
	}
	if err := storage.CheckName("name", req.GetName()); err != nil {
		return nil, err
	}
	if err := m.CheckDelete(ctx, req.GetName(), req.GetDeleteVolumes(), req.GetDeleteStorage()); err != nil {
		return nil, err
	}
	return st.ops.Start(operation.Spec{
		Kind: "pool.delete", Target: "pool/" + req.GetName(), Phases: []string{"delete"},
		Locks: []string{storage.PoolLock(req.GetName())}, RequestedBy: requestedBy(ctx),
	}, func(ctx context.Context, _ *operation.Progress) error {
		return m.DeletePool(ctx, req.GetName(), req.GetDeleteVolumes(), req.GetDeleteStorage())
	}), nil
}

func (st *storageService) CreateVolume(ctx context.Context, req *v1.CreateVolumeRequest) (*v1.Operation, error) {
	m, err := st.mgr()
	if err != nil {
		return nil, err
	}
	v := req.GetVolume()
	if err := storage.CheckVolume(v, req.GetOciReference() != ""); err != nil {
		return nil, err
	}
	retry, err := retryable("volume.create", req.GetRequestId(), &v1.CreateVolumeRequest{Volume: v, OciReference: req.GetOciReference(), OciInsecure: req.GetOciInsecure()})
	if err != nil {
		return nil, err
	}
	if op, ok, err := st.remembered(retry); err != nil || ok {
		return op, err
	}
	if err := st.checkPool(ctx, m, "volume.pool", v.GetPool()); err != nil {
		return nil, err
	}
	return st.startOnce(retry, operation.Spec{
		Kind: "volume.create", Target: "volume/" + v.GetPool() + "/" + v.GetName(), Phases: []string{"create", "fill"},
		Locks: []string{storage.VolumeLock(v.GetPool(), v.GetName())}, RequestedBy: requestedBy(ctx),
	}, func(ctx context.Context, pr *operation.Progress) error {
		var out *v1.Volume
		var err error
		if ref := req.GetOciReference(); ref != "" {
			pr.Phase("fill")
			out, err = m.CreateFromOCI(ctx, v, ref, req.GetOciInsecure(), pr.Set)
		} else {
			out, err = m.CreateVolume(ctx, v)
		}
		if err != nil {
			return err
		}
		pr.Result("path", out.GetPath())
		return nil
	})
}

// checkPool refuses an unknown or stopped pool at once, so the caller gets
// a clear error without polling the operation.
func (st *storageService) checkPool(ctx context.Context, m *storage.Manager, field, name string) error {
	p, err := m.GetPool(ctx, name)
	if status.Code(err) == codes.NotFound {
		return invalid(field, "pool %q does not exist", name)
	}
	if err != nil {
		return err
	}
	if p.GetState() != v1.Pool_STATE_RUNNING {
		return status.Errorf(codes.FailedPrecondition, "%s: pool %q is %s, not running", field, name, p.GetState())
	}
	return nil
}

func (st *storageService) GetVolume(ctx context.Context, req *v1.GetVolumeRequest) (*v1.Volume, error) {
	m, err := st.mgr()
	if err != nil {
		return nil, err
	}
	if err := checkVolumeRef(req.GetPool(), req.GetName()); err != nil {
		return nil, err
	}
	return m.GetVolume(ctx, req.GetPool(), req.GetName())
}

func checkVolumeRef(pool, name string) error {
	if err := storage.CheckName("pool", pool); err != nil {
		return err
	}
	return storage.CheckName("name", name)
}

func (st *storageService) ListVolumes(ctx context.Context, req *v1.ListVolumesRequest) (*v1.ListVolumesResponse, error) {
	m, err := st.mgr()
	if err != nil {
		return nil, err
	}
	if err := storage.CheckName("pool", req.GetPool()); err != nil {
		return nil, err
	}
	vols, err := m.ListVolumes(ctx, req.GetPool())
	if err != nil {
		return nil, err
	}
	return &v1.ListVolumesResponse{Volumes: vols}, nil
}

func (st *storageService) ResizeVolume(ctx context.Context, req *v1.ResizeVolumeRequest) (*v1.Operation, error) {
	m, err := st.mgr()
	if err != nil {
		return nil, err
	}
	if err := checkVolumeRef(req.GetPool(), req.GetName()); err != nil {
		return nil, err
	}
	if err := storage.CheckSize("capacity_bytes", req.GetCapacityBytes(), false); err != nil {
		return nil, err
	}
	return st.volumeOp(ctx, "volume.resize", req.GetPool(), req.GetName(), nil, func(ctx context.Context) error {
		_, err := m.ResizeVolume(ctx, req.GetPool(), req.GetName(), req.GetCapacityBytes())
		return err
	})
}

func (st *storageService) CloneVolume(ctx context.Context, req *v1.CloneVolumeRequest) (*v1.Operation, error) {
	m, err := st.mgr()
	if err != nil {
		return nil, err
	}
	if err := checkVolumeRef(req.GetPool(), req.GetName()); err != nil {
		return nil, err
	}
	if err := storage.CheckName("new_name", req.GetNewName()); err != nil {
		return nil, err
	}
	newPool := req.GetNewPool()
	if newPool == "" {
		newPool = req.GetPool()
	} else if err := storage.CheckName("new_pool", newPool); err != nil {
		return nil, err
	}
	if err := st.checkPool(ctx, m, "new_pool", newPool); err != nil {
		return nil, err
	}
	extra := []string{storage.VolumeLock(newPool, req.GetNewName())}
	return st.volumeOp(ctx, "volume.clone", req.GetPool(), req.GetName(), extra, func(ctx context.Context) error {
		_, err := m.CloneVolume(ctx, req.GetPool(), req.GetName(), newPool, req.GetNewName(), req.GetFormat())
		return err
	})
}

func (st *storageService) DeleteVolume(ctx context.Context, req *v1.DeleteVolumeRequest) (*v1.Operation, error) {
	m, err := st.mgr()
	if err != nil {
		return nil, err
	}
	if err := checkVolumeRef(req.GetPool(), req.GetName()); err != nil {
		return nil, err
	}
	return st.volumeOp(ctx, "volume.delete", req.GetPool(), req.GetName(), nil, func(ctx context.Context) error {
		return m.DeleteVolume(ctx, req.GetPool(), req.GetName())
	})
}

func (st *storageService) volumeOp(ctx context.Context, kind, pool, name string, extraLocks []string, fn func(context.Context) error) (*v1.Operation, error) {
	return st.ops.Start(operation.Spec{
		Kind: kind, Target: "volume/" + pool + "/" + name, Phases: []string{kind[len("volume."):]},
		Locks: append([]string{storage.VolumeLock(pool, name)}, extraLocks...), RequestedBy: requestedBy(ctx),
	}, func(ctx context.Context, _ *operation.Progress) error { return fn(ctx) }), nil
}

// UploadVolume runs the upload as an operation that reads the client's
// stream, and answers once it has finished.
func (st *storageService) UploadVolume(stream v1.StorageService_UploadVolumeServer) error {
	ctx := stream.Context()
	m, err := st.mgr()
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "header: no header received: %v", err)
	}
	h := first.GetHeader()
	if h == nil {
		return invalid("header", "the first message must be the header")
	}
	spec := &v1.Volume{Pool: h.GetPool(), Name: h.GetName(), Format: h.GetFormat(), CapacityBytes: h.GetCapacityBytes()}
	if err := storage.CheckVolume(spec, true); err != nil {
		return err
	}
	if err := storage.CheckSize("header.size_bytes", h.GetSizeBytes(), false); err != nil {
		return err
	}
	if err := st.checkPool(ctx, m, "header.pool", h.GetPool()); err != nil {
		return err
	}
	op := st.ops.Start(operation.Spec{
		Kind: "volume.upload", Target: "volume/" + h.GetPool() + "/" + h.GetName(), Phases: []string{"upload"},
		Locks: []string{storage.VolumeLock(h.GetPool(), h.GetName())}, RequestedBy: requestedBy(ctx),
	}, func(octx context.Context, pr *operation.Progress) error {
		r := &uploadReader{stream: stream, progress: pr, total: h.GetSizeBytes()}
		_, err := m.Upload(octx, spec, h.GetSizeBytes(), r)
		return err
	})
	done, err := st.ops.Wait(ctx, op.GetId())
	if err != nil {
		return opError(err)
	}
	return stream.SendAndClose(done)
}

// uploadReader turns UploadVolume's chunk messages into a byte stream.
type uploadReader struct {
	stream   v1.StorageService_UploadVolumeServer
	progress *operation.Progress
	buf      []byte
	done     int64
	total    int64
}

func (u *uploadReader) Read(p []byte) (int, error) {
	for len(u.buf) == 0 {
		msg, err := u.stream.Recv()
		if errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		if err != nil {
			return 0, err
		}
		c := msg.GetChunk()
		if msg.GetHeader() != nil {
			return 0, invalid("header", "sent twice")
		}
		if len(c) > maxUploadChunk {
			return 0, invalid("chunk", "%d bytes is more than the %d allowed per message", len(c), maxUploadChunk)
		}
		u.buf = c
	}
	n := copy(p, u.buf)
	u.buf = u.buf[n:]
	u.done += int64(n)
	u.progress.Set(u.done, u.total)
	return n, nil
}
