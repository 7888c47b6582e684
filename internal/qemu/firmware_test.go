package qemu

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestChooseMachine: auto means the fast path where KVM works (the BIOS
// boot, since OVMF fails under KVM here) and UEFI/TCG elsewhere; UEFI is
// never run under KVM.
func TestChooseMachine(t *testing.T) {
	tests := []struct {
		firmware Firmware
		kvm      bool
		wantFW   Firmware
		wantAcc  Accel
		wantErr  bool
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
		fw, acc, err := ChooseMachine(tt.firmware, tt.kvm)
		if (err != nil) != tt.wantErr || fw != tt.wantFW || acc != tt.wantAcc {
			t.Errorf("ChooseMachine(%q, kvm=%v) = %q, %q, %v; want %q, %q, error %v", tt.firmware, tt.kvm, fw, acc, err, tt.wantFW, tt.wantAcc, tt.wantErr)
		}
	}
}

func TestParseFirmware(t *testing.T) {
	for in, want := range map[string]Firmware{"": FirmwareAuto, "auto": FirmwareAuto, "bios": FirmwareBIOS, "uefi": FirmwareUEFI} {
		if got, err := ParseFirmware(in); err != nil || got != want {
			t.Errorf("ParseFirmware(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseFirmware("efi"); err == nil {
		t.Error("ParseFirmware accepted efi")
	}
}

func TestResolveMachineForced(t *testing.T) {
	if fw, acc, why, err := resolveMachine(FirmwareBIOS, AccelTCG); err != nil || fw != FirmwareBIOS || acc != AccelTCG || why == "" {
		t.Errorf("forced TCG: %q %q %q %v", fw, acc, why, err)
	}
	if _, _, _, err := resolveMachine(FirmwareUEFI, AccelKVM); err == nil {
		t.Error("UEFI under forced KVM accepted")
	}
	if _, _, _, err := resolveMachine(FirmwareBIOS, "hvf"); err == nil {
		t.Error("unknown accelerator accepted")
	}
	_, kvmErr := os.Stat("/dev/kvm")
	if _, acc, _, err := resolveMachine(FirmwareBIOS, AccelKVM); (err == nil) != (kvmErr == nil) || (err == nil && acc != AccelKVM) {
		t.Errorf("forced KVM with /dev/kvm %v: %q %v", kvmErr, acc, err)
	}
}

// TestMachineArgs: UEFI copies the OVMF variable store per guest and maps
// both pflash drives; BIOS has no pflash.
func TestMachineArgs(t *testing.T) {
	bios, err := MachineArgs(t.TempDir(), FirmwareBIOS, AccelKVM)
	if err != nil || !slices.Equal(bios, []string{"-machine", "q35", "-accel", "kvm"}) {
		t.Fatalf("BIOS: %v %v", bios, err)
	}
	if _, err := os.Stat(OVMFVars); err != nil {
		t.Fatalf("OVMF is required (Debian package ovmf): %v", err)
	}
	dir := t.TempDir()
	uefi, err := MachineArgs(dir, FirmwareUEFI, AccelTCG)
	if err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	want := []string{"-machine", "q35", "-accel", "tcg", "-drive", "if=pflash,format=raw,readonly=on,file=" + OVMFCode, "-drive", "if=pflash,format=raw,file=" + vars}
	if !slices.Equal(uefi, want) {
		t.Fatalf("UEFI: %v", uefi)
	}
	if _, err := os.Stat(vars); err != nil {
		t.Fatalf("variable store not copied: %v", err)
	}
	if _, err := MachineArgs(dir, "coreboot", AccelTCG); err == nil {
		t.Fatal("unknown firmware accepted")
	}
}
