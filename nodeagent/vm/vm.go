// Package vm owns the node's KVM guests: libvirt domain definitions built
// from the API's VMSpec with libvirtxml, their life cycle (create, start,
// graceful stop, reboot, delete), in-place updates that apply live what
// libvirt allows and report the rest as pending, cloud-init seeds, serial
// consoles and guest addresses. Failures part-way undo what the call made.
package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"libvirt.org/go/libvirtxml"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/fault"
	"github.com/debvisor/debvisor/nodeagent/libvirtconn"
	"github.com/debvisor/debvisor/nodeagent/storage"
)

// Config tunes the Manager.
type Config struct {
	// SeedDir holds the cloud-init seed ISOs (one per VM).
	SeedDir string
	// DomainType forces "kvm" or "qemu" (TCG); detected from libvirt's
	// capabilities when empty.
	DomainType string
	// SnapshotAfter is how long Get waits for libvirtd before it answers
	// from the VM's snapshot, when one may be used (DefaultSnapshotAfter
	// when 0; negative: never).
	SnapshotAfter time.Duration
	// SnapshotMaxAge is the oldest snapshot Get answers with
	// (DefaultSnapshotMaxAge when 0).
	SnapshotMaxAge time.Duration
}

// Manager performs VM operations through libvirt. Callers serialise
// mutations with the operation queue using Lock and the disks' volume locks.
type Manager struct {
	conn    *libvirtconn.Conn
	storage *storage.Manager
	cfg     Config
	log     *slog.Logger

	hvMu sync.Mutex
	hv   string

	snaps  *snapshots
	reader *reader
}

// New returns a Manager that resolves VM disks through st (the agent's one
// storage manager, on the same libvirt connection). Run WatchEvents beside
// it: without it, reads never answer from snapshots.
func New(conn *libvirtconn.Conn, st *storage.Manager, cfg Config, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.SnapshotAfter == 0 {
		cfg.SnapshotAfter = DefaultSnapshotAfter
	}
	if cfg.SnapshotMaxAge == 0 {
		cfg.SnapshotMaxAge = DefaultSnapshotMaxAge
	}
	snaps := newSnapshots(cfg.SnapshotMaxAge)
	return &Manager{conn: conn, storage: st, cfg: cfg, log: log, snaps: snaps,
		reader: &reader{snaps: snaps, after: cfg.SnapshotAfter, now: time.Now}}
}

// Request identifies the create request that made a VM: the client's
// request id and a hash of what it asked for.
type Request struct {
	ID, Hash string
}

// changing marks name as being changed by the agent: its snapshot is
// dropped now and again when the change is over (call the returned func).
func (m *Manager) changing(name string) func() {
	m.snaps.invalidate(name)
	return func() { m.snaps.invalidate(name) }
}

// Lock is the operation-queue key of a VM.
func Lock(name string) string { return "vm/" + name }

// Locks returns the queue keys a mutation of VM name with spec must hold:
// the VM and every volume its disks use.
func Locks(name string, specs ...*v1.VMSpec) []string {
	keys := []string{Lock(name)}
	for _, s := range specs {
		for _, d := range s.GetDisks() {
			keys = append(keys, storage.VolumeLock(d.GetPool(), d.GetVolume()))
		}
	}
	return keys
}

// hypervisor returns the domain type to define: kvm when libvirt offers it
// for x86_64 (i.e. /dev/kvm works), else qemu. Only an answer is cached: a
// libvirtd that was slow or down at the first create is asked again.
func (m *Manager) hypervisor(lv *libvirtconn.Client) (string, error) {
	if m.cfg.DomainType != "" {
		return m.cfg.DomainType, nil
	}
	m.hvMu.Lock()
	defer m.hvMu.Unlock()
	if m.hv != "" {
		return m.hv, nil
	}
	caps, err := lv.Capabilities()
	if err != nil {
		return "", libvirtconn.Status(err, "libvirt capabilities")
	}
	var c libvirtxml.Caps
	if err := c.Unmarshal(string(caps)); err != nil {
		return "", fmt.Errorf("parse capabilities: %w", err)
	}
	hv := "qemu"
	for _, g := range c.Guests {
		if g.Arch.Name != "x86_64" {
			continue
		}
		for _, d := range g.Arch.Domains {
			if d.Type == "kvm" {
				hv = "kvm"
			}
		}
	}
	m.hv = hv
	m.log.Info("libvirt domain type", "type", hv)
	return hv, nil
}

func lookup(lv *libvirtconn.Client, name string) (libvirt.Domain, error) {
	d, err := lv.DomainLookupByName(name)
	if libvirtconn.NotFound(err) {
		return d, fault.Errorf(fault.NotFound, "VM %q not found", name)
	}
	if err != nil {
		return d, libvirtconn.Status(err, "look up VM %q", name)
	}
	return d, nil
}

func domainXML(lv *libvirtconn.Client, d libvirt.Domain, flags libvirt.DomainXMLFlags) (*libvirtxml.Domain, error) {
	doc, err := lv.DomainGetXMLDesc(d, flags)
	if err != nil {
		return nil, libvirtconn.Status(err, "VM %q XML", d.Name)
	}
	var x libvirtxml.Domain
	if err := x.Unmarshal(doc); err != nil {
		return nil, fmt.Errorf("parse VM %q XML: %w", d.Name, err)
	}
	return &x, nil
}

func (m *Manager) seedPath(name string) string {
	return filepath.Join(m.cfg.SeedDir, name+"-cidata.iso")
}

// Exists reports whether a domain with this name is defined.
func (m *Manager) Exists(ctx context.Context, name string) (bool, error) {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return false, err
	}
	_, err = lv.DomainLookupByName(name)
	if libvirtconn.NotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, libvirtconn.Status(err, "look up VM %q", name)
	}
	return true, nil
}

// resolveDisks checks that every disk's pool and volume exist and that no
// other VM writes to the volume, and returns the disks with their formats.
// self is the VM being changed (its own use of a volume is fine).
func (m *Manager) resolveDisks(ctx context.Context, lv *libvirtconn.Client, field, self string, disks []*v1.Disk) ([]resolvedDisk, error) {
	if len(disks) == 0 {
		return nil, nil
	}
	st := m.storage
	users, err := st.Users(ctx)
	if err != nil {
		return nil, err
	}
	var out []resolvedDisk
	for i, d := range disks {
		f := fmt.Sprintf("%s.disks[%d]", field, i)
		vol, err := st.GetVolume(ctx, d.Pool, d.Volume)
		switch {
		case err == nil:
		case fault.Is(err, fault.NotFound), fault.Is(err, fault.FailedPrecondition):
			return nil, fault.Invalidf(f, "%w", err)
		default:
			return nil, err
		}
		if !d.ReadOnly {
			for _, u := range users[d.Pool+"/"+d.Volume] {
				if u != self {
					return nil, fault.Errorf(fault.FailedPrecondition, "%s: volume %s/%s is in use by VM %q", f, d.Pool, d.Volume, u)
				}
			}
		}
		format := "raw"
		if vol.Format == v1.Volume_FORMAT_QCOW2 {
			format = "qcow2"
		}
		out = append(out, resolvedDisk{Disk: d, format: format})
	}
	return out, nil
}

// Create defines (and, for a RUNNING power state, starts) a VM from a
// normalised spec, returning its UUID. On any failure the domain and seed
// it made are removed again. With a request id, a VM of that name made by
// the same request is not an error: the create was retried after its answer
// was lost, and Create finishes it (autostart, start) instead.
func (m *Manager) Create(ctx context.Context, name string, spec *v1.VMSpec, req Request) (_ string, err error) {
	defer m.changing(name)()
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return "", err
	}
	if dom, err := lv.DomainLookupByName(name); err == nil {
		return m.finishCreate(lv, dom, spec, req)
	} else if !libvirtconn.NotFound(err) {
		return "", libvirtconn.Status(err, "look up VM %q", name)
	}
	hv, err := m.hypervisor(lv)
	if err != nil {
		return "", err
	}
	disks, err := m.resolveDisks(ctx, lv, "vm.spec", name, spec.Disks)
	if err != nil {
		return "", err
	}
	id := uuid.NewString()
	p := domainParams{Name: name, UUID: id, Hypervisor: hv, Spec: spec, Disks: disks, Request: req}
	if spec.CloudInit != nil {
		p.SeedPath = m.seedPath(name)
		if err := writeSeed(p.SeedPath, name, id, spec.CloudInit); err != nil {
			return "", fault.Errorf(fault.Internal, "cloud-init seed: %v", err)
		}
		defer func() {
			if err != nil {
				_ = os.Remove(p.SeedPath)
			}
		}()
	}
	x, err := buildDomain(p)
	if err != nil {
		return "", err
	}
	doc, err := x.Marshal()
	if err != nil {
		return "", fmt.Errorf("marshal domain XML: %w", err)
	}
	dom, err := lv.DomainDefineXMLFlags(doc, libvirt.DomainDefineValidate)
	if err != nil {
		return "", libvirtconn.Status(err, "define VM %q", name)
	}
	defer func() {
		if err != nil {
			// Also after a cancellation: the undo must still reach libvirtd.
			undo := lv.Detached()
			_ = undo.DomainDestroy(dom)
			if uerr := undo.DomainUndefineFlags(dom, undefineFlags); uerr != nil && !libvirtconn.NotFound(uerr) {
				m.log.Warn("undo VM define", "vm", name, "err", uerr)
			}
		}
	}()
	if spec.Autostart {
		if err := lv.DomainSetAutostart(dom, 1); err != nil {
			return "", libvirtconn.Status(err, "autostart VM %q", name)
		}
	}
	if spec.PowerState == v1.PowerState_POWER_STATE_RUNNING {
		if _, err := lv.DomainCreateWithFlags(dom, 0); err != nil {
			return "", libvirtconn.Status(err, "start VM %q", name)
		}
	}
	return id, nil
}

// finishCreate handles a create whose VM exists: refused unless the same
// request made it, else brought to what the request asked for.
func (m *Manager) finishCreate(lv *libvirtconn.Client, dom libvirt.Domain, spec *v1.VMSpec, req Request) (string, error) {
	x, err := domainXML(lv, dom, libvirt.DomainXMLInactive)
	if err != nil {
		return "", err
	}
	_, have := specFromDomain(x)
	if err := checkSameRequest(dom.Name, have, req); err != nil {
		return "", err
	}
	m.log.Info("create retried: finishing the VM this request made", "vm", dom.Name, "request_id", req.ID)
	if spec.Autostart {
		if a, err := lv.DomainGetAutostart(dom); err != nil || a != 1 {
			if err := lv.DomainSetAutostart(dom, 1); err != nil {
				return "", libvirtconn.Status(err, "autostart VM %q", dom.Name)
			}
		}
	}
	if spec.PowerState == v1.PowerState_POWER_STATE_RUNNING {
		active, err := domainActive(lv, dom)
		if err != nil {
			return "", err
		}
		if !active {
			if _, err := lv.DomainCreateWithFlags(dom, 0); err != nil && !libvirtconn.Is(err, libvirt.ErrOperationInvalid) {
				return "", libvirtconn.Status(err, "start VM %q", dom.Name)
			}
		}
	}
	return x.UUID, nil
}

// checkSameRequest refuses a create of an existing VM unless req made it.
func checkSameRequest(name string, have meta, req Request) error {
	switch {
	case req.ID == "" || have.RequestID != req.ID:
		return fault.Errorf(fault.AlreadyExists, "VM %q already exists and was not made by this request; "+
			"choose another name, delete it, or import it (terraform import)", name)
	case have.RequestHash != req.Hash:
		return fault.Invalidf("request_id", "%q made VM %q from a different request; use a new request_id for a different create", req.ID, name)
	}
	return nil
}

// CheckCreate tells a create of name that can go ahead (no such VM, or the
// same request made it: nil) from one that cannot (AlreadyExists, or
// Invalid for a reused request id). It reads without waiting behind
// mutations; the create checks again under the VM's lock.
func (m *Manager) CheckCreate(ctx context.Context, name string, req Request) error {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return err
	}
	dom, err := lv.DomainLookupByName(name)
	if libvirtconn.NotFound(err) {
		return nil
	}
	if err != nil {
		return libvirtconn.Status(err, "look up VM %q", name)
	}
	x, err := domainXML(lv, dom, libvirt.DomainXMLInactive)
	if fault.Is(err, fault.NotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	_, have := specFromDomain(x)
	return checkSameRequest(name, have, req)
}

const undefineFlags = libvirt.DomainUndefineManagedSave | libvirt.DomainUndefineSnapshotsMetadata |
	libvirt.DomainUndefineNvram | libvirt.DomainUndefineCheckpointsMetadata

var states = map[libvirt.DomainState]v1.VMStatus_State{
	libvirt.DomainNostate:     v1.VMStatus_STATE_UNSPECIFIED,
	libvirt.DomainRunning:     v1.VMStatus_STATE_RUNNING,
	libvirt.DomainBlocked:     v1.VMStatus_STATE_RUNNING,
	libvirt.DomainPaused:      v1.VMStatus_STATE_PAUSED,
	libvirt.DomainShutdown:    v1.VMStatus_STATE_SHUTTING_DOWN,
	libvirt.DomainShutoff:     v1.VMStatus_STATE_STOPPED,
	libvirt.DomainCrashed:     v1.VMStatus_STATE_CRASHED,
	libvirt.DomainPmsuspended: v1.VMStatus_STATE_SUSPENDED,
}

func isActive(st v1.VMStatus_State) bool {
	return st != v1.VMStatus_STATE_STOPPED && st != v1.VMStatus_STATE_CRASHED && st != v1.VMStatus_STATE_UNSPECIFIED
}

// Get returns a VM's persistent spec and its status, including the changes
// the running guest does not have yet. It answers from libvirtd; when
// libvirtd has not answered within Config.SnapshotAfter it answers from the
// VM's snapshot if one may be used (see snapshots), with observed_time
// saying when libvirtd reported it.
func (m *Manager) Get(ctx context.Context, name string) (*v1.VM, error) {
	return m.reader.read(ctx, name, m.getLive)
}

func (m *Manager) getLive(ctx context.Context, name string) (*v1.VM, error) {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return nil, err
	}
	d, err := lookup(lv, name)
	if err != nil {
		return nil, err
	}
	return m.describe(lv, d)
}

// describe reads what GetVM reports of one domain. Its calls go out at
// once (the read connection has several slots), so a slow libvirtd costs
// one round trip per read, not four.
func (m *Manager) describe(lv *libvirtconn.Client, d libvirt.Domain) (*v1.VM, error) {
	var (
		st             int32
		autostart      int32
		autostartErr   error
		inactive, live *libvirtxml.Domain
	)
	g := new(errgroup.Group)
	g.Go(func() (err error) {
		st, _, err = lv.DomainGetState(d, 0)
		return libvirtconn.Status(err, "VM %q state", d.Name)
	})
	g.Go(func() (err error) {
		inactive, err = domainXML(lv, d, libvirt.DomainXMLInactive)
		return err
	})
	g.Go(func() error {
		autostart, autostartErr = lv.DomainGetAutostart(d)
		return nil
	})
	// The live definition is only used when the guest runs; asking for it
	// anyway saves a round trip (for a stopped guest it is the inactive one).
	g.Go(func() (err error) {
		live, err = domainXML(lv, d, 0)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	spec, meta := specFromDomain(inactive)
	if autostartErr == nil {
		spec.Autostart = autostart == 1
	}
	vm := &v1.VM{
		Name: d.Name,
		Spec: spec,
		Status: &v1.VMStatus{
			State:           states[libvirt.DomainState(st)],
			Uuid:            inactive.UUID,
			Hypervisor:      inactive.Type,
			CreateRequestId: meta.RequestID,
		},
	}
	if isActive(vm.Status.State) {
		liveSpec, _ := specFromDomain(live)
		vm.Status.PendingChanges = pendingChanges(liveSpec, spec)
	}
	return vm, nil
}

// listWorkers bounds the domains List describes at once.
const listWorkers = 4

// List returns every VM, sorted by name, as libvirtd reports them now.
func (m *Manager) List(ctx context.Context) ([]*v1.VM, error) {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return nil, err
	}
	token := m.snaps.begin()
	doms, _, err := lv.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, libvirtconn.Status(err, "list VMs")
	}
	vms := make([]*v1.VM, len(doms))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(listWorkers)
	glv, err := m.conn.Reader(gctx)
	if err != nil {
		return nil, err
	}
	for i, d := range doms {
		g.Go(func() error {
			vm, err := m.describe(glv, d)
			if fault.Is(err, fault.NotFound) {
				return nil // deleted meanwhile
			}
			if err != nil {
				return err
			}
			vm.Status.ObservedTime = timestamppb.Now()
			m.snaps.put(d.Name, token, vm, time.Now())
			vms[i] = vm
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]*v1.VM, 0, len(vms))
	for _, vm := range vms {
		if vm != nil {
			out = append(out, vm)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// UpdateResult says how an update was applied.
type UpdateResult struct {
	// Live are the changes the running guest got now.
	Live []string
	// Pending are the changes waiting for the next power cycle.
	Pending []string
}

// Update brings a VM to a normalised spec in place: the persistent
// definition always becomes spec; on a running guest, disk and NIC
// hot-(un)plug, vCPU hot-add and balloon memory changes are applied live,
// and whatever the guest did not take is reported as pending.
func (m *Manager) Update(ctx context.Context, name string, spec *v1.VMSpec) (UpdateResult, error) {
	defer m.changing(name)()
	var res UpdateResult
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return res, err
	}
	dom, err := lookup(lv, name)
	if err != nil {
		return res, err
	}
	cur, err := domainXML(lv, dom, libvirt.DomainXMLInactive)
	if err != nil {
		return res, err
	}
	curSpec, curMeta := specFromDomain(cur)
	if cloudKey(curSpec.CloudInit) != cloudKey(spec.CloudInit) {
		return res, invalid("spec.cloud_init", "cannot change after the VM is created (cloud-init reads it on first boot only)")
	}
	if curSpec.Firmware != spec.Firmware {
		return res, invalid("spec.firmware", "cannot change from %s to %s: the guest's boot loader is installed for one of them", curSpec.Firmware, spec.Firmware)
	}
	// Keep existing disks' device names so the guest's view is stable.
	targets := map[string]string{}
	for _, d := range curSpec.Disks {
		targets[d.Pool+"/"+d.Volume] = d.Target
	}
	for _, d := range spec.Disks {
		d.Target = targets[d.Pool+"/"+d.Volume]
	}
	disks, err := m.resolveDisks(ctx, lv, "spec", name, spec.Disks)
	if err != nil {
		return res, err
	}
	want, err := buildDomain(domainParams{Name: name, UUID: cur.UUID, Hypervisor: cur.Type, Spec: spec, Disks: disks, SeedPath: curMeta.Seed,
		Request: Request{ID: curMeta.RequestID, Hash: curMeta.RequestHash}})
	if err != nil {
		return res, err
	}
	running, err := domainActive(lv, dom)
	if err != nil {
		return res, err
	}
	if running {
		live, err := domainXML(lv, dom, 0)
		if err != nil {
			return res, err
		}
		liveSpec, _ := specFromDomain(live)
		m.applyLive(lv, dom, live, liveSpec, want, spec)
	}
	doc, err := want.Marshal()
	if err != nil {
		return res, fmt.Errorf("marshal domain XML: %w", err)
	}
	if _, err := lv.DomainDefineXMLFlags(doc, libvirt.DomainDefineValidate); err != nil {
		return res, libvirtconn.Status(err, "redefine VM %q", name)
	}
	if curSpec.Autostart != spec.Autostart {
		if err := lv.DomainSetAutostart(dom, map[bool]int32{true: 1}[spec.Autostart]); err != nil {
			return res, libvirtconn.Status(err, "autostart VM %q", name)
		}
	}
	changes := diffSpecs(curSpec, spec)
	if running {
		live, err := domainXML(lv, dom, 0)
		if err != nil {
			return res, err
		}
		liveSpec, _ := specFromDomain(live)
		res.Pending = pendingChanges(liveSpec, spec)
	}
	for _, c := range changes {
		if !contains(res.Pending, c) {
			res.Live = append(res.Live, c)
		}
	}
	switch {
	case spec.PowerState == v1.PowerState_POWER_STATE_RUNNING && !running:
		if _, err := lv.DomainCreateWithFlags(dom, 0); err != nil {
			return res, libvirtconn.Status(err, "start VM %q", name)
		}
	case spec.PowerState == v1.PowerState_POWER_STATE_STOPPED && running:
		if err := m.stop(ctx, lv, dom, 30*time.Second, false); err != nil {
			return res, err
		}
		res.Pending = nil
	}
	return res, nil
}

// pendingChanges is what the running guest (live) lacks of its definition.
// memory_mib is left out while the maximum matches: below the maximum it is
// a balloon target that libvirt sets at once, and whether the guest gives
// the memory back depends on its balloon driver, not on a power cycle
// (live XML reports the balloon's actual size).
func pendingChanges(live, config *v1.VMSpec) []string {
	l := proto.Clone(live).(*v1.VMSpec)
	if l.MaxMemoryMib == config.MaxMemoryMib {
		l.MemoryMib = config.MemoryMib
	}
	return diffSpecs(l, config)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func cloudKey(c *v1.CloudInit) string {
	if c == nil {
		return ""
	}
	return c.UserData + "\x00" + c.MetaData + "\x00" + c.NetworkConfig
}

// applyLive changes the running guest towards want as far as libvirt and
// the guest allow. Failures are not errors: what did not apply stays
// pending, which Update reports.
func (m *Manager) applyLive(lv *libvirtconn.Client, dom libvirt.Domain, live *libvirtxml.Domain, have *v1.VMSpec, want *libvirtxml.Domain, spec *v1.VMSpec) {
	log := m.log.With("vm", dom.Name)
	const liveFlag = uint32(libvirt.DomainAffectLive)
	// vCPUs: hot-add (and hot-remove where the guest cooperates) up to the
	// running maximum.
	if spec.Vcpus != have.Vcpus && spec.Vcpus <= have.MaxVcpus {
		if err := lv.DomainSetVcpusFlags(dom, uint32(spec.Vcpus), liveFlag); err != nil {
			log.Info("vcpus not changed live; pending", "err", err)
		}
	}
	// Memory: the balloon target, up to the running maximum.
	if spec.MemoryMib != have.MemoryMib && spec.MemoryMib <= have.MaxMemoryMib {
		if err := lv.DomainSetMemoryFlags(dom, uint64(spec.MemoryMib)<<10, liveFlag); err != nil {
			log.Info("memory not changed live; pending", "err", err)
		}
	}
	hd, wd := diskKeys(have.Disks), diskKeys(spec.Disks)
	for _, d := range want.Devices.Disks {
		if d.Source == nil || d.Source.Volume == nil {
			continue
		}
		k := d.Source.Volume.Pool + "/" + d.Source.Volume.Volume
		if _, ok := hd[k]; ok {
			continue
		}
		if err := attach(lv, dom, &d, liveFlag); err != nil {
			log.Info("disk not attached live; pending", "disk", k, "err", err)
		}
	}
	for _, d := range live.Devices.Disks {
		if d.Source == nil || d.Source.Volume == nil {
			continue
		}
		k := d.Source.Volume.Pool + "/" + d.Source.Volume.Volume
		if _, ok := wd[k]; ok {
			continue
		}
		if err := detach(lv, dom, &d, liveFlag); err != nil {
			log.Info("disk not detached live; pending", "disk", k, "err", err)
		}
	}
	hn, wn := nicKeys(have.Nics), nicKeys(spec.Nics)
	for _, i := range want.Devices.Interfaces {
		if _, ok := hn[i.MAC.Address]; ok {
			continue
		}
		if err := attach(lv, dom, &i, liveFlag); err != nil {
			log.Info("NIC not attached live; pending", "mac", i.MAC.Address, "err", err)
		}
	}
	for _, i := range live.Devices.Interfaces {
		if i.MAC == nil {
			continue
		}
		if _, ok := wn[i.MAC.Address]; ok {
			continue
		}
		if err := detach(lv, dom, &i, liveFlag); err != nil {
			log.Info("NIC not detached live; pending", "mac", i.MAC.Address, "err", err)
		}
	}
}

type device interface{ Marshal() (string, error) }

func attach(lv *libvirtconn.Client, dom libvirt.Domain, dev device, flags uint32) error {
	doc, err := dev.Marshal()
	if err != nil {
		return err
	}
	return lv.DomainAttachDeviceFlags(dom, doc, flags)
}

func detach(lv *libvirtconn.Client, dom libvirt.Domain, dev device, flags uint32) error {
	doc, err := dev.Marshal()
	if err != nil {
		return err
	}
	return lv.DomainDetachDeviceFlags(dom, doc, flags)
}

// Start boots a stopped VM; starting a running one is a no-op.
func (m *Manager) Start(ctx context.Context, name string) error {
	defer m.changing(name)()
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return err
	}
	dom, err := lookup(lv, name)
	if err != nil {
		return err
	}
	st, _, err := lv.DomainGetState(dom, 0)
	if err != nil {
		return libvirtconn.Status(err, "VM %q state", name)
	}
	switch libvirt.DomainState(st) {
	case libvirt.DomainRunning, libvirt.DomainBlocked:
		return nil
	case libvirt.DomainPaused:
		return libvirtconn.Status(lv.DomainResume(dom), "resume VM %q", name)
	}
	if _, err := lv.DomainCreateWithFlags(dom, 0); err != nil {
		return libvirtconn.Status(err, "start VM %q", name)
	}
	return nil
}

// Stop shuts a VM down: ACPI power button, then a forced power-off when
// the guest has not stopped within timeout (at once with force). Stopping
// a stopped VM is a no-op. It reports whether it had to force.
func (m *Manager) Stop(ctx context.Context, name string, timeout time.Duration, force bool) error {
	defer m.changing(name)()
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return err
	}
	dom, err := lookup(lv, name)
	if err != nil {
		return err
	}
	return m.stop(ctx, lv, dom, timeout, force)
}

func (m *Manager) stop(ctx context.Context, lv *libvirtconn.Client, dom libvirt.Domain, timeout time.Duration, force bool) error {
	running := func() (bool, error) {
		return domainActive(lv, dom)
	}
	up, err := running()
	if err != nil || !up {
		return err
	}
	if !force {
		if err := lv.DomainShutdownFlags(dom, libvirt.DomainShutdownAcpiPowerBtn); err != nil && !libvirtconn.Is(err, libvirt.ErrOperationInvalid) {
			m.log.Info("graceful shutdown request failed; forcing", "vm", dom.Name, "err", err)
		} else {
			deadline := time.NewTimer(timeout)
			defer deadline.Stop()
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
		wait:
			for {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-deadline.C:
					m.log.Info("guest did not shut down in time; forcing", "vm", dom.Name, "timeout", timeout)
					break wait
				case <-tick.C:
					up, err := running()
					if err != nil {
						return err
					}
					if !up {
						return nil
					}
				}
			}
		}
	}
	if err := lv.DomainDestroyFlags(dom, 0); err != nil && !libvirtconn.Is(err, libvirt.ErrOperationInvalid) {
		return libvirtconn.Status(err, "force off VM %q", dom.Name)
	}
	return nil
}

// Reboot restarts the guest: ACPI reboot request, or a reset with force.
func (m *Manager) Reboot(ctx context.Context, name string, force bool) error {
	defer m.changing(name)()
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return err
	}
	dom, err := lookup(lv, name)
	if err != nil {
		return err
	}
	active, err := domainActive(lv, dom)
	if err != nil {
		return err
	}
	if !active {
		return fault.Errorf(fault.FailedPrecondition, "VM %q is not running; start it instead", name)
	}
	if force {
		return libvirtconn.Status(lv.DomainReset(dom, 0), "reset VM %q", name)
	}
	return libvirtconn.Status(lv.DomainReboot(dom, libvirt.DomainRebootAcpiPowerBtn), "reboot VM %q", name)
}

// Delete forces the VM off and undefines it with its NVRAM and seed.
// Its disk volumes stay.
func (m *Manager) Delete(ctx context.Context, name string) error {
	defer m.changing(name)()
	lv, err := m.conn.Client(ctx)
	if err != nil {
		return err
	}
	dom, err := lookup(lv, name)
	if err != nil {
		return err
	}
	x, err := domainXML(lv, dom, libvirt.DomainXMLInactive)
	if err != nil {
		return err
	}
	_, meta := specFromDomain(x)
	if err := lv.DomainDestroyFlags(dom, 0); err != nil && !libvirtconn.Is(err, libvirt.ErrOperationInvalid) && !libvirtconn.NotFound(err) {
		return libvirtconn.Status(err, "force off VM %q", name)
	}
	if err := lv.DomainUndefineFlags(dom, undefineFlags); err != nil && !libvirtconn.NotFound(err) {
		return libvirtconn.Status(err, "undefine VM %q", name)
	}
	if meta.Seed != "" {
		if err := os.Remove(meta.Seed); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("remove cloud-init seed", "vm", name, "err", err)
		}
	}
	return nil
}

// Console copies the guest's serial console output to w until ctx ends or
// the guest stops. It uses its own libvirt connection, whose closing is
// what ends the stream inside libvirtd.
func (m *Manager) Console(ctx context.Context, name string, w io.Writer) error {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return err
	}
	dom, err := lookup(lv, name)
	if err != nil {
		return err
	}
	active, err := domainActive(lv, dom)
	if err != nil {
		return err
	}
	if !active {
		return fault.Errorf(fault.FailedPrecondition, "VM %q is not running: its console has no output", name)
	}
	own, err := m.conn.Dedicated(ctx)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		// Force takes the console over from an earlier session (e.g. a
		// dvctl that was killed) instead of failing.
		done <- own.DomainOpenConsole(dom, libvirt.OptString{}, w, uint32(libvirt.DomainConsoleForce))
	}()
	select {
	case err = <-done:
		_ = own.Disconnect()
	case <-ctx.Done():
		_ = own.Disconnect()
		// The console stream ends with an error once the connection is
		// gone; the caller asked to stop, so that error is expected.
		<-done //nolint:errcheck // the stream's error after a disconnect we asked for
		return nil
	}
	if err != nil && ctx.Err() == nil {
		if strings.Contains(err.Error(), "closed") {
			return nil
		}
		return libvirtconn.Status(err, "console of VM %q", name)
	}
	return nil
}

// Addresses returns the guest's IP addresses from the given sources,
// waiting up to wait for at least one.
func (m *Manager) Addresses(ctx context.Context, name string, wait time.Duration, sources []v1.VMAddress_Source) ([]*v1.VMAddress, error) {
	lv, err := m.conn.Reader(ctx)
	if err != nil {
		return nil, err
	}
	dom, err := lookup(lv, name)
	if err != nil {
		return nil, err
	}
	if len(sources) == 0 {
		sources = []v1.VMAddress_Source{v1.VMAddress_SOURCE_AGENT, v1.VMAddress_SOURCE_LEASE}
	}
	src := map[v1.VMAddress_Source]libvirt.DomainInterfaceAddressesSource{
		v1.VMAddress_SOURCE_AGENT: libvirt.DomainInterfaceAddressesSrcAgent,
		v1.VMAddress_SOURCE_LEASE: libvirt.DomainInterfaceAddressesSrcLease,
		v1.VMAddress_SOURCE_ARP:   libvirt.DomainInterfaceAddressesSrcArp,
	}
	deadline := time.Now().Add(wait)
	lastErr := map[v1.VMAddress_Source]string{}
	for {
		active, err := domainActive(lv, dom)
		if err != nil {
			return nil, err
		}
		if !active {
			return nil, fault.Errorf(fault.FailedPrecondition, "VM %q is not running: it has no addresses", name)
		}
		var out []*v1.VMAddress
		for _, s := range sources {
			ifaces, err := lv.DomainInterfaceAddresses(dom, uint32(src[s]), 0)
			if err != nil {
				lastErr[s] = err.Error()
				continue
			}
			lastErr[s] = "no address reported"
			for _, i := range ifaces {
				mac := ""
				if len(i.Hwaddr) > 0 {
					mac = i.Hwaddr[0]
				}
				for _, a := range i.Addrs {
					if i.Name == "lo" || strings.HasPrefix(a.Addr, "127.") || a.Addr == "::1" || strings.HasPrefix(a.Addr, "fe80:") {
						continue
					}
					out = append(out, &v1.VMAddress{Interface: i.Name, Mac: mac, Ip: a.Addr, Prefix: int32(a.Prefix), Source: s})
				}
			}
		}
		if len(out) > 0 {
			return out, nil
		}
		if !time.Now().Before(deadline) {
			var why []string
			for _, s := range sources {
				why = append(why, fmt.Sprintf("%s: %s", strings.ToLower(strings.TrimPrefix(s.String(), "SOURCE_")), lastErr[s]))
			}
			if wait == 0 {
				return nil, nil
			}
			return nil, fault.Errorf(fault.DeadlineExceeded, "VM %q reported no IP address within %s (%s); user-mode NICs are only visible to the guest agent", name, wait, strings.Join(why, "; "))
		}
		select {
		case <-ctx.Done():
			return nil, fault.Wrap(ctx.Err(), "VM %q addresses", name)
		case <-time.After(time.Second):
		}
	}
}

// domainActive reports whether the domain is running or paused (has a
// QEMU process), as libvirt sees it now.
func domainActive(lv *libvirtconn.Client, dom libvirt.Domain) (bool, error) {
	st, _, err := lv.DomainGetState(dom, 0)
	if err != nil {
		return false, libvirtconn.Status(err, "VM %q state", dom.Name)
	}
	return isActive(states[libvirt.DomainState(st)]), nil
}
