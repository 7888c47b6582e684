package rules

import "testing"

func TestCheckVLANID(t *testing.T) {
	for _, ok := range []uint32{1, 100, 4094} {
		if err := CheckVLANID(ok); err != nil {
			t.Errorf("CheckVLANID(%d) = %v", ok, err)
		}
	}
	for _, bad := range []uint32{0, 4095, 4096, 1 << 31} {
		if err := CheckVLANID(bad); err == nil {
			t.Errorf("CheckVLANID(%d) = nil, want an error", bad)
		}
	}
}

func TestCheckBondMode(t *testing.T) {
	for _, m := range BondModes {
		if err := CheckBondMode(m); err != nil {
			t.Errorf("CheckBondMode(%q) = %v", m, err)
		}
	}
	for _, bad := range []string{"", "lacp", "Active-Backup", "4"} {
		if err := CheckBondMode(bad); err == nil {
			t.Errorf("CheckBondMode(%q) = nil, want an error", bad)
		}
	}
}

func TestCheckMTU(t *testing.T) {
	for _, ok := range []uint32{0, 68, 1500, 9000, 65535} {
		if err := CheckMTU(ok); err != nil {
			t.Errorf("CheckMTU(%d) = %v", ok, err)
		}
	}
	for _, bad := range []uint32{1, 67, 65536} {
		if err := CheckMTU(bad); err == nil {
			t.Errorf("CheckMTU(%d) = nil, want an error", bad)
		}
	}
}
