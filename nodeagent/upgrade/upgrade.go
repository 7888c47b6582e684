// Package upgrade owns the node's A/B operating system slots on the
// agent's side: writing a new OS image into the inactive slot (resolve,
// verify, stream with bounded memory, read back, activate), committing a
// boot once the health report passes (or marking it bad and rebooting into
// the previous slot), the one-shot and persistent rollbacks, and the slot
// status the API reports. GRUB's environment (boot/bootenv) is the source
// of truth for booting; the agent's record (versions, digests, results and
// reasons) lives on the data partition and is keyed by artifact digest.
package upgrade

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/semver"

	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/boot/slotwriter"
	"github.com/debvisor/debvisor/nodeagent/fault"
	"github.com/debvisor/debvisor/osimage"
)

// Artifact is a slot image an upgrade can write: already resolved and its
// signature verified by the Source, not yet read.
type Artifact struct {
	// Ref is the reference it was resolved from; Digest the slot blob's
	// digest ("sha256:…"), Size its length.
	Ref    string
	Digest string
	Size   int64
	// Version and Arch come from the artifact's (signed) annotations.
	Version string
	Arch    string
	// Open streams the blob. The reader is checked against Digest and
	// Size by the slot writer as it goes.
	Open func(ctx context.Context) (io.ReadCloser, error)
}

// Source resolves a reference to a verified slot artifact. Nothing may be
// written before Resolve returns: a wrong or missing signature, an unknown
// key, a tampered manifest or an unreachable registry fail here.
type Source interface {
	Resolve(ctx context.Context, ref string) (*Artifact, error)
}

// Health runs the node's health report now (the same registry the API,
// dvctl and the watchdog read).
type Health func(ctx context.Context) (passed bool, reason string)

// Config wires a Manager.
type Config struct {
	// Env is the boot environment on the ESP (bootenv.DirFS at /boot/efi
	// on a node).
	Env *bootenv.Store
	// Devices are the slots' partitions (/dev/disk/by-partlabel/debvisor-a
	// and -b on a node; files in tests).
	Devices map[osimage.Slot]string
	// StateDir is the agent's state dir (on the data partition).
	StateDir string
	// Cmdline is the kernel command line file ("/proc/cmdline").
	Cmdline string
	// ReleaseFile is the booted slot's release file ("/" + osimage.ReleaseFile).
	ReleaseFile string
	Source      Source
	Health      Health
	// Reboot restarts the node (systemctl reboot on a node).
	Reboot func(ctx context.Context) error
	// CommitDeadline bounds how long a trial boot may take to pass its
	// health report (default 5 min); CommitInterval is how often it is
	// run meanwhile (default 10 s).
	CommitDeadline, CommitInterval time.Duration
	// RebootDelay is how long after an upgrade operation succeeds the node
	// reboots, so the client sees the result first (default 3 s).
	RebootDelay time.Duration
	Now         func() time.Time
	Log         *slog.Logger
}

// Manager performs upgrades, commits and rollbacks.
type Manager struct {
	cfg   Config
	state *state
	log   *slog.Logger
	// mu serialises changes of the boot environment made by this agent
	// (operations also hold the "slots" lock in the operation queue).
	mu sync.Mutex
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Env == nil || cfg.Source == nil || cfg.Health == nil || cfg.Reboot == nil {
		return nil, errors.New("upgrade: Env, Source, Health and Reboot are required")
	}
	for _, s := range osimage.Slots {
		if cfg.Devices[s] == "" {
			return nil, fmt.Errorf("upgrade: no device for slot %s", s)
		}
	}
	if cfg.Cmdline == "" {
		cfg.Cmdline = "/proc/cmdline"
	}
	if cfg.ReleaseFile == "" {
		cfg.ReleaseFile = "/" + osimage.ReleaseFile
	}
	if cfg.CommitDeadline == 0 {
		cfg.CommitDeadline = 5 * time.Minute
	}
	if cfg.CommitInterval == 0 {
		cfg.CommitInterval = 10 * time.Second
	}
	if cfg.RebootDelay == 0 {
		cfg.RebootDelay = 3 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, state: newState(cfg.StateDir), log: cfg.Log}, nil
}

// Lock is the operation-queue key every slot change holds.
const Lock = "slots"

// Phases of an upgrade operation, in order.
var Phases = []string{"resolve", "verify", "write", "read-back", "activate", "reboot"}

// Progress is what an upgrade reports as it goes (the operation's phase
// and byte counts).
type Progress interface {
	Phase(name, message string)
	Bytes(done, total int64)
	Result(key, value string)
}

// Request is one upgrade.
type Request struct {
	Ref    string
	Reboot bool
	Force  bool
}

// booted returns the slot the running system booted from and whether GRUB
// marked it a fallback boot.
func (m *Manager) booted() (osimage.Slot, bool, error) {
	b, err := os.ReadFile(m.cfg.Cmdline)
	if err != nil {
		return "", false, fault.Errorf(fault.FailedPrecondition, "read the kernel command line: %w", err)
	}
	s := osimage.BootedSlot(string(b))
	if s == "" {
		return "", false, fault.Errorf(fault.FailedPrecondition, "this system was not booted from a DebVisor slot (no %s= on the kernel command line): it has no A/B slots to upgrade", osimage.CmdlineSlot)
	}
	fb, _ := osimage.CmdlineValue(string(b), osimage.CmdlineFallback)
	return osimage.Slot(s), fb == "1", nil
}

// bootedRelease reads the running slot's release file.
func (m *Manager) bootedRelease() (osimage.Release, error) {
	b, err := os.ReadFile(m.cfg.ReleaseFile)
	if err != nil {
		return osimage.Release{}, err
	}
	return osimage.ParseRelease(b)
}

// CheckRequest validates a request before an operation is started, so bad
// input is refused at once and changes nothing.
func (m *Manager) CheckRequest(r Request) error {
	if strings.TrimSpace(r.Ref) == "" {
		return fault.Invalidf("ref", "must name an OCI reference (registry/repository:tag or @sha256:digest)")
	}
	if strings.ContainsAny(r.Ref, " \t\n") {
		return fault.Invalidf("ref", "%q contains whitespace", r.Ref)
	}
	_, _, err := m.booted()
	return err
}

// compareVersions orders DebVisor versions ("0.2.0", "1.0.0-rc1") as
// semantic versions.
func compareVersions(a, b string) (int, error) {
	va, vb := "v"+strings.TrimPrefix(a, "v"), "v"+strings.TrimPrefix(b, "v")
	if !semver.IsValid(va) {
		return 0, fmt.Errorf("version %q is not a semantic version", a)
	}
	if !semver.IsValid(vb) {
		return 0, fmt.Errorf("version %q is not a semantic version", b)
	}
	return semver.Compare(va, vb), nil
}

// Upgrade writes the artifact ref resolves to into the inactive slot and
// makes it the next boot; see UpgradeService.Upgrade. Every refusal
// (signature, architecture, version, size) happens before the first byte
// reaches the slot.
func (m *Manager) Upgrade(ctx context.Context, r Request, p Progress) error {
	booted, _, err := m.booted()
	if err != nil {
		return err
	}
	target := booted.Other()

	p.Phase("resolve", "resolving "+r.Ref)
	art, err := m.cfg.Source.Resolve(ctx, r.Ref)
	if err != nil {
		return fault.Wrap(err, "resolve %s", r.Ref)
	}
	p.Result("digest", art.Digest)
	p.Result("version", art.Version)

	p.Phase("verify", fmt.Sprintf("signature verified; checking %s %s for slot %s", art.Version, art.Digest, target))
	if same, err := m.running(ctx, booted, art); err != nil {
		return err
	} else if same {
		// Declarative clients (Terraform) ask for the image the node
		// should run; it already does.
		_ = m.state.update(func(s map[osimage.Slot]slotRecord) {
			rec := s[booted]
			rec.Digest, rec.Version, rec.Image = art.Digest, art.Version, r.Ref
			if rec.Ref == "" {
				rec.Ref = art.Ref
			}
			s[booted] = rec
		})
		p.Result("outcome", "already-running")
		p.Result("slot", string(booted))
		p.Phase("reboot", "slot "+string(booted)+" already runs "+art.Digest+": nothing to do")
		return nil
	}
	if err := m.verify(art, r.Force, target); err != nil {
		return err
	}

	p.Phase("write", fmt.Sprintf("writing %s (%d bytes) into slot %s", art.Digest, art.Size, target))
	// The record is keyed by the new digest: whatever an earlier attempt
	// left (a failure, a stale result) is gone before the slot changes.
	if err := m.state.update(func(s map[osimage.Slot]slotRecord) {
		s[target] = slotRecord{Digest: art.Digest, Version: art.Version, Ref: art.Ref, Image: r.Ref, Result: ResultWriting, Time: m.cfg.Now()}
	}); err != nil {
		return fault.Errorf(fault.Internal, "record the upgrade: %w", err)
	}
	if err := m.write(ctx, art, target, p); err != nil {
		_ = m.state.update(func(s map[osimage.Slot]slotRecord) {
			rec := s[target]
			rec.Result, rec.Reason, rec.Time = ResultWriteFailed, err.Error(), m.cfg.Now()
			s[target] = rec
		})
		return err
	}

	p.Phase("activate", fmt.Sprintf("slot %s is the next boot", target))
	m.mu.Lock()
	_, err = m.cfg.Env.Update(ctx, func(e *bootenv.Env) error { e.Activate(target); e.ClearOnce(); return nil })
	m.mu.Unlock()
	if err != nil {
		return fault.Errorf(fault.Internal, "activate slot %s: %w", target, err)
	}
	if err := m.state.update(func(s map[osimage.Slot]slotRecord) {
		rec := s[target]
		rec.Result, rec.Reason, rec.Time = ResultStaged, "", m.cfg.Now()
		s[target] = rec
	}); err != nil {
		return fault.Errorf(fault.Internal, "record the upgrade: %w", err)
	}
	p.Result("slot", string(target))

	if !r.Reboot {
		p.Phase("reboot", "staged: slot "+string(target)+" boots at the next reboot")
		return nil
	}
	p.Phase("reboot", fmt.Sprintf("rebooting into slot %s in %s", target, m.cfg.RebootDelay))
	m.rebootSoon()
	return nil
}

// running reports whether the booted slot holds exactly art: its record
// says so, or (a slot an installer wrote) its first art.Size bytes hash to
// art's digest.
func (m *Manager) running(ctx context.Context, booted osimage.Slot, art *Artifact) (bool, error) {
	if rec := m.state.get(booted); rec.Digest != "" {
		return rec.Digest == art.Digest, nil
	}
	// Another version cannot be the same bytes: no need to hash the slot
	// (seconds per GiB, minutes under emulation).
	if rel, err := m.bootedRelease(); err == nil && rel.Version != "" && art.Version != "" && rel.Version != art.Version {
		return false, nil
	}
	f, err := os.Open(m.cfg.Devices[booted])
	if err != nil {
		return false, fault.Errorf(fault.FailedPrecondition, "read the booted slot %s: %w", booted, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(&ctxReader{ctx: ctx, r: f}, art.Size))
	if err != nil {
		return false, fault.Wrap(err, "hash the booted slot %s", booted)
	}
	return n == art.Size && "sha256:"+hex.EncodeToString(h.Sum(nil)) == art.Digest, nil
}

// ctxReader stops a long read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// verify refuses an artifact that does not fit this node, before any write.
func (m *Manager) verify(art *Artifact, force bool, target osimage.Slot) error {
	if art.Arch != osimage.Arch {
		return fault.Errorf(fault.FailedPrecondition, "the image is for architecture %q; this node runs %s", art.Arch, osimage.Arch)
	}
	if !strings.HasPrefix(art.Digest, "sha256:") || art.Size <= 0 {
		return fault.Errorf(fault.FailedPrecondition, "the artifact has no usable digest and size (%q, %d)", art.Digest, art.Size)
	}
	size, err := deviceSize(m.cfg.Devices[target])
	if err != nil {
		return fault.Errorf(fault.FailedPrecondition, "slot %s: %w", target, err)
	}
	if art.Size > size {
		return fault.Errorf(fault.FailedPrecondition, "the slot image is %d bytes; slot %s holds only %d", art.Size, target, size)
	}
	rel, err := m.bootedRelease()
	if err != nil {
		if !force {
			return fault.Errorf(fault.FailedPrecondition, "the booted version is unknown (%v): set force to install anyway", err)
		}
		return nil
	}
	cmp, err := compareVersions(art.Version, rel.Version)
	switch {
	case err != nil && !force:
		return fault.Errorf(fault.FailedPrecondition, "cannot compare versions: %v (set force to install anyway)", err)
	case err == nil && cmp < 0 && !force:
		return fault.Errorf(fault.FailedPrecondition, "%s is older than the booted %s: a downgrade needs force", art.Version, rel.Version)
	case err == nil && cmp == 0 && !force:
		return fault.Errorf(fault.FailedPrecondition, "%s is the version already booted: reinstalling it needs force", art.Version)
	}
	return nil
}

func deviceSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", path, err)
	}
	return n, nil
}

// write streams the blob into the target partition through the slot
// writer: marked not bootable first, bounded buffers, digest and size
// checked, fsync, read back.
func (m *Manager) write(ctx context.Context, art *Artifact, target osimage.Slot, p Progress) error {
	dev, err := os.OpenFile(m.cfg.Devices[target], os.O_RDWR, 0)
	if err != nil {
		return fault.Errorf(fault.FailedPrecondition, "open slot %s: %w", target, err)
	}
	defer dev.Close()
	size, err := dev.Seek(0, io.SeekEnd)
	if err != nil {
		return fault.Errorf(fault.FailedPrecondition, "size of slot %s: %w", target, err)
	}
	rc, err := art.Open(ctx)
	if err != nil {
		return fault.Wrap(err, "open %s", art.Digest)
	}
	defer rc.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	_, err = slotwriter.WriteSlot(ctx, m.cfg.Env, target, rc,
		slotwriter.Target{Device: dev, Size: size},
		slotwriter.WithExpectedSize(art.Size),
		slotwriter.WithExpectedDigest(art.Digest),
		slotwriter.WithLogger(m.log),
		slotwriter.WithProgress(func(n int64) { p.Bytes(n, art.Size) }),
		// The write phase ends when the image is on the disk (fsync), as
		// dd conv=fsync's does; reading it back is a phase of its own.
		slotwriter.WithReadBack(func() { p.Phase("read-back", fmt.Sprintf("reading slot %s back", target)) }))
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fault.Wrap(err, "write slot %s (it stays marked not bootable)", target)
		}
		return fault.Errorf(fault.FailedPrecondition, "write slot %s (it stays marked not bootable): %w", target, err)
	}
	return nil
}

func (m *Manager) rebootSoon() {
	go func() {
		time.Sleep(m.cfg.RebootDelay)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.cfg.Reboot(ctx); err != nil {
			m.log.Error("reboot", "err", err)
		}
	}()
}
