package qemu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Firmware is how a guest boots; a DebVisor image boots either way.
type Firmware string

const (
	// FirmwareAuto boots through the BIOS path under KVM when KVM can run
	// it in hardware (KVMForBIOS; fast) and through UEFI under TCG
	// otherwise.
	FirmwareAuto Firmware = "auto"
	// FirmwareBIOS boots with QEMU's SeaBIOS (KVM when KVMForBIOS, else
	// TCG); no pflash.
	FirmwareBIOS Firmware = "bios"
	// FirmwareUEFI boots with OVMF, always under TCG: OVMF stops with a KVM
	// emulation failure on the development machines (docs/architecture.md,
	// "QEMU on the development machines").
	FirmwareUEFI Firmware = "uefi"
)

// ParseFirmware accepts "", auto, bios and uefi.
func ParseFirmware(s string) (Firmware, error) {
	switch f := Firmware(s); f {
	case "", FirmwareAuto:
		return FirmwareAuto, nil
	case FirmwareBIOS, FirmwareUEFI:
		return f, nil
	}
	return "", fmt.Errorf("firmware %q: want %s, %s or %s", s, FirmwareAuto, FirmwareBIOS, FirmwareUEFI)
}

// Accel is QEMU's accelerator.
type Accel string

const (
	AccelKVM Accel = "kvm"
	AccelTCG Accel = "tcg"
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

// KVMForBIOS reports whether the BIOS boot path should run under KVM, and
// why not. /dev/kvm must open, and KVM must execute real-mode and unpaged
// protected-mode code in hardware: SeaBIOS, boot.img and all of GRUB i386-pc
// run that way. PVM (kvm_pvm, the "KVM" of the development machines) runs
// such code in KVM's instruction emulator: GRUB alone then needed about a
// minute to start (its LZMA decompressor ran at a few KiB/s) and, with the
// machine loaded, had not printed anything after five minutes, whereas TCG
// reaches the kernel in seconds.
func KVMForBIOS() (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Sprintf("/dev/kvm: %v", err)
	}
	f.Close()
	if KVMIsPVM() {
		return false, "KVM is PVM (kvm_pvm), which emulates the real-mode and unpaged code of the BIOS boot path instruction by instruction"
	}
	return true, ""
}

// ChooseMachine picks the firmware and accelerator for a firmware choice,
// given whether KVM can run the BIOS boot path at full speed (KVMForBIOS).
func ChooseMachine(firmware Firmware, kvmForBIOS bool) (Firmware, Accel, error) {
	switch firmware {
	case "", FirmwareAuto:
		if kvmForBIOS {
			return FirmwareBIOS, AccelKVM, nil
		}
		return FirmwareUEFI, AccelTCG, nil
	case FirmwareBIOS:
		if kvmForBIOS {
			return FirmwareBIOS, AccelKVM, nil
		}
		return FirmwareBIOS, AccelTCG, nil
	case FirmwareUEFI:
		return FirmwareUEFI, AccelTCG, nil
	}
	return "", "", fmt.Errorf("firmware %q: want %s, %s or %s", firmware, FirmwareAuto, FirmwareBIOS, FirmwareUEFI)
}

// resolveMachine applies ChooseMachine, or a forced accelerator: forcing
// KVM needs /dev/kvm to open, even where KVMForBIOS advises against it (the
// direct-kernel benchmark measures exactly that). why says why a BIOS boot
// did not get KVM.
func resolveMachine(firmware Firmware, forced Accel) (Firmware, Accel, string, error) {
	kvm, why := KVMForBIOS()
	fw, accel, err := ChooseMachine(firmware, kvm)
	if err != nil {
		return "", "", "", err
	}
	switch forced {
	case "":
		if accel == AccelKVM {
			why = ""
		}
		return fw, accel, why, nil
	case AccelKVM:
		if fw == FirmwareUEFI {
			return "", "", "", errors.New("UEFI boots run under TCG: OVMF stops with a KVM emulation failure on the development machines")
		}
		f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
		if err != nil {
			return "", "", "", fmt.Errorf("KVM requested: %w", err)
		}
		f.Close()
		return fw, AccelKVM, why, nil
	case AccelTCG:
		return fw, AccelTCG, "TCG requested", nil
	}
	return "", "", "", fmt.Errorf("accelerator %q: want %s or %s", forced, AccelKVM, AccelTCG)
}

// MachineArgs returns QEMU's machine, accelerator and firmware arguments
// for booting a DebVisor image with FirmwareUEFI (OVMF, its variable store
// copied into dir) or FirmwareBIOS (no pflash: QEMU's bundled SeaBIOS boots
// boot.img in the MBR and core.img in the BIOS boot partition), under
// accel.
func MachineArgs(dir string, firmware Firmware, accel Accel) ([]string, error) {
	args := []string{"-machine", "q35", "-accel", string(accel)}
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
		if dir == "" {
			return nil, errors.New("OVMF: no directory for the variable store")
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
