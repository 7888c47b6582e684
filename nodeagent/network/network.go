// Package network owns the node's host networking: it validates a desired
// configuration (bonds, VLANs, bridges, addresses, routes, DNS servers),
// plans the difference to the live state, applies it with netlink in a
// given network namespace, persists it as systemd-networkd files, and
// reverts it unless it is confirmed before its deadline.
//
// A change goes through these steps, each before the next:
//
//  1. validate: the request alone (InvalidArgument), then against the live
//     links and the configuration it replaces (FailedPrecondition);
//  2. plan: the ordered netlink steps from the live state to the desired one;
//  3. record: the pending change is written to the state directory with a
//     snapshot of every link it touches, the routes through them, and the
//     networkd files it replaces; from here on a crash or restart reverts;
//  4. persist the new networkd files, then apply the steps live;
//  5. wait for Confirm until the deadline; past it, restore the snapshot
//     and the previous files.
package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/fault"

	"github.com/debvisor/debvisor/internal/atomicfile"
)

// Deadlines a change may be given to be confirmed.
const (
	DefaultDeadline = 60 * time.Second
	MinDeadline     = time.Second
	MaxDeadline     = time.Hour
)

// Config is what a Manager works on.
type Config struct {
	// Handle is the netlink handle of the namespace to manage; nil is the
	// agent's own namespace.
	Handle *netlink.Handle
	// NetworkdDir receives the systemd-networkd files (/etc/systemd/network).
	NetworkdDir string
	// StateDir holds the desired configuration, the pending change and the
	// last change's outcome.
	StateDir string
	// Management is the interface the node is managed through: a change
	// touching it must be confirmed. Empty: none.
	Management string
	// Deadline is the default confirm deadline (DefaultDeadline when 0).
	Deadline time.Duration
	// ResolvConf is read for the live DNS servers ("" reports none).
	ResolvConf string
	// Reload, when set, runs after networkd files changed (networkctl
	// reload on a node).
	Reload func(ctx context.Context) error
	Log    *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// FilesOnly validates, plans, records and persists changes (networkd
	// files, desired configuration, pending record, confirm or revert) but
	// never runs the netlink steps. It is for kernels that cannot create
	// what a change asks for (a test host without bonding or 802.1Q); the
	// files take effect when networkd next starts.
	FilesOnly bool
}

// Request is one ApplyNetwork.
type Request struct {
	Config *v1.NetworkConfig
	// Timeout is the confirm deadline; 0 uses the Manager's default.
	Timeout     time.Duration
	DryRun      bool
	NoConfirm   bool
	RequestedBy string
}

// pendingRecord is a change waiting for its confirmation, as kept on disk.
type pendingRecord struct {
	ID                string            `json:"id"`
	AppliedAt         time.Time         `json:"applied_at"`
	Deadline          time.Time         `json:"deadline"`
	RequestedBy       string            `json:"requested_by"`
	Plan              []string          `json:"plan"`
	TouchesManagement bool              `json:"touches_management"`
	Snapshot          snapshot          `json:"snapshot"`
	PrevFiles         map[string][]byte `json:"prev_files"`
	PrevDesired       json.RawMessage   `json:"prev_desired"`
}

// Manager applies, confirms and reverts network changes. Its methods are
// safe for concurrent use; one change is pending at a time.
type Manager struct {
	cfg   Config
	h     *netlink.Handle
	ownsH bool
	log   *slog.Logger

	mu      sync.Mutex
	desired *v1.NetworkConfig
	pending *pendingRecord
	last    *v1.NetworkChange
	timer   *time.Timer
	changed chan struct{}
	closed  bool
}

const (
	desiredFile = "desired.json"
	pendingFile = "pending.json"
	lastFile    = "last.json"
)

// New opens the manager's state. A change left pending by a previous run
// is loaded; Run reverts it at its deadline (at once if that has passed).
func New(cfg Config) (*Manager, error) {
	if cfg.NetworkdDir == "" || cfg.StateDir == "" {
		return nil, errors.New("network: NetworkdDir and StateDir must be set")
	}
	if cfg.Deadline == 0 {
		cfg.Deadline = DefaultDeadline
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Manager{cfg: cfg, h: cfg.Handle, log: cfg.Log, changed: make(chan struct{})}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.h == nil {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
		m.h, m.ownsH = h, true
	}
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		m.Close()
		return nil, err
	}
	m.desired = &v1.NetworkConfig{}
	if b, err := os.ReadFile(m.path(desiredFile)); err == nil {
		if err := protojson.Unmarshal(b, m.desired); err != nil {
			m.Close()
			return nil, fmt.Errorf("network: %s: %w", m.path(desiredFile), err)
		}
	} else if !os.IsNotExist(err) {
		m.Close()
		return nil, err
	}
	if b, err := os.ReadFile(m.path(pendingFile)); err == nil {
		var p pendingRecord
		if err := json.Unmarshal(b, &p); err != nil {
			m.Close()
			return nil, fmt.Errorf("network: %s: %w", m.path(pendingFile), err)
		}
		m.pending = &p
	} else if !os.IsNotExist(err) {
		m.Close()
		return nil, err
	}
	if b, err := os.ReadFile(m.path(lastFile)); err == nil {
		last := &v1.NetworkChange{}
		if protojson.Unmarshal(b, last) == nil {
			m.last = last
		}
	}
	return m, nil
}

func (m *Manager) path(name string) string { return filepath.Join(m.cfg.StateDir, name) }

// Close stops the deadline timer without reverting: a pending change stays
// on disk for the next Manager. It closes the handle New opened.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.timer != nil {
		m.timer.Stop()
	}
	if m.ownsH && m.h != nil {
		m.h.Close()
	}
}

// Run arms the deadline of a change a previous run left pending and waits
// until ctx ends; then it stops the timer (the change stays pending on
// disk, so the next start still reverts it).
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if p := m.pending; p != nil && m.timer == nil {
		m.log.Warn("network change pending from before the restart", "id", p.ID, "deadline", p.Deadline)
		m.arm(p)
	}
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	m.mu.Unlock()
	return nil
}

// Changed returns a channel closed the next time a change is confirmed or
// reverted.
func (m *Manager) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// arm starts p's deadline timer (mu held).
func (m *Manager) arm(p *pendingRecord) {
	id := p.ID
	m.timer = time.AfterFunc(max(p.Deadline.Sub(m.cfg.Now()), 0), func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.closed || m.pending == nil || m.pending.ID != id {
			return
		}
		m.log.Warn("network change not confirmed in time: reverting", "id", id)
		if _, err := m.revertLocked(context.Background(), "confirm deadline passed"); err != nil {
			m.log.Error("network revert incomplete", "id", id, "err", err)
		}
	})
}

// Management returns the management interface ("" when none).
func (m *Manager) Management() string { return m.cfg.Management }

// Get reports the live state, the desired configuration and the changes.
func (m *Manager) Get(ctx context.Context) (*v1.NetworkState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	links, routes, err := liveView(m.h)
	if err != nil {
		return nil, fault.Errorf(fault.Internal, "read the live network: %w", err)
	}
	st := &v1.NetworkState{
		Links: links, Routes: routes, DnsServers: readResolvConf(m.cfg.ResolvConf),
		Desired: proto.CloneOf(m.desired), Last: proto.CloneOf(m.last), ManagementInterface: m.cfg.Management,
	}
	if m.pending != nil {
		st.Pending = m.pending.change(v1.NetworkChange_STATE_PENDING)
	}
	return st, nil
}

func readResolvConf(path string) []string {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			out = append(out, f[1])
		}
	}
	return out
}

func (p *pendingRecord) change(s v1.NetworkChange_State) *v1.NetworkChange {
	return &v1.NetworkChange{
		Id: p.ID, State: s, Plan: p.Plan, AppliedAt: timestamppb.New(p.AppliedAt), Deadline: timestamppb.New(p.Deadline),
		RequestedBy: p.RequestedBy, TouchesManagement: p.TouchesManagement,
	}
}

// Apply validates, plans and (unless DryRun) applies a configuration with
// a confirm deadline.
func (m *Manager) Apply(ctx context.Context, r Request) (*v1.NetworkChange, error) {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = m.cfg.Deadline
	}
	if timeout < MinDeadline || timeout > MaxDeadline {
		return nil, fault.Invalidf("confirm_timeout", "%s is not between %s and %s", timeout, MinDeadline, MaxDeadline)
	}
	// Once started, a change runs to its end whatever happens to the
	// caller's connection: half a change is worse than either state.
	ctx = context.WithoutCancel(ctx)
	next := r.Config
	if next == nil {
		next = &v1.NetworkConfig{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending != nil && !r.DryRun {
		return nil, fault.Errorf(fault.FailedPrecondition, "network change %s is pending until %s: confirm or revert it first",
			m.pending.ID, m.pending.Deadline.Format(time.RFC3339))
	}
	cur, err := readLive(m.h)
	if err != nil {
		return nil, fault.Errorf(fault.Internal, "read the live network: %w", err)
	}
	prev := newModel(m.desired)
	if err := validate(next, cur, prev); err != nil {
		return nil, err
	}
	nm := newModel(next)
	steps := plan(cur, desiredTarget(nm, prev, cur))
	files := render(next)
	oldFiles, err := readFiles(m.cfg.NetworkdDir)
	if err != nil {
		return nil, fault.Errorf(fault.Internal, "read %s: %w", m.cfg.NetworkdDir, err)
	}
	// Files first: that is the order persist and run go in.
	desc := append(fileSteps(oldFiles, files), descs(steps)...)
	mgmt := touches(prev, nm, m.cfg.Management)
	if r.NoConfirm && mgmt {
		return nil, fault.Errorf(fault.FailedPrecondition,
			"no_confirm: the change touches the management interface %s; apply it with a confirm deadline and confirm it from a new connection, so that a mistake reverts itself", m.cfg.Management)
	}
	now := m.cfg.Now()
	if r.DryRun {
		return &v1.NetworkChange{State: v1.NetworkChange_STATE_PLANNED, Plan: desc, RequestedBy: r.RequestedBy, TouchesManagement: mgmt}, nil
	}
	prevJSON, err := protojson.Marshal(m.desired)
	if err != nil {
		return nil, fault.Errorf(fault.Internal, "encode the desired configuration: %w", err)
	}
	touched := append(nm.names(), prev.names()...)
	for n, l := range cur.links {
		// VLANs on a touched parent may die with it.
		if l.Kind == kindVLAN && (nm.kind[l.Parent] != "" || prev.kind[l.Parent] != "") {
			touched = append(touched, n)
		}
	}
	p := &pendingRecord{
		ID: newID(), AppliedAt: now, Deadline: now.Add(timeout), RequestedBy: r.RequestedBy, Plan: desc,
		TouchesManagement: mgmt, Snapshot: cur.snapshotOf(dedup(touched)), PrevFiles: oldFiles, PrevDesired: prevJSON,
	}
	if err := m.writeJSON(pendingFile, p); err != nil {
		return nil, fault.Errorf(fault.Internal, "record the pending change: %w", err)
	}
	m.pending = p
	m.log.Info("applying network change", "id", p.ID, "deadline", p.Deadline, "steps", len(steps), "by", r.RequestedBy)
	applyErr := m.persist(next, files)
	if applyErr == nil && !m.cfg.FilesOnly {
		applyErr = run(m.h, steps, false)
	}
	if applyErr != nil {
		reason := "apply failed: " + applyErr.Error()
		_, rerr := m.revertLocked(ctx, reason)
		if rerr != nil {
			return nil, fault.Errorf(fault.Internal, "network change %s: %v; reverting was incomplete too: %v", p.ID, applyErr, rerr)
		}
		return nil, fault.Errorf(fault.Internal, "network change %s: %v; reverted to the previous state", p.ID, applyErr)
	}
	m.reload(ctx)
	if r.NoConfirm {
		return m.confirmLocked(p.ID, r.RequestedBy)
	}
	m.arm(p)
	return p.change(v1.NetworkChange_STATE_PENDING), nil
}

func dedup(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// fileSteps describes the networkd files a change writes and removes.
func fileSteps(old, next map[string][]byte) []string {
	var out []string
	for _, n := range sortedKeys(next) {
		if o, ok := old[n]; !ok || string(o) != string(next[n]) {
			out = append(out, "write "+n)
		}
	}
	for _, n := range sortedKeys(old) {
		if _, ok := next[n]; !ok {
			out = append(out, "remove "+n)
		}
	}
	return out
}

func sortedKeys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// persist writes the networkd files and the desired configuration.
func (m *Manager) persist(c *v1.NetworkConfig, files map[string][]byte) error {
	if err := writeFiles(m.cfg.NetworkdDir, files); err != nil {
		return fmt.Errorf("write networkd files: %w", err)
	}
	b, err := protojson.Marshal(c)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(m.path(desiredFile), b, 0o640); err != nil {
		return fmt.Errorf("write the desired configuration: %w", err)
	}
	m.desired = proto.CloneOf(c)
	return nil
}

// reload tells networkd that its files changed. It runs after the live
// steps: networkd reloaded earlier creates the new bonds, VLANs and
// bridges from the files itself and races the agent's own netlink steps
// (the agent's "create bond0" then found bond0 there). The live state is
// netlink's job; networkd catching up late (or not running) costs DHCP
// and DNS until it does, not the change.
func (m *Manager) reload(ctx context.Context) {
	if m.cfg.Reload == nil {
		return
	}
	if err := m.cfg.Reload(ctx); err != nil {
		m.log.Warn("networkd did not reload; the files take effect at its next start", "err", err)
	}
}

func (m *Manager) writeJSON(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(m.path(name), b, 0o640)
}

// Confirm keeps the pending change id.
func (m *Manager) Confirm(_ context.Context, id, by string) (*v1.NetworkChange, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkPending(id); err != nil {
		return nil, err
	}
	return m.confirmLocked(id, by)
}

func (m *Manager) confirmLocked(id, by string) (*v1.NetworkChange, error) {
	p := m.pending
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	if err := os.Remove(m.path(pendingFile)); err != nil && !os.IsNotExist(err) {
		return nil, fault.Errorf(fault.Internal, "confirm %s: %w", id, err)
	}
	m.pending = nil
	ch := p.change(v1.NetworkChange_STATE_CONFIRMED)
	ch.ResolvedAt = timestamppb.New(m.cfg.Now())
	if by != "" {
		ch.Reason = "confirmed by " + by
	}
	m.finish(ch)
	m.log.Info("network change confirmed", "id", id, "by", by)
	return proto.CloneOf(ch), nil
}

// Revert restores the state from before the pending change id now.
func (m *Manager) Revert(ctx context.Context, id, by string) (*v1.NetworkChange, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkPending(id); err != nil {
		return nil, err
	}
	reason := "reverted"
	if by != "" {
		reason = "reverted by " + by
	}
	ch, err := m.revertLocked(ctx, reason)
	if err != nil {
		return nil, fault.Errorf(fault.Internal, "revert %s was incomplete: %w", id, err)
	}
	return ch, nil
}

func (m *Manager) checkPending(id string) error {
	if m.pending != nil && m.pending.ID == id {
		return nil
	}
	msg := fmt.Sprintf("no pending network change %q", id)
	if m.pending != nil {
		msg += fmt.Sprintf(" (the pending one is %s)", m.pending.ID)
	}
	if m.last != nil && m.last.GetId() == id {
		msg += fmt.Sprintf(": it was %s at %s", strings.ToLower(strings.TrimPrefix(m.last.GetState().String(), "STATE_")),
			m.last.GetResolvedAt().AsTime().Format(time.RFC3339))
		if m.last.GetReason() != "" {
			msg += " (" + m.last.GetReason() + ")"
		}
		return fault.Errorf(fault.FailedPrecondition, "%s", msg)
	}
	return fault.Errorf(fault.NotFound, "%s", msg)
}

// revertLocked restores the pending change's snapshot and files. It goes
// as far as it can: a step that fails does not stop the others.
func (m *Manager) revertLocked(ctx context.Context, reason string) (*v1.NetworkChange, error) {
	p := m.pending
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	var errs []error
	if !m.cfg.FilesOnly {
		cur, err := readLive(m.h)
		if err != nil {
			errs = append(errs, err)
		} else if err := run(m.h, plan(cur, restoreTarget(p.Snapshot)), true); err != nil {
			errs = append(errs, err)
		}
	}
	prev := &v1.NetworkConfig{}
	if len(p.PrevDesired) > 0 {
		if err := protojson.Unmarshal(p.PrevDesired, prev); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.persist(prev, p.PrevFiles); err != nil {
		errs = append(errs, err)
	}
	m.reload(ctx)
	if err := errors.Join(errs...); err != nil {
		// Keep the pending record: the next start tries again.
		m.log.Error("network revert incomplete", "id", p.ID, "err", err)
	} else if err := os.Remove(m.path(pendingFile)); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	m.pending = nil
	ch := p.change(v1.NetworkChange_STATE_REVERTED)
	ch.ResolvedAt = timestamppb.New(m.cfg.Now())
	ch.Reason = reason
	m.finish(ch)
	m.log.Info("network change reverted", "id", p.ID, "reason", reason)
	return proto.CloneOf(ch), errors.Join(errs...)
}

// finish records the outcome of a change and wakes Changed waiters.
func (m *Manager) finish(ch *v1.NetworkChange) {
	m.last = ch
	if b, err := protojson.Marshal(ch); err == nil {
		if err := atomicfile.WriteFile(m.path(lastFile), b, 0o640); err != nil {
			m.log.Warn("record the last network change", "err", err)
		}
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "net-" + hex.EncodeToString(b[:])
}
