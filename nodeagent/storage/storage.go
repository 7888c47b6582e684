// Package storage owns the node's libvirt storage: pools (dir, fs, logical,
// netfs, zfs, rbd) and the volumes in them — their XML, validation, and the
// libvirt calls that create, fill, resize, clone and delete them. Every
// failure that happens half-way removes what the call made.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/fault"
	"github.com/debvisor/debvisor/nodeagent/libvirtconn"
)

// Manager performs storage operations through libvirt. It does not
// serialise them: callers run mutations in the operation queue with the
// lock keys PoolLock and VolumeLock return.
type Manager struct {
	conn   *libvirtconn.Conn
	policy Policy
	owned  *ownership
	log    *slog.Logger
}

// Config is what the storage manager is allowed to touch and where it
// keeps its records.
type Config struct {
	// Policy confines pool paths and devices.
	Policy Policy
	// StateDir holds the record of the pools (and their storage) the agent
	// created; delete_storage and delete_volumes act only on those.
	StateDir string
}

// New returns a Manager using conn.
func New(conn *libvirtconn.Conn, cfg Config, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{conn: conn, policy: cfg.Policy, owned: newOwnership(cfg.StateDir), log: log}
}

// PoolLock is the operation-queue key of a pool.
func PoolLock(pool string) string { return "pool/" + pool }

// VolumeLock is the operation-queue key of a volume.
func VolumeLock(pool, name string) string { return "volume/" + pool + "/" + name }

func notFound(format string, args ...any) error {
	return fault.Errorf(fault.NotFound, format, args...)
}

// lookupPool returns the pool, NotFound when it does not exist.
func lookupPool(lv *libvirtconn.Client, name string) (libvirt.StoragePool, error) {
	p, err := lv.StoragePoolLookupByName(name)
	if libvirtconn.NotFound(err) {
		return p, notFound("pool %q not found", name)
	}
	if err != nil {
		return p, libvirtconn.Status(err, "look up pool %q", name)
	}
	return p, nil
}

// activePool returns a running pool, refusing an inactive one and one whose
// directory lies outside the permitted pool roots (a pool defined behind
// the agent's back): the agent serves no volume outside them.
func (m *Manager) activePool(lv *libvirtconn.Client, name string) (libvirt.StoragePool, string, error) {
	p, err := lookupPool(lv, name)
	if err != nil {
		return p, "", err
	}
	state, _, _, _, err := lv.StoragePoolGetInfo(p)
	if err != nil {
		return p, "", libvirtconn.Status(err, "pool %q info", name)
	}
	if libvirt.StoragePoolState(state) != libvirt.StoragePoolRunning {
		return p, "", fault.Errorf(fault.FailedPrecondition, "pool %q is not running (state %s)", name, poolState(state))
	}
	x, err := lv.StoragePoolGetXMLDesc(p, 0)
	if err != nil {
		return p, "", libvirtconn.Status(err, "pool %q XML", name)
	}
	var px libvirtxml.StoragePool
	if err := px.Unmarshal(x); err != nil {
		return p, "", fmt.Errorf("parse pool %q XML: %w", name, err)
	}
	if err := m.confined(name, &px); err != nil {
		return p, "", err
	}
	return p, px.Type, nil
}

// confined refuses a path-backed pool whose directory is not where the
// policy lets pools be.
func (m *Manager) confined(name string, px *libvirtxml.StoragePool) error {
	if !pathBacked(px.Type) || px.Target == nil {
		return nil
	}
	if err := m.policy.CheckPath("pool.path", px.Target.Path); err != nil {
		return fault.Errorf(fault.FailedPrecondition, "pool %q is outside the permitted pool roots, so the agent serves none of its volumes: %w", name, err)
	}
	return nil
}

// pathBacked pool types keep their volumes in a directory on the node.
func pathBacked(typ string) bool { return typ == "dir" || typ == "fs" || typ == "netfs" }

// CheckPoolSpec validates a pool for CreatePool: the spec itself, then the
// confinement policy for its directory and devices, then that its directory
// is new or empty. It changes nothing.
func (m *Manager) CheckPoolSpec(p *v1.Pool) error {
	x, err := PoolXML(p)
	if err != nil {
		return err
	}
	if pathBacked(x.Type) && x.Target != nil {
		if err := m.policy.CheckPath("pool.path", x.Target.Path); err != nil {
			return err
		}
		if err := CheckEmptyDir("pool.path", x.Target.Path); err != nil {
			return err
		}
	}
	if x.Source != nil {
		for i, d := range x.Source.Device {
			if err := m.policy.CheckDevice(fmt.Sprintf("pool.source_devices[%d]", i), d.Path); err != nil {
				return err
			}
		}
	}
	return nil
}

func poolState(s uint8) v1.Pool_State {
	if int(s) >= 0 && int(s) <= 4 {
		return v1.Pool_State(s + 1)
	}
	return v1.Pool_STATE_UNSPECIFIED
}

// CreatePool defines, optionally builds, starts and autostarts a pool.
func (m *Manager) CreatePool(ctx context.Context, spec *v1.Pool, build, format bool) (_ *v1.Pool, err error) {
	if err := m.CheckPoolSpec(spec); err != nil {
		return nil, err
	}
	x, err := PoolXML(spec)
	if err != nil {
		return nil, err
	}
	// The agent owns the storage when it makes it: a directory that did
	// not exist, or a device it builds. Only then may delete_storage
	// remove it later.
	createdStorage := build
	if pathBacked(x.Type) && x.Target != nil {
		_, statErr := os.Stat(x.Target.Path)
		createdStorage = build && errors.Is(statErr, fs.ErrNotExist)
	}
	doc, err := marshal(x, "pool")
	if err != nil {
		return nil, err
	}
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := lv.StoragePoolLookupByName(spec.GetName()); err == nil {
		return nil, fault.Errorf(fault.AlreadyExists, "pool %q already exists", spec.GetName())
	}
	p, err := lv.StoragePoolDefineXML(doc, 0)
	if err != nil {
		return nil, libvirtconn.Status(err, "define pool %q", spec.GetName())
	}
	built := false
	defer func() {
		if err == nil {
			return
		}
		// Undo in reverse: stop, remove what build made, undefine (also
		// after a cancellation: the undo must still reach libvirtd).
		undo := lv.Detached()
		_ = undo.StoragePoolDestroy(p)
		if built {
			_ = undo.StoragePoolDelete(p, libvirt.StoragePoolDeleteNormal)
		}
		if uerr := undo.StoragePoolUndefine(p); uerr != nil {
			m.log.Warn("undo pool define", "pool", spec.GetName(), "err", uerr)
		}
	}()
	if build {
		flags := libvirt.StoragePoolBuildNew
		if format {
			flags = libvirt.StoragePoolBuildOverwrite
		}
		if err := lv.StoragePoolBuild(p, flags); err != nil {
			return nil, libvirtconn.Status(err, "build pool %q", spec.GetName())
		}
		built = true
	}
	if err := lv.StoragePoolCreate(p, 0); err != nil {
		return nil, libvirtconn.Status(err, "start pool %q", spec.GetName())
	}
	if err := lv.StoragePoolSetAutostart(p, 1); err != nil {
		return nil, libvirtconn.Status(err, "autostart pool %q", spec.GetName())
	}
	info, err := m.poolInfo(lv, p)
	if err != nil {
		return nil, err
	}
	if err := m.owned.add(spec.GetName(), ownedPool{UUID: info.GetUuid(), CreatedStorage: createdStorage}); err != nil {
		return nil, fault.Errorf(fault.Internal, "record pool %q as the agent's: %w", spec.GetName(), err)
	}
	return info, nil
}

// GetPool returns a pool's spec and status.
func (m *Manager) GetPool(ctx context.Context, name string) (*v1.Pool, error) {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return nil, err
	}
	p, err := lookupPool(lv, name)
	if err != nil {
		return nil, err
	}
	return m.poolInfo(lv, p)
}

// ListPools returns all pools, sorted by name.
func (m *Manager) ListPools(ctx context.Context) ([]*v1.Pool, error) {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return nil, err
	}
	pools, _, err := lv.ConnectListAllStoragePools(1, 0)
	if err != nil {
		return nil, libvirtconn.Status(err, "list pools")
	}
	var out []*v1.Pool
	for _, p := range pools {
		info, err := m.poolInfo(lv, p)
		if fault.Is(err, fault.NotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *Manager) poolInfo(lv *libvirtconn.Client, p libvirt.StoragePool) (*v1.Pool, error) {
	doc, err := lv.StoragePoolGetXMLDesc(p, 0)
	if err != nil {
		return nil, libvirtconn.Status(err, "pool %q XML", p.Name)
	}
	var x libvirtxml.StoragePool
	if err := x.Unmarshal(doc); err != nil {
		return nil, fmt.Errorf("parse pool %q XML: %w", p.Name, err)
	}
	out := &v1.Pool{Name: x.Name, Type: poolTypeOf(x.Type), Uuid: x.UUID}
	if x.Target != nil {
		out.Path = x.Target.Path
	}
	if s := x.Source; s != nil {
		for _, d := range s.Device {
			out.SourceDevices = append(out.SourceDevices, d.Path)
		}
		for _, h := range s.Host {
			hp := h.Name
			if h.Port != "" {
				hp += ":" + h.Port
			}
			out.SourceHosts = append(out.SourceHosts, hp)
		}
		if s.Dir != nil {
			out.SourcePath = s.Dir.Path
		}
		out.SourceName = s.Name
		if s.Format != nil && x.Type != "logical" {
			out.SourceFormat = s.Format.Type
		}
		if s.Auth != nil {
			out.AuthUsername = s.Auth.Username
			if s.Auth.Secret != nil {
				out.AuthSecretUuid = s.Auth.Secret.UUID
			}
		}
	}
	state, capB, alloc, avail, err := lv.StoragePoolGetInfo(p)
	if err != nil {
		return nil, libvirtconn.Status(err, "pool %q info", p.Name)
	}
	out.State = poolState(state)
	out.CapacityBytes, out.AllocationBytes, out.AvailableBytes = int64(capB), int64(alloc), int64(avail)
	if a, err := lv.StoragePoolGetAutostart(p); err == nil {
		out.Autostart = a == 1
	}
	if out.State == v1.Pool_STATE_RUNNING {
		if n, err := lv.StoragePoolNumOfVolumes(p); err == nil {
			out.VolumeCount = n
		}
	}
	return out, nil
}

// DeletePool stops and undefines a pool; see DeletePoolRequest.
func (m *Manager) DeletePool(ctx context.Context, name string, deleteVolumes, deleteStorage bool) error {
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return err
	}
	p, err := lookupPool(lv, name)
	if err != nil {
		return err
	}
	if err := m.checkDelete(name, uuidString(p.UUID), deleteVolumes, deleteStorage); err != nil {
		return err
	}
	state, _, _, _, err := lv.StoragePoolGetInfo(p)
	if err != nil {
		return libvirtconn.Status(err, "pool %q info", name)
	}
	if libvirt.StoragePoolState(state) == libvirt.StoragePoolRunning {
		_ = lv.StoragePoolRefresh(p, 0)
		vols, _, err := lv.StoragePoolListAllVolumes(p, 1, 0)
		if err != nil {
			return libvirtconn.Status(err, "list volumes of pool %q", name)
		}
		if len(vols) > 0 {
			if !deleteVolumes {
				return fault.Errorf(fault.FailedPrecondition, "pool %q still holds %d volume(s); delete them first or set delete_volumes", name, len(vols))
			}
			users, err := m.Users(ctx)
			if err != nil {
				return err
			}
			for _, v := range vols {
				if u := users[name+"/"+v.Name]; len(u) > 0 {
					return fault.Errorf(fault.FailedPrecondition, "volume %s/%s is used by VM %s; pool not deleted", name, v.Name, strings.Join(u, ", "))
				}
			}
			for _, v := range vols {
				if err := lv.StorageVolDelete(v, libvirt.StorageVolDeleteNormal); err != nil {
					return libvirtconn.Status(err, "delete volume %s/%s", name, v.Name)
				}
			}
		}
		if err := lv.StoragePoolDestroy(p); err != nil {
			return libvirtconn.Status(err, "stop pool %q", name)
		}
	}
	if deleteStorage {
		if err := lv.StoragePoolDelete(p, libvirt.StoragePoolDeleteNormal); err != nil {
			return libvirtconn.Status(err, "delete storage of pool %q", name)
		}
	}
	if err := lv.StoragePoolUndefine(p); err != nil {
		return libvirtconn.Status(err, "undefine pool %q", name)
	}
	if err := m.owned.remove(name); err != nil {
		m.log.Warn("forget deleted pool", "pool", name, "err", err)
	}
	return nil
}

// CheckDelete refuses, before anything changes, a pool delete that would
// remove storage or volumes the agent did not create.
func (m *Manager) CheckDelete(ctx context.Context, name string, deleteVolumes, deleteStorage bool) error {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return err
	}
	p, err := lookupPool(lv, name)
	if err != nil {
		return err
	}
	return m.checkDelete(name, uuidString(p.UUID), deleteVolumes, deleteStorage)
}

func (m *Manager) checkDelete(name, uuid string, deleteVolumes, deleteStorage bool) error {
	if !deleteVolumes && !deleteStorage {
		return nil
	}
	rec, ok, err := m.owned.get(name)
	if err != nil {
		return fault.Errorf(fault.Internal, "read the agent's pool records: %w", err)
	}
	if !ok || rec.UUID != uuid {
		return fault.Errorf(fault.FailedPrecondition, "pool %q was not created by this agent: delete_volumes and delete_storage remove only what the agent created (delete without them to undefine the pool and keep its files)", name)
	}
	if deleteStorage && !rec.CreatedStorage {
		return fault.Errorf(fault.FailedPrecondition, "pool %q uses storage that existed before the pool (or was not built by the agent): delete_storage removes only what the agent created (delete without it)", name)
	}
	return nil
}

// CheckVolume validates a volume spec for CreateVolume.
func CheckVolume(v *v1.Volume, allowZeroSize bool) error {
	if v == nil {
		return Invalid("volume", "must be set")
	}
	if err := CheckName("volume.pool", v.GetPool()); err != nil {
		return err
	}
	if err := CheckName("volume.name", v.GetName()); err != nil {
		return err
	}
	if _, ok := volumeFormats[v.GetFormat()]; !ok {
		return Invalid("volume.format", "%d is not raw or qcow2", v.GetFormat())
	}
	return CheckSize("volume.capacity_bytes", v.GetCapacityBytes(), allowZeroSize)
}

// CreateVolume creates an empty volume.
func (m *Manager) CreateVolume(ctx context.Context, spec *v1.Volume) (*v1.Volume, error) {
	if err := CheckVolume(spec, false); err != nil {
		return nil, err
	}
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return nil, err
	}
	vol, err := m.create(lv, spec, spec.GetCapacityBytes())
	if err != nil {
		return nil, err
	}
	return m.volumeInfo(ctx, lv, vol)
}

func (m *Manager) create(lv *libvirtconn.Client, spec *v1.Volume, capacity int64) (libvirt.StorageVol, error) {
	p, ptype, err := m.activePool(lv, spec.GetPool())
	if err != nil {
		return libvirt.StorageVol{}, err
	}
	if _, err := lv.StorageVolLookupByName(p, spec.GetName()); err == nil {
		return libvirt.StorageVol{}, fault.Errorf(fault.AlreadyExists, "volume %s/%s already exists", spec.GetPool(), spec.GetName())
	}
	x, err := VolumeXML(ptype, spec.GetName(), spec.GetFormat(), capacity)
	if err != nil {
		return libvirt.StorageVol{}, err
	}
	doc, err := marshal(x, "volume")
	if err != nil {
		return libvirt.StorageVol{}, err
	}
	vol, err := lv.StorageVolCreateXML(p, doc, 0)
	if err != nil {
		return vol, libvirtconn.Status(err, "create volume %s/%s", spec.GetPool(), spec.GetName())
	}
	return vol, nil
}

// Upload creates a volume and fills it with exactly size bytes from r. A
// short or failed stream deletes the volume again.
func (m *Manager) Upload(ctx context.Context, spec *v1.Volume, size int64, r io.Reader) (_ *v1.Volume, err error) {
	if err := CheckVolume(spec, true); err != nil {
		return nil, err
	}
	if err := CheckSize("size_bytes", size, false); err != nil {
		return nil, err
	}
	capacity := spec.GetCapacityBytes()
	if capacity == 0 {
		capacity = size
	}
	if spec.GetFormat() != v1.Volume_FORMAT_QCOW2 && capacity < size {
		return nil, Invalid("capacity_bytes", "%d is smaller than the %d bytes uploaded", capacity, size)
	}
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return nil, err
	}
	vol, err := m.create(lv, spec, capacity)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if derr := lv.Detached().StorageVolDelete(vol, libvirt.StorageVolDeleteNormal); derr != nil {
				m.log.Warn("undo volume create", "volume", spec.GetPool()+"/"+spec.GetName(), "err", derr)
			}
		}
	}()
	cr := &exactReader{r: r, left: size}
	if err := lv.StorageVolUpload(vol, cr, 0, uint64(size), 0); err != nil {
		if cr.err != nil {
			return nil, cr.err
		}
		return nil, libvirtconn.Status(err, "upload to volume %s/%s", spec.GetPool(), spec.GetName())
	}
	if cr.err != nil {
		return nil, cr.err
	}
	if cr.left != 0 {
		return nil, Invalid("size_bytes", "the stream ended %d bytes short of the announced %d", cr.left, size)
	}
	// qcow2 content carries its own virtual size: let libvirt re-read it.
	if p, err := lookupPool(lv, spec.GetPool()); err == nil {
		_ = lv.StoragePoolRefresh(p, 0)
	}
	return m.volumeInfo(ctx, lv, vol)
}

// exactReader passes on at most left bytes and notes a longer stream or a
// reader error, so the upload can report the caller's mistake rather than
// libvirt's reaction to it.
type exactReader struct {
	r    io.Reader
	left int64
	err  error
}

func (e *exactReader) Read(b []byte) (int, error) {
	if e.left == 0 {
		// Probe for extra bytes the header did not announce.
		var one [1]byte
		if n, _ := e.r.Read(one[:]); n > 0 {
			e.err = Invalid("size_bytes", "the stream carries more bytes than the announced size")
			return 0, e.err
		}
		return 0, io.EOF
	}
	if int64(len(b)) > e.left {
		b = b[:e.left]
	}
	n, err := e.r.Read(b)
	e.left -= int64(n)
	if err == io.EOF {
		if e.left > 0 {
			e.err = Invalid("size_bytes", "the stream ended %d bytes short of the announced size", e.left)
			return n, e.err
		}
		return n, io.EOF
	}
	if err != nil {
		e.err = err
	}
	return n, err
}

// GetVolume returns one volume.
func (m *Manager) GetVolume(ctx context.Context, pool, name string) (*v1.Volume, error) {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return nil, err
	}
	vol, err := m.lookupVolume(lv, pool, name)
	if err != nil {
		return nil, err
	}
	return m.volumeInfo(ctx, lv, vol)
}

func (m *Manager) lookupVolume(lv *libvirtconn.Client, pool, name string) (libvirt.StorageVol, error) {
	p, _, err := m.activePool(lv, pool)
	if err != nil {
		return libvirt.StorageVol{}, err
	}
	vol, err := lv.StorageVolLookupByName(p, name)
	if libvirtconn.NotFound(err) {
		return vol, notFound("volume %s/%s not found", pool, name)
	}
	if err != nil {
		return vol, libvirtconn.Status(err, "look up volume %s/%s", pool, name)
	}
	return vol, nil
}

// ListVolumes returns a pool's volumes, sorted by name.
func (m *Manager) ListVolumes(ctx context.Context, pool string) ([]*v1.Volume, error) {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return nil, err
	}
	p, _, err := m.activePool(lv, pool)
	if err != nil {
		return nil, err
	}
	vols, _, err := lv.StoragePoolListAllVolumes(p, 1, 0)
	if err != nil {
		return nil, libvirtconn.Status(err, "list volumes of pool %q", pool)
	}
	users, err := m.Users(ctx)
	if err != nil {
		return nil, err
	}
	var out []*v1.Volume
	for _, v := range vols {
		info, err := m.describe(lv, v, users)
		if fault.Is(err, fault.NotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *Manager) volumeInfo(ctx context.Context, lv *libvirtconn.Client, vol libvirt.StorageVol) (*v1.Volume, error) {
	users, err := m.Users(ctx)
	if err != nil {
		return nil, err
	}
	return m.describe(lv, vol, users)
}

func (m *Manager) describe(lv *libvirtconn.Client, vol libvirt.StorageVol, users map[string][]string) (*v1.Volume, error) {
	doc, err := lv.StorageVolGetXMLDesc(vol, 0)
	if err != nil {
		return nil, libvirtconn.Status(err, "volume %s/%s XML", vol.Pool, vol.Name)
	}
	var x libvirtxml.StorageVolume
	if err := x.Unmarshal(doc); err != nil {
		return nil, fmt.Errorf("parse volume %s/%s XML: %w", vol.Pool, vol.Name, err)
	}
	out := &v1.Volume{Pool: vol.Pool, Name: vol.Name, Format: v1.Volume_FORMAT_RAW, Path: vol.Key, UsedBy: users[vol.Pool+"/"+vol.Name]}
	if x.Target != nil {
		if x.Target.Format != nil {
			out.Format = formatOf(x.Target.Format.Type)
		}
		if x.Target.Path != "" {
			out.Path = x.Target.Path
		}
	}
	if x.Capacity != nil {
		out.CapacityBytes = int64(toBytes(x.Capacity.Value, x.Capacity.Unit))
	}
	if x.Allocation != nil {
		out.AllocationBytes = int64(toBytes(x.Allocation.Value, x.Allocation.Unit))
	}
	return out, nil
}

func toBytes(v uint64, unit string) uint64 {
	switch strings.ToLower(unit) {
	case "", "b", "bytes":
		return v
	case "k", "kib":
		return v << 10
	case "m", "mib":
		return v << 20
	case "g", "gib":
		return v << 30
	case "t", "tib":
		return v << 40
	}
	return v
}

// ResizeVolume grows a volume to capacity bytes.
func (m *Manager) ResizeVolume(ctx context.Context, pool, name string, capacity int64) (*v1.Volume, error) {
	if err := CheckSize("capacity_bytes", capacity, false); err != nil {
		return nil, err
	}
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return nil, err
	}
	vol, err := m.lookupVolume(lv, pool, name)
	if err != nil {
		return nil, err
	}
	_, cur, _, err := lv.StorageVolGetInfo(vol)
	if err != nil {
		return nil, libvirtconn.Status(err, "volume %s/%s info", pool, name)
	}
	if uint64(capacity) < cur {
		return nil, Invalid("capacity_bytes", "%d is smaller than the current %d: shrinking would destroy data and is refused", capacity, cur)
	}
	if users, err := m.Users(ctx); err == nil && len(users[pool+"/"+name]) > 0 {
		return nil, fault.Errorf(fault.FailedPrecondition, "volume %s/%s is in use by VM %s; resize it while the VM's disk is detached", pool, name, strings.Join(users[pool+"/"+name], ", "))
	}
	if uint64(capacity) != cur {
		if err := lv.StorageVolResize(vol, uint64(capacity), 0); err != nil {
			return nil, libvirtconn.Status(err, "resize volume %s/%s", pool, name)
		}
	}
	return m.volumeInfo(ctx, lv, vol)
}

// CloneVolume copies pool/name to newPool/newName (in the source's format
// unless format is set). A failed copy leaves no new volume.
func (m *Manager) CloneVolume(ctx context.Context, pool, name, newPool, newName string, format v1.Volume_Format) (*v1.Volume, error) {
	if newPool == "" {
		newPool = pool
	}
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return nil, err
	}
	src, err := m.lookupVolume(lv, pool, name)
	if err != nil {
		return nil, err
	}
	srcInfo, err := m.describe(lv, src, nil)
	if err != nil {
		return nil, err
	}
	if format == v1.Volume_FORMAT_UNSPECIFIED {
		format = srcInfo.Format
	}
	dst, ptype, err := m.activePool(lv, newPool)
	if err != nil {
		return nil, err
	}
	if _, err := lv.StorageVolLookupByName(dst, newName); err == nil {
		return nil, fault.Errorf(fault.AlreadyExists, "volume %s/%s already exists", newPool, newName)
	}
	x, err := VolumeXML(ptype, newName, format, srcInfo.CapacityBytes)
	if err != nil {
		return nil, err
	}
	doc, err := marshal(x, "volume")
	if err != nil {
		return nil, err
	}
	vol, err := lv.StorageVolCreateXMLFrom(dst, doc, src, 0)
	if err != nil {
		// libvirt removes a half-written clone itself; make sure.
		undo := lv.Detached()
		if v, lerr := undo.StorageVolLookupByName(dst, newName); lerr == nil {
			_ = undo.StorageVolDelete(v, libvirt.StorageVolDeleteNormal)
		}
		return nil, libvirtconn.Status(err, "clone volume %s/%s to %s/%s", pool, name, newPool, newName)
	}
	return m.volumeInfo(ctx, lv, vol)
}

// DeleteVolume removes a volume that no VM uses.
func (m *Manager) DeleteVolume(ctx context.Context, pool, name string) error {
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return err
	}
	vol, err := m.lookupVolume(lv, pool, name)
	if err != nil {
		return err
	}
	users, err := m.Users(ctx)
	if err != nil {
		return err
	}
	if u := users[pool+"/"+name]; len(u) > 0 {
		return fault.Errorf(fault.FailedPrecondition, "volume %s/%s is in use by VM %s; remove the disk from the VM first", pool, name, strings.Join(u, ", "))
	}
	if err := lv.StorageVolDelete(vol, libvirt.StorageVolDeleteNormal); err != nil {
		return libvirtconn.Status(err, "delete volume %s/%s", pool, name)
	}
	return nil
}

// Users maps "pool/volume" to the names of the domains (running or not)
// whose disks use that volume, in either their live or persistent
// definition.
func (m *Manager) Users(ctx context.Context) (map[string][]string, error) {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return nil, err
	}
	doms, _, err := lv.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, libvirtconn.Status(err, "list domains")
	}
	out := map[string][]string{}
	for _, d := range doms {
		for _, flags := range []libvirt.DomainXMLFlags{0, libvirt.DomainXMLInactive} {
			doc, err := lv.DomainGetXMLDesc(d, flags)
			if err != nil {
				if libvirtconn.NotFound(err) {
					break
				}
				return nil, libvirtconn.Status(err, "domain %q XML", d.Name)
			}
			var x libvirtxml.Domain
			if err := x.Unmarshal(doc); err != nil {
				return nil, fmt.Errorf("parse domain %q XML: %w", d.Name, err)
			}
			if x.Devices == nil {
				continue
			}
			for _, disk := range x.Devices.Disks {
				if disk.Source == nil || disk.Source.Volume == nil {
					continue
				}
				k := disk.Source.Volume.Pool + "/" + disk.Source.Volume.Volume
				if !slices.Contains(out[k], d.Name) {
					out[k] = append(out[k], d.Name)
				}
			}
		}
	}
	return out, nil
}

// InactiveAutostartPools names the pools that should run (autostart) but
// do not: the health report's pools-active check.
func (m *Manager) InactiveAutostartPools(ctx context.Context) ([]string, error) {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return nil, err
	}
	pools, _, err := lv.ConnectListAllStoragePools(1, libvirt.ConnectListStoragePoolsAutostart|libvirt.ConnectListStoragePoolsInactive)
	if err != nil {
		return nil, libvirtconn.Status(err, "list pools")
	}
	names := make([]string, 0, len(pools))
	for _, p := range pools {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return names, nil
}

// EnsurePool creates spec (built, started, autostarted) unless a pool of
// that name exists, and starts it when it exists but is not running. It is
// how the node's default pool comes to be after first boot.
func (m *Manager) EnsurePool(ctx context.Context, spec *v1.Pool) error {
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return err
	}
	p, err := lv.StoragePoolLookupByName(spec.GetName())
	if libvirtconn.NotFound(err) {
		_, err := m.CreatePool(ctx, spec, true, false)
		return err
	}
	if err != nil {
		return libvirtconn.Status(err, "look up pool %q", spec.GetName())
	}
	state, _, _, _, err := lv.StoragePoolGetInfo(p)
	if err != nil {
		return libvirtconn.Status(err, "pool %q info", spec.GetName())
	}
	if libvirt.StoragePoolState(state) != libvirt.StoragePoolRunning {
		if err := lv.StoragePoolCreate(p, 0); err != nil {
			return libvirtconn.Status(err, "start pool %q", spec.GetName())
		}
	}
	return nil
}
