package osimage

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// GRUB's environment block: a 1024-byte file starting with this header,
// "KEY=VALUE\n" lines, padded with '#'. GRUB's save_env only rewrites a file
// of exactly this size in place, so the size never changes.
const (
	EnvBlockSize   = 1024
	envBlockHeader = "# GRUB Environment Block\n"
)

// Boot-counting variables (RAUC-style). GRUB boots the first slot in ORDER
// with <S>_OK=1 and <S>_TRY=0, setting <S>_TRY=1 first; the agent clears
// <S>_TRY after the health check ("commit").
const (
	EnvOrder = "ORDER"
)

// EnvOK and EnvTry name a slot's variables: A_OK, A_TRY.
func EnvOK(s Slot) string  { return string(s) + "_OK" }
func EnvTry(s Slot) string { return string(s) + "_TRY" }

// BootEnv is a parsed environment block. Unknown variables are kept so a
// rewrite never loses what someone else stored.
type BootEnv struct {
	vars map[string]string
}

// NewBootEnv returns the state of a freshly built image: slot A bootable
// and untried, slot B empty.
func NewBootEnv() *BootEnv {
	e := &BootEnv{vars: map[string]string{}}
	e.SetOrder([]Slot{SlotA, SlotB})
	e.SetSlot(SlotA, true, false)
	e.SetSlot(SlotB, false, false)
	return e
}

// ParseBootEnv parses a GRUB environment block, refusing anything GRUB
// itself would refuse (wrong size or header).
func ParseBootEnv(b []byte) (*BootEnv, error) {
	if len(b) != EnvBlockSize {
		return nil, fmt.Errorf("grubenv: size %d, want %d", len(b), EnvBlockSize)
	}
	if !bytes.HasPrefix(b, []byte(envBlockHeader)) {
		return nil, errors.New("grubenv: missing header")
	}
	e := &BootEnv{vars: map[string]string{}}
	for _, line := range strings.Split(string(b[len(envBlockHeader):]), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("grubenv: malformed line %q", line)
		}
		e.vars[k] = v
	}
	return e, nil
}

// Marshal renders the block, variables sorted so equal states give equal
// bytes (reproducible images).
func (e *BootEnv) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(envBlockHeader)
	keys := make([]string, 0, len(e.vars))
	for k := range e.vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := e.vars[k]
		if strings.ContainsAny(k, "=\n") || strings.Contains(v, "\n") {
			return nil, fmt.Errorf("grubenv: invalid variable %q", k)
		}
		fmt.Fprintf(&buf, "%s=%s\n", k, v)
	}
	if buf.Len() > EnvBlockSize {
		return nil, fmt.Errorf("grubenv: %d bytes of variables exceed the %d-byte block", buf.Len(), EnvBlockSize)
	}
	buf.Write(bytes.Repeat([]byte{'#'}, EnvBlockSize-buf.Len()))
	return buf.Bytes(), nil
}

// Get returns a raw variable.
func (e *BootEnv) Get(k string) string { return e.vars[k] }

// Set stores a raw variable.
func (e *BootEnv) Set(k, v string) { e.vars[k] = v }

// Order returns the slots in boot preference order; unknown names are
// dropped, a missing ORDER means "A B".
func (e *BootEnv) Order() []Slot {
	var out []Slot
	for _, f := range strings.Fields(e.vars[EnvOrder]) {
		if s, err := ParseSlot(f); err == nil {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return []Slot{SlotA, SlotB}
	}
	return out
}

// SetOrder stores the boot preference order.
func (e *BootEnv) SetOrder(order []Slot) {
	names := make([]string, len(order))
	for i, s := range order {
		names[i] = string(s)
	}
	e.vars[EnvOrder] = strings.Join(names, " ")
}

// SlotState reports a slot's counters.
func (e *BootEnv) SlotState(s Slot) (ok, tried bool) {
	return e.vars[EnvOK(s)] == "1", e.vars[EnvTry(s)] == "1"
}

// SetSlot stores a slot's counters.
func (e *BootEnv) SetSlot(s Slot, ok, tried bool) {
	e.vars[EnvOK(s)] = boolVar(ok)
	e.vars[EnvTry(s)] = boolVar(tried)
}

// NextBoot mirrors the decision grub.cfg makes, so the agent and the tests
// can predict it: the first slot in ORDER that is OK and untried; failing
// that, the first OK slot (fallback=true); failing that, A.
func (e *BootEnv) NextBoot() (slot Slot, fallback bool) {
	for _, s := range e.Order() {
		if ok, tried := e.SlotState(s); ok && !tried {
			return s, false
		}
	}
	for _, s := range e.Order() {
		if ok, _ := e.SlotState(s); ok {
			return s, true
		}
	}
	return SlotA, true
}

func boolVar(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// EnvCopies is the outcome of reading both grubenv copies.
type EnvCopies struct {
	Env *BootEnv
	// RepairPrimary / RepairBackup say which copy is damaged or stale and
	// must be rewritten from Env.
	RepairPrimary, RepairBackup bool
}

// ReadBootEnvCopies picks the environment from the two copies. The primary
// wins when both parse (GRUB writes it first); a damaged copy is flagged for
// repair from the other. Both damaged is an error.
func ReadBootEnvCopies(primary, backup []byte) (EnvCopies, error) {
	p, perr := ParseBootEnv(primary)
	b, berr := ParseBootEnv(backup)
	switch {
	case perr == nil && berr == nil:
		return EnvCopies{Env: p, RepairBackup: !bytes.Equal(primary, backup)}, nil
	case perr == nil:
		return EnvCopies{Env: p, RepairBackup: true}, nil
	case berr == nil:
		return EnvCopies{Env: b, RepairPrimary: true}, nil
	}
	return EnvCopies{}, fmt.Errorf("both grubenv copies are damaged: primary: %w; backup: %w", perr, berr)
}
