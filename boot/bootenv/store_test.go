package bootenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/debvisor/debvisor/osimage"
)

// memFS is an in-memory FS that can simulate a power cut: the write
// numbered crashAt (counting from 1) lands only its first tornBytes and then
// fails, and every later write fails without landing.
type memFS struct {
	files     map[string][]byte
	writes    int
	crashAt   int
	tornBytes int
}

func newMemFS() *memFS { return &memFS{files: map[string][]byte{}} }

func (m *memFS) ReadFile(_ context.Context, name string) ([]byte, error) {
	b, ok := m.files[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	return bytes.Clone(b), nil
}

var errPowerCut = errors.New("power cut")

func (m *memFS) WriteFile(_ context.Context, name string, data []byte) error {
	m.writes++
	switch {
	case m.crashAt == 0 || m.writes < m.crashAt:
		m.files[name] = bytes.Clone(data)
		return nil
	case m.writes == m.crashAt:
		// In place: the first tornBytes are new, the rest is what was there.
		old := m.files[name]
		torn := make([]byte, max(len(old), len(data)))
		copy(torn, old)
		copy(torn, data[:min(m.tornBytes, len(data))])
		m.files[name] = torn[:len(data)]
	}
	return errPowerCut
}

// fsUnderTest runs a test against the in-memory FS and a real directory.
func fsUnderTest(t *testing.T, run func(t *testing.T, fsys FS, raw func(name string, data []byte))) {
	t.Run("mem", func(t *testing.T) {
		m := newMemFS()
		run(t, m, func(name string, data []byte) {
			if data == nil {
				delete(m.files, name)
			} else {
				m.files[name] = data
			}
		})
	})
	t.Run("dir", func(t *testing.T) {
		root := t.TempDir()
		run(t, DirFS{Root: root}, func(name string, data []byte) {
			p := filepath.Join(root, name)
			if data == nil {
				os.Remove(p)
				return
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		})
	})
}

func marshal(t *testing.T, e *Env) []byte {
	t.Helper()
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStoreLoadRepairs damages one copy in the ways a power cut or a
// broken disk does and checks that Load returns the good copy's state and
// rewrites the damaged one from it, byte for byte.
func TestStoreLoadRepairs(t *testing.T) {
	good := New()
	good.Activate(osimage.SlotB)
	goodB := func(t *testing.T) []byte { return marshal(t, good) }
	older := New() // what an interrupted save would have left
	half := func(t *testing.T) []byte {
		b := marshal(t, good)
		copy(b[512:], make([]byte, 512))
		return b
	}
	tests := []struct {
		name             string
		primary, backup  func(t *testing.T) []byte
		wantOrder        string
		wantRepairedCopy string
	}{
		{"primary zeroed", func(*testing.T) []byte { return make([]byte, BlockSize) }, goodB, "B A", osimage.ESPGrubEnv},
		{"primary corrupted", func(t *testing.T) []byte { b := goodB(t); copy(b, "garbage"); return b }, goodB, "B A", osimage.ESPGrubEnv},
		{"primary half-written (truncated)", func(t *testing.T) []byte { return goodB(t)[:512] }, goodB, "B A", osimage.ESPGrubEnv},
		{"primary missing", func(*testing.T) []byte { return nil }, goodB, "B A", osimage.ESPGrubEnv},
		{"backup zeroed", goodB, func(*testing.T) []byte { return make([]byte, BlockSize) }, "B A", osimage.ESPGrubEnvBackup},
		{"backup half-written (second sector lost)", goodB, half, "B A", osimage.ESPGrubEnvBackup},
		{"backup missing", goodB, func(*testing.T) []byte { return nil }, "B A", osimage.ESPGrubEnvBackup},
		{"backup stale", goodB, func(t *testing.T) []byte { return marshal(t, older) }, "B A", osimage.ESPGrubEnvBackup},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsUnderTest(t, func(t *testing.T, fsys FS, raw func(string, []byte)) {
				raw(osimage.ESPGrubEnv, tt.primary(t))
				raw(osimage.ESPGrubEnvBackup, tt.backup(t))
				s := NewStore(fsys)
				e, err := s.Load(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if got := e.Get(VarOrder); got != tt.wantOrder {
					t.Fatalf("ORDER = %q, want %q", got, tt.wantOrder)
				}
				p, _ := fsys.ReadFile(context.Background(), osimage.ESPGrubEnv)
				b, _ := fsys.ReadFile(context.Background(), osimage.ESPGrubEnvBackup)
				if !bytes.Equal(p, goodB(t)) || !bytes.Equal(b, goodB(t)) {
					t.Fatalf("%s not repaired: primary %q..., backup %q...", tt.wantRepairedCopy, p[:min(len(p), 60)], b[:min(len(b), 60)])
				}
				c, err := s.Read(context.Background())
				if err != nil || c.RepairPrimary || c.RepairBackup {
					t.Fatalf("after Load: %+v %v", c, err)
				}
			})
		})
	}
}

// TestStoreBothDamaged: no good copy is a clear error, and nothing is
// written over what might still be rescued by hand.
func TestStoreBothDamaged(t *testing.T) {
	fsUnderTest(t, func(t *testing.T, fsys FS, raw func(string, []byte)) {
		zero := make([]byte, BlockSize)
		raw(osimage.ESPGrubEnv, zero)
		raw(osimage.ESPGrubEnvBackup, []byte("# GRUB Environment Block\nA_OK=1\n"))
		s := NewStore(fsys)
		_, err := s.Load(context.Background())
		if !errors.Is(err, ErrBothDamaged) {
			t.Fatalf("Load: %v, want ErrBothDamaged", err)
		}
		for _, w := range []string{osimage.ESPGrubEnv, osimage.ESPGrubEnvBackup, "missing header", "size 32"} {
			if !bytes.Contains([]byte(err.Error()), []byte(w)) {
				t.Errorf("error does not mention %q: %v", w, err)
			}
		}
		if _, err := s.Update(context.Background(), func(e *Env) error { e.Commit(osimage.SlotA); return nil }); !errors.Is(err, ErrBothDamaged) {
			t.Fatalf("Update: %v, want ErrBothDamaged", err)
		}
		if p, _ := fsys.ReadFile(context.Background(), osimage.ESPGrubEnv); !bytes.Equal(p, zero) {
			t.Fatal("a copy was rewritten although neither was good")
		}
	})
}

// TestStoreSaveSurvivesPowerCuts cuts the power at every write of a Save
// (the write tearing after 0, 100, 512 or 1000 bytes), from every starting
// state with at least one good copy, and checks that Load afterwards still
// finds a complete environment: the old one or the new one, never neither.
func TestStoreSaveSurvivesPowerCuts(t *testing.T) {
	oldEnv := New()
	newEnv := New()
	newEnv.MarkNotBootable(osimage.SlotB)
	newEnv.Activate(osimage.SlotB)
	newEnv.Set("DEBVISOR_DIGEST", "sha256:0123")
	oldB, newB := marshal(t, oldEnv), marshal(t, newEnv)
	starts := []struct {
		name            string
		primary, backup []byte
	}{
		{"both good", oldB, oldB},
		{"primary damaged", make([]byte, BlockSize), oldB},
		{"backup damaged", oldB, oldB[:10]},
		{"backup missing", oldB, nil},
	}
	for _, st := range starts {
		for crashAt := 1; crashAt <= 3; crashAt++ {
			for _, torn := range []int{0, 100, 512, 1000} {
				t.Run(fmt.Sprintf("%s/write%d/torn%d", st.name, crashAt, torn), func(t *testing.T) {
					m := newMemFS()
					m.files[osimage.ESPGrubEnv] = bytes.Clone(st.primary)
					if st.backup != nil {
						m.files[osimage.ESPGrubEnvBackup] = bytes.Clone(st.backup)
					}
					m.crashAt, m.tornBytes = crashAt, torn
					s := NewStore(m)
					saveErr := s.Save(context.Background(), newEnv)
					// Power back: writes work again.
					m.crashAt = 0
					e, err := s.Load(context.Background())
					if err != nil {
						t.Fatalf("after a power cut at write %d (Save: %v) no copy is good: %v", crashAt, saveErr, err)
					}
					if !e.Equal(oldEnv) && !e.Equal(newEnv) {
						t.Fatalf("Load returned a state that is neither old nor new: %v", e.Names())
					}
					if saveErr == nil && !e.Equal(newEnv) {
						t.Fatal("Save succeeded but Load returns the old state")
					}
					p, b := m.files[osimage.ESPGrubEnv], m.files[osimage.ESPGrubEnvBackup]
					if !bytes.Equal(p, b) {
						t.Fatal("Load left the copies different")
					}
					if !bytes.Equal(p, oldB) && !bytes.Equal(p, newB) {
						t.Fatal("copies hold neither the old nor the new block")
					}
				})
			}
		}
	}
}

func TestStoreTransitions(t *testing.T) {
	ctx := context.Background()
	fsUnderTest(t, func(t *testing.T, fsys FS, _ func(string, []byte)) {
		s := NewStore(fsys)
		if err := s.Save(ctx, New()); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			name string
			do   func() error
			next osimage.Slot
			vars map[string]string
		}{
			{"mark B", func() error { return s.MarkNotBootable(ctx, osimage.SlotB) }, osimage.SlotA, map[string]string{"B_OK": "0"}},
			{"activate B", func() error { return s.Activate(ctx, osimage.SlotB) }, osimage.SlotB, map[string]string{"ORDER": "B A", "B_OK": "1", "B_TRY": "0"}},
			{"commit B", func() error { return s.Commit(ctx, osimage.SlotB) }, osimage.SlotB, map[string]string{"B_OK": "1", "B_TRY": "0", "A_OK": "1"}},
		}
		for _, st := range steps {
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			e, err := s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range st.vars {
				if e.Get(k) != v {
					t.Errorf("%s: %s = %q, want %q", st.name, k, e.Get(k), v)
				}
			}
			if n := e.NextBoot().Slot; n != st.next {
				t.Errorf("%s: next boot %s, want %s", st.name, n, st.next)
			}
			c, _ := s.Read(ctx)
			if c.RepairPrimary || c.RepairBackup {
				t.Errorf("%s: copies differ after a save", st.name)
			}
		}
	})
}

func TestDirFSRefusesPathsOutside(t *testing.T) {
	d := DirFS{Root: t.TempDir()}
	for _, p := range []string{"../x", "/etc/passwd", "grub/../../x", "."} {
		if err := d.WriteFile(context.Background(), p, []byte("x")); err == nil {
			t.Errorf("WriteFile(%q) accepted", p)
		}
	}
}

// FuzzStoreLoad is the two-copy reader on arbitrary copies: Load fails
// exactly when neither copy parses (and then writes nothing); otherwise it
// returns the state of the copy ReadCopies picked, both copies are then
// that copy byte for byte, and a second Load writes nothing.
func FuzzStoreLoad(f *testing.F) {
	good, _ := New().Marshal()
	other := New()
	other.Activate(osimage.SlotB)
	b, _ := other.Marshal()
	f.Add(good, good)
	f.Add(good, b)
	f.Add(make([]byte, BlockSize), b)
	f.Add(b[:512], []byte{})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, primary, backup []byte) {
		m := newMemFS()
		m.files[osimage.ESPGrubEnv] = bytes.Clone(primary)
		m.files[osimage.ESPGrubEnvBackup] = bytes.Clone(backup)
		_, perr := Parse(primary)
		_, berr := Parse(backup)
		s := NewStore(m)
		e, err := s.Load(context.Background())
		if perr != nil && berr != nil {
			if !errors.Is(err, ErrBothDamaged) {
				t.Fatalf("both copies unparsable but Load: %v", err)
			}
			if m.writes != 0 {
				t.Fatal("Load wrote although no copy is good")
			}
			return
		}
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		// The spec: a clean copy (parses, nothing but '#' after the last
		// line break) beats a torn one; between equals, the primary.
		clean := func(b []byte) bool {
			_, err := Parse(b)
			return err == nil && len(bytes.Trim(b[bytes.LastIndexByte(b, '\n')+1:], "#")) == 0
		}
		var want []byte
		switch {
		case clean(primary):
			want = primary
		case clean(backup):
			want = backup
		case perr == nil:
			want = primary
		default:
			want = backup
		}
		we, _ := Parse(want)
		if !e.Equal(we) {
			t.Fatal("Load returned another state than the good copy's")
		}
		if !bytes.Equal(m.files[osimage.ESPGrubEnv], want) || !bytes.Equal(m.files[osimage.ESPGrubEnvBackup], want) {
			t.Fatal("copies not repaired from the good one")
		}
		n := m.writes
		if _, err := s.Load(context.Background()); err != nil || m.writes != n {
			t.Fatalf("second Load: %v, %d writes", err, m.writes-n)
		}
	})
}
