package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/debvisor/debvisor/nodeagent/fault"
)

// fakeClock is a settable clock for expiry tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestTokenStore(t *testing.T) {
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), "tokens.json")
	s, err := OpenTokenStore(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	tok, info, err := s.Create(time.Hour, "rack 2")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, info.ID+".") || len(tok) != 23 || !info.Expires.Equal(clk.Now().Add(time.Hour)) {
		t.Fatalf("token %q info %+v", tok, info)
	}
	// The file holds the hash, never the secret.
	raw, _ := os.ReadFile(path)
	if secret := strings.SplitN(tok, ".", 2)[1]; strings.Contains(string(raw), secret) {
		t.Fatal("token secret stored in clear")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v", st.Mode().Perm())
	}

	other := info.ID + ".zzzzzzzzzzzzzzzz"
	tests := []struct {
		name  string
		token string
		kind  fault.Kind
		want  string
	}{
		{"valid", tok, 0, ""},
		{"wrong secret", other, fault.Unauthenticated, "join token is not valid"},
		{"unknown id", "zzzzzz.0123456789abcdef", fault.Unauthenticated, "join token is not valid"},
		{"malformed", "hello", fault.Invalid, "token: not a join token"},
		{"empty", "", fault.Invalid, "token:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Check(tt.token)
			if tt.want == "" {
				if err != nil || got.ID != info.ID {
					t.Fatalf("Check = %+v, %v", got, err)
				}
				return
			}
			if err == nil || !fault.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v (kind %v); want %v containing %q", err, fault.KindOf(err), tt.kind, tt.want)
			}
			if strings.Contains(err.Error(), "zzzzzzzzzzzzzzzz") {
				t.Fatalf("error repeats the secret: %v", err)
			}
		})
	}
	// Checking never changes anything, even when it fails.
	if after, _ := os.ReadFile(path); string(after) != string(raw) {
		t.Fatal("Check changed the token file")
	}

	if err := s.Used(info.ID); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour)
	if _, err := s.Check(tok); !fault.Is(err, fault.Unauthenticated) || !strings.Contains(err.Error(), "expired at 2026-03-01T13:00:00Z") {
		t.Fatalf("expired token: %v", err)
	}

	// A reopened store sees the same tokens and uses.
	s2, err := OpenTokenStore(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	list := s2.List()
	if len(list) != 1 || list[0].Uses != 1 || list[0].Description != "rack 2" || !list[0].Expired(clk.Now()) {
		t.Fatalf("reopened list %+v", list)
	}
	if err := s2.Delete(info.ID); err != nil {
		t.Fatal(err)
	}
	if err := s2.Delete(info.ID); !fault.Is(err, fault.NotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if err := s2.Delete("../etc"); !fault.Is(err, fault.Invalid) {
		t.Fatalf("delete of a bad id: %v", err)
	}
}

func TestTokenStoreAddRefuses(t *testing.T) {
	clk := newFakeClock()
	s, err := OpenTokenStore(filepath.Join(t.TempDir(), "tokens.json"), clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	const tok = "abcdef.0123456789abcdef"
	if _, err := s.Add(tok, 0, ""); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, token, desc string
		ttl               time.Duration
		kind              fault.Kind
	}{
		{"duplicate id", "abcdef.zzzzzzzzzzzzzzzz", "", time.Hour, fault.AlreadyExists},
		{"malformed", "abc", "", time.Hour, fault.Invalid},
		{"negative ttl", "bbbbbb.0123456789abcdef", "", -time.Hour, fault.Invalid},
		{"ttl too long", "bbbbbb.0123456789abcdef", "", 1000 * 24 * time.Hour, fault.Invalid},
		{"control characters", "bbbbbb.0123456789abcdef", "a\nb", time.Hour, fault.Invalid},
		{"long description", "bbbbbb.0123456789abcdef", strings.Repeat("x", 201), time.Hour, fault.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Add(tt.token, tt.ttl, tt.desc); !fault.Is(err, tt.kind) {
				t.Fatalf("Add = %v, want kind %v", err, tt.kind)
			}
			if n := len(s.List()); n != 1 {
				t.Fatalf("a refused Add changed the store: %d tokens", n)
			}
		})
	}
	if l := s.List(); l[0].Expires.Sub(l[0].Created) != 24*time.Hour {
		t.Errorf("default TTL: %s", l[0].Expires.Sub(l[0].Created))
	}
	// Tokens expired for more than a day are pruned on the next write.
	clk.Add(49 * time.Hour)
	if _, _, err := s.Create(time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	for _, tk := range s.List() {
		if tk.ID == "abcdef" {
			t.Fatal("long-expired token not pruned")
		}
	}
}

func TestOpenTokenStoreRefusesCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	for _, content := range []string{"{", `{"tokens":[{"id":"../x","secret_sha256":"00"}]}`} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenTokenStore(path, nil); err == nil {
			t.Errorf("OpenTokenStore accepted %q", content)
		}
	}
}

func TestRandomTokenAlphabet(t *testing.T) {
	seen := map[byte]bool{}
	for i := 0; i < 200; i++ {
		for _, c := range []byte(randomToken(16)) {
			if !strings.ContainsRune(tokenAlphabet, rune(c)) {
				t.Fatalf("character %q outside the alphabet", c)
			}
			seen[c] = true
		}
	}
	if len(seen) != len(tokenAlphabet) {
		t.Errorf("only %d of %d characters drawn in 3200 tries", len(seen), len(tokenAlphabet))
	}
}

// FuzzTokenCheck: no input other than the exact token authenticates, and
// nothing panics or leaks the input's secret part.
func FuzzTokenCheck(f *testing.F) {
	const tok = "abcdef.0123456789abcdef"
	f.Add(tok)
	f.Add("abcdef.0123456789abcdeg")
	f.Add("ABCDEF.0123456789ABCDEF")
	f.Add("abcdef.0123456789abcdef\x00")
	s, err := OpenTokenStore(filepath.Join(f.TempDir(), "tokens.json"), newFakeClock().Now)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := s.Add(tok, time.Hour, ""); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		_, err := s.Check(in)
		if (err == nil) != (in == tok) {
			t.Fatalf("Check(%q) = %v", in, err)
		}
		if err != nil && len(in) > 8 && strings.Contains(err.Error(), in[7:]) && fault.Is(err, fault.Unauthenticated) {
			t.Fatalf("error %q repeats the secret", err)
		}
	})
}
