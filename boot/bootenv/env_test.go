package bootenv

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/debvisor/debvisor/osimage"
)

func TestRoundTrip(t *testing.T) {
	e := New()
	e.Set("custom", "kept")
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != BlockSize || !bytes.HasPrefix(b, []byte("# GRUB Environment Block\n")) {
		t.Fatalf("bad block: %q", b[:64])
	}
	want := "# GRUB Environment Block\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\nCOMMITTED=A\nCOMMITTED_PART=gpt2\nORDER=A B\ncustom=kept\n#"
	if !bytes.HasPrefix(b, []byte(want)) {
		t.Fatalf("block = %q, want prefix %q", b[:len(want)], want)
	}
	e2, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if e2.Get("custom") != "kept" || e2.Get(VarOrder) != "A B" {
		t.Fatalf("round trip lost variables: %v", e2.vars)
	}
}

func TestNextBoot(t *testing.T) {
	A, B := osimage.SlotA, osimage.SlotB
	tests := []struct {
		name         string
		order        []osimage.Slot
		aOK, aTry    bool
		bOK, bTry    bool
		want         osimage.Slot
		wantFallback bool
	}{
		{"fresh image", []osimage.Slot{A, B}, true, false, false, false, A, false},
		{"B upgraded and preferred", []osimage.Slot{B, A}, true, false, true, false, B, false},
		{"B tried without commit falls back to A", []osimage.Slot{B, A}, true, false, true, true, A, false},
		{"all tried boots first OK", []osimage.Slot{A, B}, true, true, false, false, A, true},
		{"nothing bootable", []osimage.Slot{A, B}, false, false, false, false, A, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New()
			e.SetOrder(tt.order)
			e.SetSlot(A, tt.aOK, tt.aTry)
			e.SetSlot(B, tt.bOK, tt.bTry)
			got := e.NextBoot()
			if got.Slot != tt.want || got.Fallback != tt.wantFallback || got.Once {
				t.Fatalf("NextBoot = %+v want %s, fallback %v", got, tt.want, tt.wantFallback)
			}
		})
	}
}

// TestNextBootOnceAndCommitted covers the one-shot request and the last
// committed slot GRUB falls back to, and what GRUB writes when it boots.
func TestNextBootOnceAndCommitted(t *testing.T) {
	A, B := osimage.SlotA, osimage.SlotB
	tests := []struct {
		name      string
		setup     func(e *Env)
		want      Boot
		wantAfter map[string]string // variables after GRUB booted it
	}{
		{"once B overrides ORDER", func(e *Env) { e.Activate(B); e.Commit(B); e.Commit(A); e.SetOrder([]osimage.Slot{A, B}); e.SetOnce(B) },
			Boot{Slot: B, Once: true}, map[string]string{"ONCE": "", "B_TRY": "1", "A_TRY": "0", "ORDER": "A B"}},
		{"once for a slot that is not bootable is ignored and consumed", func(e *Env) { e.SetOnce(B) },
			Boot{Slot: A}, map[string]string{"ONCE": "", "A_TRY": "1"}},
		{"fallback boots the last committed slot, not ORDER's first", func(e *Env) {
			e.Activate(B)
			e.SetSlot(B, true, true)
			e.SetSlot(A, true, true) // A booted since its commit too
		}, Boot{Slot: A, Fallback: true}, map[string]string{"A_TRY": "1", "B_TRY": "0", "B_OK": "1"}},
		{"fallback with B committed", func(e *Env) {
			e.Activate(B)
			e.Commit(B)
			e.SetSlot(A, true, true)
			e.SetSlot(B, true, true)
			e.SetOrder([]osimage.Slot{A, B})
		}, Boot{Slot: B, Fallback: true}, map[string]string{"B_TRY": "1", "A_TRY": "0"}},
		{"committed slot no longer bootable: first bootable", func(e *Env) {
			e.Activate(B)
			e.SetSlot(B, true, true)
			e.MarkNotBootable(A)
		}, Boot{Slot: B, Fallback: true}, map[string]string{"B_TRY": "1", "A_OK": "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New()
			tt.setup(e)
			got := e.NextBoot()
			if got != tt.want {
				t.Fatalf("NextBoot = %+v, want %+v", got, tt.want)
			}
			e.Booted(got)
			for k, v := range tt.wantAfter {
				if e.Get(k) != v {
					t.Errorf("after the boot %s = %q, want %q", k, e.Get(k), v)
				}
			}
		})
	}
}

// TestTransitions walks an upgrade of B and its commit, and a failed one,
// through the helpers, checking the variables and GRUB's next choice.
func TestTransitions(t *testing.T) {
	A, B := osimage.SlotA, osimage.SlotB
	tests := []struct {
		name         string
		steps        func(e *Env)
		wantVars     map[string]string
		wantNext     osimage.Slot
		wantFallback bool
	}{
		{"writing B", func(e *Env) { e.MarkNotBootable(B) },
			map[string]string{"ORDER": "A B", "A_OK": "1", "A_TRY": "0", "B_OK": "0", "B_TRY": "0"}, A, false},
		{"B written and activated", func(e *Env) { e.MarkNotBootable(B); e.Activate(B) },
			map[string]string{"ORDER": "B A", "A_OK": "1", "A_TRY": "0", "B_OK": "1", "B_TRY": "0"}, B, false},
		{"B booted once, not committed: back to A", func(e *Env) { e.Activate(B); e.SetSlot(B, true, true) },
			map[string]string{"ORDER": "B A", "B_OK": "1", "B_TRY": "1"}, A, false},
		{"B booted and committed", func(e *Env) { e.Activate(B); e.SetSlot(B, true, true); e.Commit(B) },
			map[string]string{"ORDER": "B A", "B_OK": "1", "B_TRY": "0"}, B, false},
		{"rewriting the tried slot resets its counter", func(e *Env) { e.SetSlot(B, true, true); e.MarkNotBootable(B) },
			map[string]string{"B_OK": "0", "B_TRY": "0"}, A, false},
		{"A marked not bootable while the only one", func(e *Env) { e.MarkNotBootable(A) },
			map[string]string{"A_OK": "0"}, A, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New()
			tt.steps(e)
			for k, v := range tt.wantVars {
				if got := e.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if nb := e.NextBoot(); nb.Slot != tt.wantNext || nb.Fallback != tt.wantFallback {
				t.Errorf("NextBoot = %+v want %s, fallback %v", nb, tt.wantNext, tt.wantFallback)
			}
		})
	}
}

func TestReadCopies(t *testing.T) {
	good, _ := New().Marshal()
	other := New()
	other.SetSlot(osimage.SlotA, true, true)
	tried, _ := other.Marshal()
	damaged := bytes.Repeat([]byte{0}, BlockSize)
	tests := []struct {
		name                 string
		primary, backup      []byte
		wantPrimary, wantBak bool
		wantErr              bool
		wantATry             string
	}{
		{"both good", good, good, false, false, false, "0"},
		{"backup stale", tried, good, false, true, false, "1"},
		{"primary damaged", damaged, tried, true, false, false, "1"},
		{"backup truncated", good, good[:100], false, true, false, "0"},
		{"both damaged", damaged, nil, false, false, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ReadCopies(tt.primary, tt.backup)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				if !errors.Is(err, ErrBothDamaged) {
					t.Fatalf("error does not wrap ErrBothDamaged: %v", err)
				}
				return
			}
			if c.RepairPrimary != tt.wantPrimary || c.RepairBackup != tt.wantBak || c.Env.Get("A_TRY") != tt.wantATry {
				t.Fatalf("got %+v A_TRY=%s", c, c.Env.Get("A_TRY"))
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	e := New()
	e.Set("big", strings.Repeat("x", BlockSize))
	if _, err := e.Marshal(); err == nil {
		t.Fatal("oversized block accepted")
	}
}

func TestMarshalRefusesNames(t *testing.T) {
	for _, k := range []string{"", "#comment", "a=b", "a\nb"} {
		e := New()
		e.Set(k, "1")
		if _, err := e.Marshal(); err == nil {
			t.Errorf("Marshal accepted variable %q, which would not parse back", k)
		}
	}
	e := New()
	e.Set("x", "a\nb")
	if _, err := e.Marshal(); err == nil {
		t.Error("Marshal accepted a value with a newline")
	}
}

func TestParseRefuses(t *testing.T) {
	good, _ := New().Marshal()
	noName := bytes.Clone(good)
	copy(noName[len(blockHeader):], "=1\n")
	noEq := bytes.Clone(good)
	copy(noEq[len(blockHeader):], "A_OK\n")
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"short", good[:1023], "size 1023"},
		{"long", append(bytes.Clone(good), '#'), "size 1025"},
		{"no header", bytes.Repeat([]byte{'#'}, BlockSize), "header"},
		{"zeroed", make([]byte, BlockSize), "header"},
		{"empty name", noName, "malformed"},
		{"no equals sign", noEq, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse: %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// FuzzParseBootEnv: whatever Parse accepts, Marshal renders into a block
// that parses back to the same variables and renders identically again
// (the builder's reproducibility and the store's repair rely on that), and
// NextBoot always names a slot.
func FuzzParseBootEnv(f *testing.F) {
	good, _ := New().Marshal()
	f.Add(good)
	other := New()
	other.Activate(osimage.SlotB)
	other.Set("custom", "x=y")
	b, _ := other.Marshal()
	f.Add(b)
	f.Add(make([]byte, BlockSize))
	f.Add(append([]byte(blockHeader+"#comment\n=x\nA_OK\n"), bytes.Repeat([]byte{'#'}, BlockSize-len(blockHeader)-17)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		e, err := Parse(in)
		if err != nil {
			return
		}
		out, err := e.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed block: %v", err)
		}
		e2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse of Marshal output: %v\n%q", err, out)
		}
		if !e.Equal(e2) {
			t.Fatalf("round trip changed variables: %v -> %v", e.vars, e2.vars)
		}
		out2, err := e2.Marshal()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("Marshal not stable: %v", err)
		}
		if s := e.NextBoot().Slot; s != osimage.SlotA && s != osimage.SlotB {
			t.Fatalf("NextBoot = %q", s)
		}
	})
}

func TestRollbackAndMarkBad(t *testing.T) {
	A, B := osimage.SlotA, osimage.SlotB
	// B upgraded and committed; A is the previous version.
	e := New()
	e.Activate(B)
	e.Booted(e.NextBoot())
	e.Commit(B)

	once := e.Clone()
	if err := once.Rollback(B, true); err != nil {
		t.Fatal(err)
	}
	if nb := once.NextBoot(); nb.Slot != A || !nb.Once {
		t.Fatalf("once: next boot %+v, want A once", nb)
	}
	once.Booted(once.NextBoot())
	if nb := once.NextBoot(); nb.Slot != B || nb.Once {
		t.Fatalf("after the one-shot boot: next %+v, want B again", nb)
	}

	persistent := e.Clone()
	if err := persistent.Rollback(B, false); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		nb := persistent.NextBoot()
		if nb.Slot != A {
			t.Fatalf("persistent boot %d: %+v, want A", i, nb)
		}
		persistent.Booted(nb)
		persistent.Commit(A)
	}

	bad := e.Clone()
	bad.MarkBad(B)
	if nb := bad.NextBoot(); nb.Slot != A || nb.Fallback {
		t.Fatalf("after MarkBad(B): %+v", nb)
	}
	if err := bad.Rollback(A, false); err == nil || !strings.Contains(err.Error(), "holds no bootable system") {
		t.Fatalf("rollback to a bad slot: %v", err)
	}
}
