package upgrade

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/nodeagent/fault"
	"github.com/debvisor/debvisor/osimage"
)

// node is a DebVisor node in files: the ESP's environment copies, the two
// slot partitions, the kernel command line and the booted release.
type node struct {
	t       *testing.T
	dir     string
	env     *bootenv.Store
	devs    map[osimage.Slot]string
	cmdline string
	release string
	reboots int
	healthy bool
	why     string
	mu      sync.Mutex
}

const slotSize = 8 << 20

func newNode(t *testing.T, booted osimage.Slot, version string) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{t: t, dir: dir, devs: map[osimage.Slot]string{}, healthy: true,
		cmdline: filepath.Join(dir, "cmdline"), release: filepath.Join(dir, "release")}
	n.env = bootenv.NewStore(bootenv.DirFS{Root: filepath.Join(dir, "esp")})
	if err := n.env.Save(context.Background(), bootenv.New()); err != nil {
		t.Fatal(err)
	}
	for _, s := range osimage.Slots {
		p := filepath.Join(dir, "slot-"+string(s))
		if err := os.WriteFile(p, bytes.Repeat([]byte{s[0]}, slotSize), 0o600); err != nil {
			t.Fatal(err)
		}
		n.devs[s] = p
	}
	n.boot(booted, false)
	n.setRelease(version)
	return n
}

func (n *node) boot(s osimage.Slot, fallback bool) {
	fb := "0"
	if fallback {
		fb = "1"
	}
	if err := os.WriteFile(n.cmdline, []byte("root=PARTUUID=x ro debvisor.slot="+string(s)+" debvisor.fallback="+fb+" quiet\n"), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) setRelease(v string) {
	if err := os.WriteFile(n.release, osimage.Release{Version: v, Arch: osimage.Arch}.Marshal(), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// grubBoots does what GRUB does at a boot: decide, record, and boot.
func (n *node) grubBoots() bootenv.Boot {
	n.t.Helper()
	ctx := context.Background()
	e, err := n.env.Load(ctx)
	if err != nil {
		n.t.Fatal(err)
	}
	b := e.NextBoot()
	e.Booted(b)
	if err := n.env.Save(ctx, e); err != nil {
		n.t.Fatal(err)
	}
	n.boot(b.Slot, b.Fallback)
	return b
}

func (n *node) loadEnv() *bootenv.Env {
	n.t.Helper()
	e, err := n.env.Load(context.Background())
	if err != nil {
		n.t.Fatal(err)
	}
	return e
}

func (n *node) slotSum(s osimage.Slot) string {
	b, err := os.ReadFile(n.devs[s])
	if err != nil {
		n.t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// source serves artifacts by reference, as a registry after signature
// verification would; a test makes it fail or tamper with the stream.
type source struct {
	arts     map[string]*Artifact
	blobs    map[string][]byte
	resolveE error
	tamperAt int64 // flip a byte at this offset while streaming (0: never)
	stopAt   int64 // fail the stream at this offset (0: never)
	cancel   func()
}

func (s *source) Resolve(_ context.Context, ref string) (*Artifact, error) {
	if s.resolveE != nil {
		return nil, s.resolveE
	}
	a, ok := s.arts[ref]
	if !ok {
		return nil, fault.Errorf(fault.NotFound, "%s: manifest unknown", ref)
	}
	return a, nil
}

func (s *source) add(ref, version, arch string, size int) []byte {
	blob := make([]byte, size)
	_, _ = rand.Read(blob)
	sum := sha256.Sum256(blob)
	d := "sha256:" + hex.EncodeToString(sum[:])
	s.blobs[ref] = blob
	s.arts[ref] = &Artifact{Ref: ref, Digest: d, Size: int64(size), Version: version, Arch: arch,
		Open: func(context.Context) (io.ReadCloser, error) {
			return io.NopCloser(&streamer{s: s, data: blob}), nil
		}}
	return blob
}

type streamer struct {
	s    *source
	data []byte
	pos  int64
}

func (r *streamer) Read(p []byte) (int, error) {
	if r.pos >= int64(len(r.data)) {
		return 0, io.EOF
	}
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	if r.s.stopAt > 0 && r.pos >= r.s.stopAt {
		if r.s.cancel != nil {
			r.s.cancel()
			r.s.cancel = nil
			return 0, context.Canceled
		}
		return 0, errors.New("connection reset by peer")
	}
	n := copy(p, r.data[r.pos:])
	if r.s.tamperAt > 0 && r.s.tamperAt >= r.pos && r.s.tamperAt < r.pos+int64(n) {
		p[r.s.tamperAt-r.pos] ^= 0xff
	}
	r.pos += int64(n)
	return n, nil
}

func newManager(t *testing.T, n *node, src Source) *Manager {
	t.Helper()
	m, err := New(Config{
		Env: n.env, Devices: n.devs, StateDir: filepath.Join(n.dir, "state"), Cmdline: n.cmdline, ReleaseFile: n.release,
		Source: src,
		Health: func(context.Context) (bool, string) {
			n.mu.Lock()
			defer n.mu.Unlock()
			return n.healthy, n.why
		},
		Reboot:         func(context.Context) error { n.mu.Lock(); n.reboots++; n.mu.Unlock(); return nil },
		CommitDeadline: 200 * time.Millisecond, CommitInterval: 20 * time.Millisecond, RebootDelay: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type progress struct {
	phases []string
	last   int64
	result map[string]string
}

func (p *progress) Phase(name, _ string) { p.phases = append(p.phases, name) }
func (p *progress) Bytes(done, _ int64)  { p.last = done }
func (p *progress) Result(k, v string) {
	if p.result == nil {
		p.result = map[string]string{}
	}
	p.result[k] = v
}

func TestUpgradeWritesVerifiesAndActivates(t *testing.T) {
	n := newNode(t, osimage.SlotA, "0.1.0")
	n.grubBoots()
	src := &source{arts: map[string]*Artifact{}, blobs: map[string][]byte{}}
	blob := src.add("reg/os:0.2.0", "0.2.0", osimage.Arch, 3<<20+123)
	m := newManager(t, n, src)
	if err := m.Boot(context.Background()); err != nil { // commit the first boot
		t.Fatal(err)
	}
	var p progress
	if err := m.Upgrade(context.Background(), Request{Ref: "reg/os:0.2.0"}, &p); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.phases, ","); got != "resolve,verify,write,read-back,activate,reboot" {
		t.Errorf("phases = %s", got)
	}
	if p.last != int64(len(blob)) || p.result["slot"] != "B" || p.result["version"] != "0.2.0" {
		t.Errorf("progress %d, results %v", p.last, p.result)
	}
	got, err := os.ReadFile(n.devs[osimage.SlotB])
	if err != nil || !bytes.Equal(got[:len(blob)], blob) {
		t.Fatal("slot B does not hold the artifact")
	}
	e := n.loadEnv()
	if ok, tried := e.SlotState(osimage.SlotB); !ok || tried || e.Order()[0] != osimage.SlotB {
		t.Fatalf("env after upgrade: B ok=%v tried=%v order=%v", ok, tried, e.Order())
	}
	st, err := m.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b := st.Slots[1]
	if b.GetLastResult() != ResultStaged || b.GetVersion() != "0.2.0" || b.GetArtifactDigest() != src.arts["reg/os:0.2.0"].Digest || st.GetNextBoot() != "B" {
		t.Fatalf("status after staging: %v", st)
	}
	time.Sleep(50 * time.Millisecond)
	if n.reboots != 0 {
		t.Fatal("a staged upgrade rebooted")
	}

	// Reboot into B: GRUB tries it, B's agent commits it; A is kept.
	if bt := n.grubBoots(); bt.Slot != osimage.SlotB || bt.Fallback {
		t.Fatalf("GRUB booted %+v", bt)
	}
	n.setRelease("0.2.0")
	if err := m.Boot(context.Background()); err != nil {
		t.Fatal(err)
	}
	e = n.loadEnv()
	if c, _ := e.Committed(); c != osimage.SlotB {
		t.Fatalf("committed = %s", c)
	}
	if ok, tried := e.SlotState(osimage.SlotB); !ok || tried {
		t.Fatalf("B after commit ok=%v tried=%v", ok, tried)
	}
	if ok, _ := e.SlotState(osimage.SlotA); !ok {
		t.Fatal("A (the previous version) is no longer bootable")
	}
	// A later plain reboot boots B again, without fallback.
	if bt := n.grubBoots(); bt.Slot != osimage.SlotB || bt.Fallback {
		t.Fatalf("plain reboot booted %+v", bt)
	}
}

// TestRefusedBeforeAnyByte: every refusal leaves slot B's bytes and the
// environment exactly as they were.
func TestRefusedBeforeAnyByte(t *testing.T) {
	tests := []struct {
		name, ref string
		force     bool
		mutate    func(s *source)
		kind      fault.Kind
		want      string
	}{
		{"unsigned or bad signature", "reg/os:0.2.0", false, func(s *source) {
			s.resolveE = fault.Errorf(fault.FailedPrecondition, "no valid signature for reg/os:0.2.0 with the trusted keys")
		}, fault.FailedPrecondition, "no valid signature"},
		{"unreachable registry", "reg/os:0.2.0", false, func(s *source) {
			s.resolveE = fault.Errorf(fault.Unavailable, "dial tcp 127.0.0.1:1: connection refused")
		}, fault.Unavailable, "connection refused"},
		{"unknown reference", "reg/os:9.9.9", false, nil, fault.NotFound, "manifest unknown"},
		{"wrong architecture", "reg/os:arm", false, nil, fault.FailedPrecondition, `architecture "arm64"`},
		{"downgrade", "reg/os:0.0.9", false, nil, fault.FailedPrecondition, "older than the booted 0.1.0: a downgrade needs force"},
		{"same version", "reg/os:0.1.0", false, nil, fault.FailedPrecondition, "already booted"},
		{"too large for the slot", "reg/os:huge", false, nil, fault.FailedPrecondition, "holds only"},
		{"not a version", "reg/os:junk", false, nil, fault.FailedPrecondition, "not a semantic version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, osimage.SlotA, "0.1.0")
			n.grubBoots()
			src := &source{arts: map[string]*Artifact{}, blobs: map[string][]byte{}}
			src.add("reg/os:0.2.0", "0.2.0", osimage.Arch, 1<<20)
			src.add("reg/os:arm", "0.2.0", "arm64", 1<<20)
			src.add("reg/os:0.0.9", "0.0.9", osimage.Arch, 1<<20)
			src.add("reg/os:0.1.0", "0.1.0", osimage.Arch, 1<<20)
			src.add("reg/os:huge", "0.3.0", osimage.Arch, slotSize+1)
			src.add("reg/os:junk", "latest", osimage.Arch, 1<<20)
			if tt.mutate != nil {
				tt.mutate(src)
			}
			m := newManager(t, n, src)
			before, envBefore := n.slotSum(osimage.SlotB), n.loadEnv()
			err := m.Upgrade(context.Background(), Request{Ref: tt.ref, Force: tt.force}, &progress{})
			if err == nil || fault.KindOf(err) != tt.kind || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Upgrade = %v (kind %v), want %v containing %q", err, fault.KindOf(err), tt.kind, tt.want)
			}
			if n.slotSum(osimage.SlotB) != before {
				t.Fatal("slot B changed")
			}
			if !n.loadEnv().Equal(envBefore) {
				t.Fatal("the boot environment changed")
			}
		})
	}
	// force allows the downgrade.
	n := newNode(t, osimage.SlotA, "0.1.0")
	n.grubBoots()
	src := &source{arts: map[string]*Artifact{}, blobs: map[string][]byte{}}
	src.add("reg/os:0.0.9", "0.0.9", osimage.Arch, 1<<20)
	if err := newManager(t, n, src).Upgrade(context.Background(), Request{Ref: "reg/os:0.0.9", Force: true}, &progress{}); err != nil {
		t.Fatalf("forced downgrade: %v", err)
	}
}

// TestInterruptedOrTamperedWriteLeavesSlotNotBootable: a stream that is
// tampered with, cut, or cancelled half-way never leaves a bootable
// half-written slot, and the record says why.
func TestInterruptedOrTamperedWriteLeavesSlotNotBootable(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(s *source, cancel func())
		want string
	}{
		{"tampered blob", func(s *source, _ func()) { s.tamperAt = 1<<20 + 7 }, "digest"},
		{"connection reset", func(s *source, _ func()) { s.stopAt = 1 << 20 }, "connection reset"},
		{"cancelled", func(s *source, cancel func()) { s.stopAt = 1 << 20; s.cancel = cancel }, "canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, osimage.SlotA, "0.1.0")
			n.grubBoots()
			src := &source{arts: map[string]*Artifact{}, blobs: map[string][]byte{}}
			src.add("reg/os:0.2.0", "0.2.0", osimage.Arch, 3<<20)
			m := newManager(t, n, src)
			must(t, m.Boot(context.Background()))
			// B held an older good image before this attempt.
			if _, err := n.env.Update(context.Background(), func(e *bootenv.Env) error { e.SetSlot(osimage.SlotB, true, false); return nil }); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tc.set(src, cancel)
			err := m.Upgrade(ctx, Request{Ref: "reg/os:0.2.0"}, &progress{})
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.want) {
				t.Fatalf("Upgrade = %v, want an error about %q", err, tc.want)
			}
			e := n.loadEnv()
			if ok, _ := e.SlotState(osimage.SlotB); ok {
				t.Fatal("slot B is bootable after an interrupted write")
			}
			if nb := e.NextBoot(); nb.Slot != osimage.SlotA || nb.Fallback {
				t.Fatalf("next boot %+v, want A", nb)
			}
			st, err := m.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if b := st.Slots[1]; b.GetLastResult() != ResultWriteFailed || b.GetReason() == "" || b.GetBootable() {
				t.Fatalf("status of B: %v", b)
			}
		})
	}
}

func TestTrialBootFailingHealthRollsBack(t *testing.T) {
	n := newNode(t, osimage.SlotA, "0.1.0")
	n.grubBoots()
	src := &source{arts: map[string]*Artifact{}, blobs: map[string][]byte{}}
	src.add("reg/os:0.3.0", "0.3.0", osimage.Arch, 1<<20)
	m := newManager(t, n, src)
	must(t, m.Boot(context.Background()))
	must(t, m.Upgrade(context.Background(), Request{Ref: "reg/os:0.3.0"}, &progress{}))
	n.grubBoots() // into B
	n.setRelease("0.3.0")
	n.healthy, n.why = false, "libvirt: libvirtd does not answer"
	must(t, m.Boot(context.Background()))
	if n.reboots != 1 {
		t.Fatalf("reboots = %d, want 1 (roll back)", n.reboots)
	}
	// GRUB now boots A; A's agent (healthy) commits and keeps B's reason.
	if bt := n.grubBoots(); bt.Slot != osimage.SlotA || bt.Fallback {
		t.Fatalf("after the failed health check GRUB booted %+v", bt)
	}
	n.setRelease("0.1.0")
	n.healthy = true
	must(t, m.Boot(context.Background()))
	st, err := m.Status(context.Background())
	must(t, err)
	b := st.Slots[1]
	if b.GetBootable() || b.GetLastResult() != ResultHealthFailed || !strings.Contains(b.GetReason(), "libvirtd does not answer") {
		t.Fatalf("B after rollback: %v", b)
	}
	if a := st.Slots[0]; !a.GetCommitted() || !a.GetBooted() || a.GetLastResult() != ResultCommitted {
		t.Fatalf("A after rollback: %v", a)
	}
}

func TestHungOrPanickedSlotIsRecordedAsRolledBack(t *testing.T) {
	n := newNode(t, osimage.SlotA, "0.1.0")
	n.grubBoots()
	src := &source{arts: map[string]*Artifact{}, blobs: map[string][]byte{}}
	src.add("reg/os:0.4.0", "0.4.0", osimage.Arch, 1<<20)
	m := newManager(t, n, src)
	must(t, m.Boot(context.Background()))
	must(t, m.Upgrade(context.Background(), Request{Ref: "reg/os:0.4.0"}, &progress{}))
	n.grubBoots() // B: the kernel panics; no agent runs
	if bt := n.grubBoots(); bt.Slot != osimage.SlotA || bt.Fallback {
		t.Fatalf("after B panicked GRUB booted %+v, want A without fallback", bt)
	}
	must(t, m.Boot(context.Background()))
	st, err := m.Status(context.Background())
	must(t, err)
	b := st.Slots[1]
	if b.GetBootable() || b.GetLastResult() != ResultRolledBack || !strings.Contains(b.GetReason(), "never committed") {
		t.Fatalf("B: %v", b)
	}
	// Re-staging the same image starts a fresh record: the old failure is gone.
	must(t, m.Upgrade(context.Background(), Request{Ref: "reg/os:0.4.0"}, &progress{}))
	st, err = m.Status(context.Background())
	must(t, err)
	if b := st.Slots[1]; b.GetLastResult() != ResultStaged || b.GetReason() != "" || !b.GetBootable() || b.GetTried() {
		t.Fatalf("B re-staged: %v", b)
	}
}

func TestRollbackOnceAndPersistent(t *testing.T) {
	n := newNode(t, osimage.SlotA, "0.1.0")
	n.grubBoots()
	src := &source{arts: map[string]*Artifact{}, blobs: map[string][]byte{}}
	src.add("reg/os:0.2.0", "0.2.0", osimage.Arch, 1<<20)
	m := newManager(t, n, src)
	must(t, m.Boot(context.Background()))
	if err := m.Rollback(context.Background(), true); err == nil || fault.KindOf(err) != fault.FailedPrecondition {
		t.Fatalf("rollback with nothing in B = %v", err)
	}
	must(t, m.Upgrade(context.Background(), Request{Ref: "reg/os:0.2.0"}, &progress{}))
	n.grubBoots()
	n.setRelease("0.2.0")
	must(t, m.Boot(context.Background()))

	must(t, m.Rollback(context.Background(), true))
	st, err := m.Status(context.Background())
	must(t, err)
	if st.GetNextBoot() != "A" || !st.GetNextBootOnce() {
		t.Fatalf("once: %v", st)
	}
	if bt := n.grubBoots(); bt.Slot != osimage.SlotA || !bt.Once {
		t.Fatalf("one-shot boot %+v", bt)
	}
	n.setRelease("0.1.0")
	must(t, m.Boot(context.Background()))
	if bt := n.grubBoots(); bt.Slot != osimage.SlotB {
		t.Fatalf("the boot after the one-shot went to %+v, want B", bt)
	}
	n.setRelease("0.2.0")
	must(t, m.Boot(context.Background()))

	must(t, m.Rollback(context.Background(), false))
	for i := 0; i < 2; i++ {
		if bt := n.grubBoots(); bt.Slot != osimage.SlotA || bt.Fallback {
			t.Fatalf("persistent rollback boot %d: %+v", i, bt)
		}
		n.setRelease("0.1.0")
		must(t, m.Boot(context.Background()))
	}
}

func TestNotOnANode(t *testing.T) {
	n := newNode(t, osimage.SlotA, "0.1.0")
	must(t, os.WriteFile(n.cmdline, []byte("root=/dev/sda1 ro\n"), 0o644))
	m := newManager(t, n, &source{arts: map[string]*Artifact{}})
	if err := m.CheckRequest(Request{Ref: "reg/os:1"}); fault.KindOf(err) != fault.FailedPrecondition {
		t.Fatalf("CheckRequest = %v", err)
	}
	if err := m.CheckRequest(Request{Ref: ""}); err == nil {
		t.Fatal("empty ref accepted")
	}
	must(t, m.Boot(context.Background())) // does nothing, never fails the agent
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeToTheRunningImageIsANoOp: a declarative client asks for the
// image the node runs (after an upgrade, or as an installer wrote it):
// nothing is written, nothing reboots.
func TestUpgradeToTheRunningImageIsANoOp(t *testing.T) {
	n := newNode(t, osimage.SlotA, "0.1.0")
	n.grubBoots()
	src := &source{arts: map[string]*Artifact{}, blobs: map[string][]byte{}}
	installed := src.add("reg/os:0.1.0", "0.1.0", osimage.Arch, 1<<20+5)
	src.add("reg/os:0.2.0", "0.2.0", osimage.Arch, 1<<20)
	// The installer wrote 0.1.0 into slot A.
	f, err := os.OpenFile(n.devs[osimage.SlotA], os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt(installed, 0)
	must(t, err)
	must(t, f.Close())
	m := newManager(t, n, src)
	must(t, m.Boot(context.Background()))

	for _, step := range []struct{ ref, booted string }{{"reg/os:0.1.0", "A"}, {"reg/os:0.2.0", ""}, {"reg/os:0.2.0", "B"}} {
		if step.booted == "B" {
			n.grubBoots()
			n.setRelease("0.2.0")
			must(t, m.Boot(context.Background()))
		}
		before, envBefore := n.slotSum(osimage.SlotB), n.loadEnv()
		var p progress
		must(t, m.Upgrade(context.Background(), Request{Ref: step.ref, Reboot: true}, &p))
		if step.booted == "" {
			if p.result["outcome"] == "already-running" {
				t.Fatalf("%s was not installed: %v", step.ref, p.result)
			}
			continue
		}
		if p.result["outcome"] != "already-running" || p.result["slot"] != step.booted {
			t.Fatalf("%s on slot %s: results %v", step.ref, step.booted, p.result)
		}
		if n.slotSum(osimage.SlotB) != before || !n.loadEnv().Equal(envBefore) {
			t.Fatalf("%s: a no-op upgrade changed a slot or the environment", step.ref)
		}
		st, err := m.Status(context.Background())
		must(t, err)
		if s := st.Slots[map[string]int{"A": 0, "B": 1}[step.booted]]; s.GetImage() != step.ref {
			t.Fatalf("image of the booted slot = %q, want %q", s.GetImage(), step.ref)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if n.reboots != 1 {
		t.Fatalf("reboots = %d, want 1 (the real upgrade only)", n.reboots)
	}
}

// TestNewerVersionDoesNotHashTheBootedSlot: with no record of what the
// booted slot holds, an artifact of another version is not the running
// image, decided from the release file without reading the slot (which
// takes minutes under emulation); only the same version is hashed.
func TestNewerVersionDoesNotHashTheBootedSlot(t *testing.T) {
	n := newNode(t, osimage.SlotA, "0.1.0")
	n.grubBoots()
	src := &source{arts: map[string]*Artifact{}, blobs: map[string][]byte{}}
	src.add("reg/os:0.2.0", "0.2.0", osimage.Arch, 1<<20)
	// The booted slot cannot be read: hashing it would fail the upgrade.
	a := n.devs[osimage.SlotA]
	n.devs[osimage.SlotA] = a + ".gone"
	defer func() { n.devs[osimage.SlotA] = a }()
	m := newManager(t, n, src)
	if err := m.Upgrade(context.Background(), Request{Ref: "reg/os:0.2.0"}, &progress{}); err != nil {
		t.Fatalf("upgrade to a newer version read the booted slot: %v", err)
	}
	// The same version (a reinstall) must still be compared by content.
	src.add("reg/os:0.1.0", "0.1.0", osimage.Arch, 1<<20)
	err := m.Upgrade(context.Background(), Request{Ref: "reg/os:0.1.0", Force: true}, &progress{})
	if err == nil || !strings.Contains(err.Error(), "booted slot") {
		t.Fatalf("same-version upgrade did not hash the booted slot: %v", err)
	}
}
