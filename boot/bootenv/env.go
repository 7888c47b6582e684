// Package bootenv owns GRUB's environment block as DebVisor uses it for A/B
// boot counting: the 1024-byte block format (Env), the decision GRUB makes
// from it (Env.NextBoot, the same rule as templates/grub/grub.cfg.tmpl), the
// slot transitions an upgrade needs, and the two copies on the ESP
// (grub/grubenv and grub/grubenv.bak) with their repair (Store). The image
// builder, the node agent, installers and an emergency CLI all read and
// write the environment through this package.
package bootenv

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/debvisor/debvisor/osimage"
)

// GRUB's environment block: a 1024-byte file starting with this header,
// "KEY=VALUE\n" lines, padded with '#'. GRUB's save_env only rewrites a file
// of exactly this size in place, so the size never changes.
const (
	BlockSize   = 1024
	blockHeader = "# GRUB Environment Block\n"
)

// VarOrder names the boot preference order ("A B"). Boot counting is
// RAUC-style: GRUB boots the first slot in ORDER with <S>_OK=1 and
// <S>_TRY=0, setting <S>_TRY=1 first; the agent clears <S>_TRY after the
// health check ("commit").
const VarOrder = "ORDER"

// VarOnce asks GRUB to boot a slot once ("B"), at the next boot only:
// GRUB clears it before booting (`dvctl rollback --once`).
const VarOnce = "ONCE"

// VarCommitted names the slot whose boot the agent last committed: the
// one GRUB boots when no slot has a try left. VarCommittedPart is its GPT
// partition ("gpt2"): the GRUB image's embedded config, which has no
// conditionals, boots it by that name when grub.cfg itself is unreadable.
const (
	VarCommitted     = "COMMITTED"
	VarCommittedPart = "COMMITTED_PART"
)

// OKVar and TryVar name a slot's variables: A_OK, A_TRY.
func OKVar(s osimage.Slot) string  { return string(s) + "_OK" }
func TryVar(s osimage.Slot) string { return string(s) + "_TRY" }

// Env is a parsed environment block. Unknown variables are kept so a
// rewrite never loses what someone else stored.
type Env struct {
	vars map[string]string
}

// New returns the state of a freshly built image: slot A bootable and
// untried, slot B empty. Its first boot is tried and committed like any
// other.
func New() *Env {
	e := &Env{vars: map[string]string{}}
	e.SetOrder([]osimage.Slot{osimage.SlotA, osimage.SlotB})
	e.SetSlot(osimage.SlotA, true, false)
	e.SetSlot(osimage.SlotB, false, false)
	e.vars[VarCommitted] = string(osimage.SlotA)
	e.vars[VarCommittedPart] = partName(osimage.SlotA)
	return e
}

func partName(s osimage.Slot) string { return fmt.Sprintf("gpt%d", s.Partition()) }

// Parse parses a GRUB environment block, refusing anything GRUB itself
// would refuse (wrong size or header) and lines without a variable name.
func Parse(b []byte) (*Env, error) {
	if len(b) != BlockSize {
		return nil, fmt.Errorf("grubenv: size %d, want %d", len(b), BlockSize)
	}
	if !bytes.HasPrefix(b, []byte(blockHeader)) {
		return nil, errors.New("grubenv: missing header")
	}
	e := &Env{vars: map[string]string{}}
	for _, line := range strings.Split(string(b[len(blockHeader):]), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("grubenv: malformed line %q", line)
		}
		e.vars[k] = v
	}
	return e, nil
}

// Marshal renders the block, variables sorted so equal states give equal
// bytes (reproducible images).
func (e *Env) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(blockHeader)
	for _, k := range e.Names() {
		v := e.vars[k]
		if k == "" || k[0] == '#' || strings.ContainsAny(k, "=\n") || strings.Contains(v, "\n") {
			return nil, fmt.Errorf("grubenv: invalid variable %q", k)
		}
		fmt.Fprintf(&buf, "%s=%s\n", k, v)
	}
	if buf.Len() > BlockSize {
		return nil, fmt.Errorf("grubenv: %d bytes of variables exceed the %d-byte block", buf.Len(), BlockSize)
	}
	buf.Write(bytes.Repeat([]byte{'#'}, BlockSize-buf.Len()))
	return buf.Bytes(), nil
}

// Names returns the variable names, sorted.
func (e *Env) Names() []string {
	keys := make([]string, 0, len(e.vars))
	for k := range e.vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Equal reports whether both hold the same variables.
func (e *Env) Equal(o *Env) bool {
	if len(e.vars) != len(o.vars) {
		return false
	}
	for k, v := range e.vars {
		if ov, ok := o.vars[k]; !ok || ov != v {
			return false
		}
	}
	return true
}

// Clone returns an independent copy.
func (e *Env) Clone() *Env {
	c := &Env{vars: make(map[string]string, len(e.vars))}
	for k, v := range e.vars {
		c.vars[k] = v
	}
	return c
}

// Get returns a raw variable.
func (e *Env) Get(k string) string { return e.vars[k] }

// Set stores a raw variable.
func (e *Env) Set(k, v string) { e.vars[k] = v }

// Order returns the slots in boot preference order; unknown names are
// dropped, a missing ORDER means "A B".
func (e *Env) Order() []osimage.Slot {
	var out []osimage.Slot
	for _, f := range strings.Fields(e.vars[VarOrder]) {
		if s, err := osimage.ParseSlot(f); err == nil {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return []osimage.Slot{osimage.SlotA, osimage.SlotB}
	}
	return out
}

// SetOrder stores the boot preference order.
func (e *Env) SetOrder(order []osimage.Slot) {
	names := make([]string, len(order))
	for i, s := range order {
		names[i] = string(s)
	}
	e.vars[VarOrder] = strings.Join(names, " ")
}

// SlotState reports a slot's counters.
func (e *Env) SlotState(s osimage.Slot) (ok, tried bool) {
	return e.vars[OKVar(s)] == "1", e.vars[TryVar(s)] == "1"
}

// SetSlot stores a slot's counters.
func (e *Env) SetSlot(s osimage.Slot, ok, tried bool) {
	e.vars[OKVar(s)] = boolVar(ok)
	e.vars[TryVar(s)] = boolVar(tried)
}

// MarkNotBootable is the first step of writing a slot: <S>_OK=0 and its
// counter reset, so neither GRUB nor a fallback boot ever picks a slot whose
// contents are being replaced.
func (e *Env) MarkNotBootable(s osimage.Slot) { e.SetSlot(s, false, false) }

// Activate makes a verified slot the next boot: <S>_OK=1, <S>_TRY=0 and S
// first in ORDER (the other slot keeps its state, so GRUB falls back to it
// if S never commits).
func (e *Env) Activate(s osimage.Slot) {
	e.SetSlot(s, true, false)
	e.SetOrder([]osimage.Slot{s, s.Other()})
}

// Commit records that a boot of s passed the health check: <S>_OK=1,
// <S>_TRY=0, and s is the last committed slot; ORDER is left alone.
func (e *Env) Commit(s osimage.Slot) {
	e.SetSlot(s, true, false)
	e.vars[VarCommitted] = string(s)
	e.vars[VarCommittedPart] = partName(s)
}

// Committed returns the last committed slot, if any.
func (e *Env) Committed() (osimage.Slot, bool) {
	s, err := osimage.ParseSlot(e.vars[VarCommitted])
	return s, err == nil && e.vars[VarCommitted] != ""
}

// SetOnce asks GRUB to boot s at the next boot only.
func (e *Env) SetOnce(s osimage.Slot) { e.vars[VarOnce] = string(s) }

// Once returns the slot requested for the next boot only, if any.
func (e *Env) Once() (osimage.Slot, bool) {
	v := e.vars[VarOnce]
	s, err := osimage.ParseSlot(v)
	return s, err == nil && v != ""
}

// ClearOnce drops a one-shot request.
func (e *Env) ClearOnce() { delete(e.vars, VarOnce) }

// Boot is what GRUB decides from an environment.
type Boot struct {
	Slot osimage.Slot
	// Once: a one-shot request picked it.
	Once bool
	// Fallback: no slot had a try left, so GRUB reset the bootable slots'
	// counters and booted the last committed one (else the first bootable
	// one, else A): a headless node never stops at a grub> prompt.
	Fallback bool
}

// NextBoot mirrors the decision grub.cfg makes, so the agent, dvctl and the
// tests can predict it:
//
//  1. a one-shot request (ONCE) for a bootable slot;
//  2. else the first slot in ORDER that is bootable and untried;
//  3. else (fallback) the last committed slot if bootable, else the first
//     bootable slot in ORDER, else A.
func (e *Env) NextBoot() Boot {
	if s, ok := e.Once(); ok {
		if bootable, _ := e.SlotState(s); bootable {
			return Boot{Slot: s, Once: true}
		}
	}
	for _, s := range e.Order() {
		if ok, tried := e.SlotState(s); ok && !tried {
			return Boot{Slot: s}
		}
	}
	if s, ok := e.Committed(); ok {
		if bootable, _ := e.SlotState(s); bootable {
			return Boot{Slot: s, Fallback: true}
		}
	}
	for _, s := range e.Order() {
		if ok, _ := e.SlotState(s); ok {
			return Boot{Slot: s, Fallback: true}
		}
	}
	return Boot{Slot: osimage.SlotA, Fallback: true}
}

// Booted applies GRUB's own writes for a boot it decided (b = NextBoot()):
// the one-shot request is consumed, a fallback resets every bootable
// slot's counter, and the booted slot is marked tried. Tests and the
// emergency tools use it to predict the environment after a boot.
func (e *Env) Booted(b Boot) {
	e.ClearOnce()
	if b.Fallback {
		for _, s := range osimage.Slots {
			if ok, _ := e.SlotState(s); ok {
				e.SetSlot(s, true, false)
			}
		}
	}
	ok, _ := e.SlotState(b.Slot)
	e.SetSlot(b.Slot, ok, true)
}

func boolVar(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Copies is the outcome of reading both grubenv copies.
type Copies struct {
	Env *Env
	// Good is the copy Env was parsed from, byte for byte: what a damaged or
	// stale copy is repaired with.
	Good []byte
	// RepairPrimary / RepairBackup say which copy is damaged or stale and
	// must be rewritten from Env.
	RepairPrimary, RepairBackup bool
	// PrimaryErr and BackupErr say why a copy is not good (nil when it
	// is): it does not parse, or its padding is torn, or it could not be
	// read.
	PrimaryErr, BackupErr error
}

// ErrBothDamaged is returned (wrapped) when neither copy parses.
var ErrBothDamaged = errors.New("both grubenv copies are damaged")

// ReadCopies picks the environment from the two copies. A copy is good
// when it parses and ends the way every writer (GRUB, grub-editenv,
// Marshal) ends a block: the last line break followed by nothing but '#'
// padding. A copy that parses but has anything else in its padding was torn
// by an interrupted in-place write, and is used only when no good copy
// exists (GRUB would read it too).
//
// When both are good the primary wins: grub.cfg, and Store.Save whenever
// the backup is intact, write a change to the primary before the backup, so
// a differing backup is the one an interrupted write left behind. The copy
// not picked is flagged for repair whenever its bytes differ. Neither copy
// parsing is an error wrapping ErrBothDamaged.
func ReadCopies(primary, backup []byte) (Copies, error) {
	p, perr := readCopy(primary)
	b, berr := readCopy(backup)
	c := Copies{PrimaryErr: perr, BackupErr: berr}
	switch {
	case perr == nil:
		c.Env, c.Good = p, primary
	case berr == nil:
		c.Env, c.Good = b, backup
	case p != nil:
		c.Env, c.Good = p, primary
	case b != nil:
		c.Env, c.Good = b, backup
	default:
		return c, fmt.Errorf("%w: primary: %w; backup: %w", ErrBothDamaged, perr, berr)
	}
	c.RepairPrimary = !bytes.Equal(primary, c.Good)
	c.RepairBackup = !bytes.Equal(backup, c.Good)
	return c, nil
}

// readCopy parses one copy. It returns the environment whenever the block
// parses, and an error when it does not or when its padding is torn.
func readCopy(b []byte) (*Env, error) {
	e, err := Parse(b)
	if err != nil {
		return nil, err
	}
	tail := b[bytes.LastIndexByte(b, '\n')+1:]
	if len(bytes.Trim(tail, "#")) != 0 {
		return e, errors.New("grubenv: torn write (the padding after the variables holds other bytes)")
	}
	return e, nil
}

// Rollback makes GRUB boot the slot other than booted: at the next boot
// only (once), or from now on (the other slot becomes first in ORDER, with
// a fresh try). The other slot must hold a bootable system.
func (e *Env) Rollback(booted osimage.Slot, once bool) error {
	other := booted.Other()
	if ok, _ := e.SlotState(other); !ok {
		return fmt.Errorf("slot %s holds no bootable system (%s=0): there is nothing to roll back to", other, OKVar(other))
	}
	if once {
		e.SetOnce(other)
		return nil
	}
	e.ClearOnce()
	e.SetSlot(other, true, false)
	e.SetOrder([]osimage.Slot{other, booted})
	return nil
}

// MarkBad records that s failed (its boot never committed, or its health
// check failed): not bootable, and the other slot first in ORDER so GRUB
// boots it.
func (e *Env) MarkBad(s osimage.Slot) {
	e.SetSlot(s, false, false)
	e.SetOrder([]osimage.Slot{s.Other(), s})
}
