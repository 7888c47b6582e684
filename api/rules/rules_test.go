package rules

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
		{"512MiB", 512 << 20, ""},
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

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{{0, "0B"}, {1000, "1000B"}, {1536 << 10, "1536KiB"}, {512 << 20, "512MiB"}, {3 << 30, "3GiB"}, {2 << 40, "2TiB"}}
	for _, tt := range tests {
		if got := FormatSize(tt.in); got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := HumanSize(3<<29 + 1); got != "1.5GiB" {
		t.Errorf("HumanSize = %q", got)
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
		if err == nil {
			back, err := ParseSize(FormatSize(n))
			if err != nil || back != n {
				t.Fatalf("round trip %d -> %q -> %d, %v", n, FormatSize(n), back, err)
			}
		}
	})
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "web-1", "disk0.qcow2", "A_b", strings.Repeat("x", 64)} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-x", ".hidden", "a/b", "a b", strings.Repeat("x", 65), "../etc", "..", "a\x00b"} {
		if err := CheckName(bad); err == nil {
			t.Errorf("CheckName(%q) = nil, want an error", bad)
		}
	}
}

func TestCheckHostname(t *testing.T) {
	for _, ok := range []string{"node1", "Node-1", "a", strings.Repeat("n", 63)} {
		if err := CheckHostname(ok); err != nil {
			t.Errorf("CheckHostname(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "a-", "a.b", "a_b", strings.Repeat("n", 64), "nöde"} {
		if err := CheckHostname(bad); err == nil {
			t.Errorf("CheckHostname(%q) = nil, want an error", bad)
		}
	}
}

func TestCheckInterfaceName(t *testing.T) {
	for _, ok := range []string{"br0", "bond0.100", "enp1s0"} {
		if err := CheckInterfaceName(ok); err != nil {
			t.Errorf("CheckInterfaceName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a/b", "averyveryverylongname"} {
		if err := CheckInterfaceName(bad); err == nil {
			t.Errorf("CheckInterfaceName(%q) = nil", bad)
		}
	}
}

func TestCheckRequestID(t *testing.T) {
	for _, ok := range []string{"", "0b7c2a4e-5f0e-4c1a-9a59-3d6f3f7e2c11", "tf.1", strings.Repeat("a", 64)} {
		if err := CheckRequestID(ok); err != nil {
			t.Errorf("CheckRequestID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"-x", "a/b", "a b", strings.Repeat("a", 65), "x\x00", "<script>", "\u00e9"} {
		if err := CheckRequestID(bad); err == nil {
			t.Errorf("CheckRequestID(%q) = nil, want an error", bad)
		}
	}
}
