// Package bootloader owns the interface through which the image builder,
// installers and the upgrade code put a boot loader on a DebVisor disk,
// modelled on Talos's (internal/app/machined/pkg/runtime/v1alpha1/bootloader):
// one implementation per boot path in its own sub-package, each of which
// installs, configures and checks what it installed.
//
//   - grubefi: GRUB x86_64-efi, EFI/BOOT/BOOTX64.EFI on the ESP (UEFI).
//   - grubpc: GRUB i386-pc, boot.img in the protective MBR and core.img in
//     the GPT BIOS boot partition (legacy BIOS).
//
// Both GRUB paths embed templates/grub/early.cfg and read the same
// grub/grub.cfg and grubenv on the ESP (package grub holds what they
// share), so a disk carries both and boots either way.
package bootloader

import (
	"context"
	"io"
)

// Files is the ESP as a boot loader sees it: esp.FS for a disk image or
// an unmounted block device; a mounted ESP works as well.
type Files interface {
	ReadFile(ctx context.Context, name string) ([]byte, error)
	WriteFile(ctx context.Context, name string, data []byte) error
}

// Disk is the whole target disk, addressed in bytes from its first sector:
// a raw image file or a block device.
type Disk interface {
	io.ReaderAt
	io.WriterAt
}

// SectorSize is the logical sector size every LBA here is counted in.
const SectorSize = 512

// Extent is a run of sectors on the disk.
type Extent struct {
	Start   int64 // first LBA
	Sectors int64
}

// Target is the disk a boot loader goes onto. Each implementation uses
// what its boot path needs and says so.
type Target struct {
	// Disk is the whole disk (grubpc writes the MBR and BIOS boot
	// partition through it).
	Disk Disk
	// ESP holds the files on the EFI system partition (grubefi's binary;
	// grub.cfg for both).
	ESP Files
	// BIOSBoot is the GPT BIOS boot partition (grubpc).
	BIOSBoot Extent
}

// Config is what Configure writes: the boot menu every path shares.
type Config struct {
	// Timeout is the menu timeout in seconds.
	Timeout int
	// Cmdline is appended to the kernel command line the boot loader builds
	// for a slot (root=, rootfstype=, debvisor.slot= come first).
	Cmdline string
}

// Status is what Check found on a disk.
type Status struct {
	// Summary says what was checked, for people ("MBR boot code loads…").
	Summary string
}

// Bootloader installs, configures and checks one boot path.
type Bootloader interface {
	// Name says which boot path this is ("grub-x86_64-efi").
	Name() string
	// Prepare builds what Install writes and checks that it fits t,
	// without writing anything, so that a build or an install can fail
	// before it touches the disk. Install prepares when it was not done.
	Prepare(ctx context.Context, t Target) error
	// Install writes the boot loader onto t.
	Install(ctx context.Context, t Target) error
	// Configure writes the boot configuration onto t (both GRUB paths read
	// the same grub.cfg, so configuring one configures both).
	Configure(ctx context.Context, t Target, c Config) error
	// Check reads back what Install wrote and reports every inconsistency
	// (errors.Join of them when there are several).
	Check(ctx context.Context, t Target) (Status, error)
}
