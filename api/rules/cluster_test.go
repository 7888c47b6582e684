package rules

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestParseJoinToken(t *testing.T) {
	tests := []struct {
		in             string
		id, secret     string
		wantErr        bool
		mustNotContain string
	}{
		{in: "abcdef.0123456789abcdef", id: "abcdef", secret: "0123456789abcdef"},
		{in: "a1b2c3.zzzzzzzzzzzzzzzz", id: "a1b2c3", secret: "zzzzzzzzzzzzzzzz"},
		{in: "", wantErr: true},
		{in: "abcdef", wantErr: true},
		{in: "abcdef.", wantErr: true},
		{in: "ABCDEF.0123456789abcdef", wantErr: true},
		{in: "abcdef.0123456789ABCDEF", wantErr: true, mustNotContain: "0123456789ABCDEF"},
		{in: "abcde.0123456789abcdef0", wantErr: true},
		{in: "abcdef.0123456789abcde", wantErr: true},
		{in: "abcdef.0123456789abcdef.x", wantErr: true},
		{in: "abc-ef.0123456789abcdef", wantErr: true},
		{in: " abcdef.0123456789abcdef", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, secret, err := ParseJoinToken(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseJoinToken(%q) = %q, %q; want an error", tt.in, id, secret)
				}
				if !strings.Contains(err.Error(), "abcdef.0123456789abcdef") {
					t.Errorf("error %q does not show the expected form", err)
				}
				if tt.mustNotContain != "" && strings.Contains(err.Error(), tt.mustNotContain) {
					t.Errorf("error %q repeats the secret", err)
				}
				return
			}
			if err != nil || id != tt.id || secret != tt.secret {
				t.Fatalf("ParseJoinToken(%q) = %q, %q, %v", tt.in, id, secret, err)
			}
		})
	}
}

func TestParseCACertHash(t *testing.T) {
	good := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		in      string
		wantErr string
	}{
		{good, ""},
		{strings.ToUpper(good), ""},
		{"", "must not be empty"},
		{"md5:" + strings.Repeat("ab", 16), "does not start with"},
		{strings.Repeat("ab", 32), "does not start with"},
		{"sha256:" + strings.Repeat("ab", 31), "want 64 hex digits"},
		{"sha256:" + strings.Repeat("zz", 32), "not hex"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d, err := ParseCACertHash(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseCACertHash(%q) = %x, %v; want error containing %q", tt.in, d, err, tt.wantErr)
				}
				return
			}
			if err != nil || len(d) != 32 || FormatCACertHash(d) != good {
				t.Fatalf("ParseCACertHash(%q) = %x, %v", tt.in, d, err)
			}
		})
	}
}

func TestCheckJoinTokenTTL(t *testing.T) {
	for _, ok := range []time.Duration{0, time.Minute, DefaultJoinTokenTTL, MaxJoinTokenTTL} {
		if err := CheckJoinTokenTTL(ok); err != nil {
			t.Errorf("CheckJoinTokenTTL(%s) = %v", ok, err)
		}
	}
	for _, bad := range []time.Duration{-time.Second, MaxJoinTokenTTL + time.Second} {
		if err := CheckJoinTokenTTL(bad); err == nil {
			t.Errorf("CheckJoinTokenTTL(%s) accepted", bad)
		}
	}
}

func FuzzParseJoinToken(f *testing.F) {
	for _, s := range []string{"abcdef.0123456789abcdef", "", ".", "abcdef..", "ÿÿÿÿÿÿ.0123456789abcdef"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := ParseJoinToken(s)
		if err != nil {
			if secret != "" && strings.Contains(err.Error(), secret) {
				t.Fatalf("error repeats the secret")
			}
			return
		}
		if id+"."+secret != s || CheckJoinTokenID(id) != nil {
			t.Fatalf("ParseJoinToken(%q) = %q, %q: does not round-trip", s, id, secret)
		}
	})
}

func FuzzParseCACertHash(f *testing.F) {
	for _, s := range []string{"sha256:" + strings.Repeat("0", 64), "sha256:", "SHA256:" + strings.Repeat("F", 64), "sha256:" + strings.Repeat("é", 32)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseCACertHash(s)
		if err != nil {
			return
		}
		back, err := ParseCACertHash(FormatCACertHash(d))
		if err != nil || !bytes.Equal(back, d) || len(d) != 32 {
			t.Fatalf("%q -> %x does not round-trip: %x, %v", s, d, back, err)
		}
	})
}
