package imagebuilder

import (
	"fmt"
	"os"
	"path/filepath"
)

// OVMF firmware files from Debian's ovmf package.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// KVMIsPVM reports whether the host's KVM is PVM (kvm_pvm), which runs
// real-mode and unpaged code, and more, in KVM's instruction emulator.
func KVMIsPVM() bool {
	_, err := os.Stat("/sys/module/kvm_pvm")
	return err == nil
}

// QEMUMachineArgs returns QEMU's machine, accelerator and firmware
// arguments for booting a DebVisor image with firmware FirmwareUEFI (OVMF,
// its variable store copied into dir) or FirmwareBIOS (no pflash: QEMU's
// bundled SeaBIOS boots boot.img in the MBR and core.img in the BIOS boot
// partition), under accel ("kvm" or "tcg").
func QEMUMachineArgs(dir, firmware, accel string) ([]string, error) {
	args := []string{"-machine", "q35", "-accel", accel}
	switch firmware {
	case FirmwareBIOS:
		return args, nil
	case FirmwareUEFI:
		vb, err := os.ReadFile(OVMFVars)
		if err != nil {
			return nil, fmt.Errorf("OVMF (Debian package ovmf): %w", err)
		}
		if _, err := os.Stat(OVMFCode); err != nil {
			return nil, fmt.Errorf("OVMF (Debian package ovmf): %w", err)
		}
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		if err := os.WriteFile(vars, vb, 0o600); err != nil {
			return nil, err
		}
		return append(args, "-drive", "if=pflash,format=raw,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,file="+vars), nil
	}
	return nil, fmt.Errorf("firmware %q: want %s or %s", firmware, FirmwareBIOS, FirmwareUEFI)
}
