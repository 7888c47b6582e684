package vm

import (
	"strings"
	"testing"
)

func TestParseMAC(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{"52:54:00:12:34:56", "52:54:00:12:34:56", ""},
		{"52:54:00:AB:cd:EF", "52:54:00:ab:cd:ef", ""},
		{"01:00:5e:00:00:01", "", "multicast"},
		{"ff:ff:ff:ff:ff:ff", "", "multicast"},
		{"00:00:00:00:00:00", "", "all-zero"},
		{"52:54:00:12:34", "", "six hex octets"},
		{"52-54-00-12-34-56", "", "six hex octets"},
		{"52:54:00:12:34:5g", "", "not a hex digit"},
		{"52:54:00:12:34:567", "", "two hex digits"},
		{"", "", "six hex octets"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMAC(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseMAC(%q) = %q, %v; want error with %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseMAC(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
	for range 100 {
		if _, err := ParseMAC(RandomMAC()); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzParseMAC(f *testing.F) {
	for _, s := range []string{"52:54:00:12:34:56", "ff:ff:ff:ff:ff:ff", "::::::", "52:54:00:12:34:5", "aa:bb:cc:dd:ee:ff:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMAC(s)
		if err != nil {
			return
		}
		again, err := ParseMAC(m)
		if err != nil || again != m {
			t.Fatalf("normalised %q -> %q does not parse to itself: %q, %v", s, m, again, err)
		}
		if len(m) != 17 || strings.ToLower(s) != m {
			t.Fatalf("ParseMAC(%q) = %q", s, m)
		}
	})
}
