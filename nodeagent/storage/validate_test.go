package storage

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"512", 512, ""},
		{"64MiB", 64 << 20, ""},
		{"64M", 64 << 20, ""},
		{"10G", 10 << 30, ""},
		{"1.5GiB", 3 << 29, ""},
		{"2GB", 2e9, ""},
		{" 1 TiB ", 1 << 40, ""},
		{"-1G", 0, "not a size"},
		{"", 0, "not a size"},
		{"1X", 0, "unknown unit"},
		{"99999999999999999999", 0, "out of range"},
		{"9000000TiB", 0, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSize(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1", "64MiB", "1.5TB", "-3", "1e9", "0.0000001k", "18446744073709551615"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d: negative", s, n)
		}
		if err == nil && n > 0 && n%(1<<10) == 0 {
			back, err := ParseSize(FormatSize(n))
			if err != nil || back != n {
				t.Fatalf("round trip %d -> %q -> %d, %v", n, FormatSize(n), back, err)
			}
		}
	})
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "web-1", "disk0.qcow2", "A_b"} {
		if err := CheckName("name", ok); err != nil {
			t.Errorf("CheckName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-x", ".hidden", "a/b", "a b", strings.Repeat("x", 65), "../etc"} {
		if err := CheckName("name", bad); err == nil || !strings.HasPrefix(strings.TrimPrefix(err.Error(), "rpc error: code = InvalidArgument desc = "), "name: ") {
			t.Errorf("CheckName(%q) = %v, want InvalidArgument name: …", bad, err)
		}
	}
}
