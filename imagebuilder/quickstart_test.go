package imagebuilder

import "testing"

// TestQuickstartMachine: auto means the fast path where KVM works (the BIOS
// boot, since OVMF fails under KVM here) and UEFI/TCG elsewhere; UEFI is
// never run under KVM.
func TestQuickstartMachine(t *testing.T) {
	tests := []struct {
		firmware        string
		kvm             bool
		wantFW, wantAcc string
		wantErr         bool
	}{
		{"auto", true, FirmwareBIOS, "kvm", false},
		{"", true, FirmwareBIOS, "kvm", false},
		{"auto", false, FirmwareUEFI, "tcg", false},
		{"bios", true, FirmwareBIOS, "kvm", false},
		{"bios", false, FirmwareBIOS, "tcg", false},
		{"uefi", true, FirmwareUEFI, "tcg", false},
		{"uefi", false, FirmwareUEFI, "tcg", false},
		{"coreboot", true, "", "", true},
	}
	for _, tt := range tests {
		fw, acc, err := quickstartMachine(tt.firmware, tt.kvm)
		if (err != nil) != tt.wantErr || fw != tt.wantFW || acc != tt.wantAcc {
			t.Errorf("quickstartMachine(%q, kvm=%v) = %q, %q, %v; want %q, %q, error %v", tt.firmware, tt.kvm, fw, acc, err, tt.wantFW, tt.wantAcc, tt.wantErr)
		}
	}
}
