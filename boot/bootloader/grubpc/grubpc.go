// Package grubpc owns DebVisor's legacy BIOS boot path: boot.img in the
// protective MBR's code area loads core.img (diskboot.img + GRUB's i386-pc
// kernel + modules + the same embedded early.cfg as BOOTX64.EFI, after
// early-bios.cfg's serial terminal) from the GPT "BIOS boot" partition.
// grub-bios-setup would do this through a loop device and picks sectors at
// install time; this package does the same patching in Go on an image file
// or block device, without Reed-Solomon codes, so images stay reproducible
// and no loop device is needed. Under BIOS $cmdpath is (hd0), the drive the
// BIOS booted, so early.cfg finds the same disk as under UEFI.
package grubpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/debvisor/debvisor/boot/bootloader"
	"github.com/debvisor/debvisor/boot/bootloader/grub"
)

// ModuleDir is where Debian's grub-pc-bin installs the i386-pc modules.
const ModuleDir = "/usr/lib/grub/i386-pc"

const sectorSize = bootloader.SectorSize

// Offsets in boot.img (GRUB 2.06 include/grub/i386/pc/boot.h) and in the
// MBR it is written over.
const (
	mbrBPBStart     = 0x03  // GRUB_BOOT_MACHINE_BPB_START
	mbrBPBEnd       = 0x5a  // GRUB_BOOT_MACHINE_BPB_END
	mbrKernelSector = 0x5c  // GRUB_BOOT_MACHINE_KERNEL_SECTOR: uint64 LBA of core.img's first sector
	mbrBootDrive    = 0x64  // GRUB_BOOT_MACHINE_BOOT_DRIVE
	mbrDriveCheck   = 0x66  // GRUB_BOOT_MACHINE_DRIVE_CHECK: a 2-byte jmp
	mbrCodeEnd      = 0x1b8 // GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC: disk signature + partition table follow
	mbrPartStart    = 0x1be // first MBR partition entry
	mbrSignature    = 0x1fe // 0x55 0xAA
)

// Offsets in core.img.
const (
	// blocklistEntry is the size of struct grub_pc_bios_boot_blocklist
	// {uint64 start; uint16 len; uint16 segment}; diskboot.img keeps the
	// list at the end of its sector, growing downwards.
	blocklistEntry = 12
	firstBlocklist = sectorSize - blocklistEntry
	// coreSegment is where diskboot loads the sector after itself:
	// GRUB_BOOT_I386_PC_KERNEL_SEG (0x800) + one sector in paragraphs.
	coreSegment = 0x800 + sectorSize>>4
	// kernelNoRSLength is GRUB_KERNEL_I386_PC_NO_REED_SOLOMON_LENGTH in
	// core.img's second sector; 0xffff means a core.img grub-bios-setup
	// would refuse ("core.img version mismatch").
	kernelNoRSLength = sectorSize + 0x14
	// maxCoreSectors is what GRUB's startup code can load below 0x78000
	// from GRUB_KERNEL_I386_PC_LINK_ADDR (0x9000); grub-bios-setup caps
	// the embedding area the same way.
	maxCoreSectors = (0x78000 - 0x9000) / sectorSize
)

// Modules are built into core.img: biosdisk to read the disk through
// INT 13h, then the EFI image's modules minus the EFI-only ones.
var Modules = append([]string{"biosdisk"}, slices.DeleteFunc(slices.Clone(grub.Modules), func(m string) bool {
	return m == "efi_gop" || m == "efi_uga"
})...)

// Images holds the two i386-pc boot images.
type Images struct {
	Boot []byte // boot.img, 512 bytes, goes over the MBR code area
	Core []byte // core.img, goes into the BIOS boot partition
}

// Bootloader is GRUB i386-pc.
type Bootloader struct {
	log       *slog.Logger
	workDir   string
	moduleDir string
	images    *Images
}

var _ bootloader.Bootloader = (*Bootloader)(nil)

// Option configures a Bootloader.
type Option func(*Bootloader)

// WithLogger receives grub-mkimage's output at debug level.
func WithLogger(l *slog.Logger) Option { return func(b *Bootloader) { b.log = l } }

// WithWorkDir sets where grub-mkimage's scratch files go.
func WithWorkDir(dir string) Option { return func(b *Bootloader) { b.workDir = dir } }

// WithModuleDir overrides ModuleDir.
func WithModuleDir(dir string) Option { return func(b *Bootloader) { b.moduleDir = dir } }

// New returns the BIOS boot loader.
func New(opts ...Option) *Bootloader {
	b := &Bootloader{log: slog.New(slog.NewTextHandler(io.Discard, nil)), moduleDir: ModuleDir}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Name implements bootloader.Bootloader.
func (b *Bootloader) Name() string { return "grub-i386-pc" }

// Images builds core.img once with grub-mkimage from Debian's i386-pc
// modules with the same embedded early.cfg as the EFI binary, preceded by
// early-bios.cfg (GRUB's serial terminal), and reads boot.img.
func (b *Bootloader) Images(ctx context.Context) (Images, error) {
	if b.images != nil {
		return *b.images, nil
	}
	if _, err := os.Stat(filepath.Join(b.moduleDir, "kernel.img")); err != nil {
		return Images{}, fmt.Errorf("GRUB i386-pc modules missing (install grub-pc-bin): %w", err)
	}
	core, err := grub.MkImage(ctx, grub.Image{Format: "i386-pc", ModuleDir: b.moduleDir, Modules: Modules, Preambles: []string{"grub/early-bios.cfg"}},
		grub.WithLogger(b.log), grub.WithWorkDir(b.workDir))
	if err != nil {
		return Images{}, fmt.Errorf("grub BIOS core image: %w", err)
	}
	boot, err := os.ReadFile(filepath.Join(b.moduleDir, "boot.img"))
	if err != nil {
		return Images{}, fmt.Errorf("grub BIOS boot image: %w", err)
	}
	b.images = &Images{Boot: boot, Core: core}
	return *b.images, nil
}

// Prepare builds the images and checks that core.img fits the target's
// BIOS boot partition, before anything is written.
func (b *Bootloader) Prepare(ctx context.Context, t bootloader.Target) error {
	im, err := b.Images(ctx)
	if err != nil {
		return err
	}
	if err := CheckFit(im.Core, t.BIOSBoot.Sectors); err != nil {
		return fmt.Errorf("BIOS boot partition: %w", err)
	}
	return nil
}

// Install writes core.img into the BIOS boot partition and boot.img's code
// into the protective MBR (WriteBootCode).
func (b *Bootloader) Install(ctx context.Context, t bootloader.Target) error {
	if t.Disk == nil {
		return errors.New("install GRUB i386-pc: the target has no disk")
	}
	if err := b.Prepare(ctx, t); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := WriteBootCode(t.Disk, *b.images, t.BIOSBoot); err != nil {
		return fmt.Errorf("BIOS boot loader: %w", err)
	}
	return nil
}

// Configure writes grub/grub.cfg (grub.Configure): core.img reads the same
// file as BOOTX64.EFI.
func (b *Bootloader) Configure(ctx context.Context, t bootloader.Target, c bootloader.Config) error {
	return grub.Configure(ctx, t, c)
}

// Check reads the MBR and core.img's first sector back (ReadInstalled).
func (b *Bootloader) Check(_ context.Context, t bootloader.Target) (bootloader.Status, error) {
	if t.Disk == nil {
		return bootloader.Status{}, errors.New("the target has no disk")
	}
	in, err := ReadInstalled(t.Disk, t.BIOSBoot)
	if err != nil {
		return bootloader.Status{}, err
	}
	return bootloader.Status{Summary: fmt.Sprintf("bios: MBR boot code loads core.img (%d sectors) from LBA %d", in.CoreSectors, in.CoreLBA)}, nil
}

// sectorsFor rounds n bytes up to whole sectors.
func sectorsFor(n int) int64 { return (int64(n) + sectorSize - 1) / sectorSize }

// CheckFit fails when core.img cannot be installed into a BIOS boot
// partition of partSectors sectors.
func CheckFit(core []byte, partSectors int64) error {
	n := sectorsFor(len(core))
	switch {
	case len(core) < 2*sectorSize:
		return fmt.Errorf("core.img is %d bytes: too small to be a GRUB i386-pc core image", len(core))
	case n > partSectors:
		return fmt.Errorf("core.img is %d sectors (%d bytes) but the BIOS boot partition before the ESP holds only %d; drop modules from the BIOS image", n, len(core), partSectors)
	case n > maxCoreSectors:
		return fmt.Errorf("core.img is %d sectors; GRUB's i386-pc startup code loads at most %d", n, maxCoreSectors)
	}
	return nil
}

// WriteBootCode does what grub-bios-setup does for a GPT disk with a BIOS
// boot partition (without Reed-Solomon codes): core.img goes into the
// partition part, with diskboot's blocklist pointing at the rest of
// core.img, and boot.img's code goes into the protective MBR, pointing at
// core.img's first sector. The MBR's partition table, disk signature and
// 0x55AA (written by the partitioner) are kept. Nothing is written when
// the images or the MBR are not what this code knows how to patch.
func WriteBootCode(disk bootloader.Disk, im Images, part bootloader.Extent) error {
	partLBA := part.Start
	if len(im.Boot) != sectorSize {
		return fmt.Errorf("boot.img is %d bytes, want %d", len(im.Boot), sectorSize)
	}
	if err := CheckFit(im.Core, part.Sectors); err != nil {
		return err
	}
	n := sectorsFor(len(im.Core))
	core := make([]byte, n*sectorSize)
	copy(core, im.Core)
	if v := binary.LittleEndian.Uint16(core[kernelNoRSLength:]); v == 0xffff {
		return errors.New("core.img has no Reed-Solomon length field: not a GRUB 2 i386-pc core image built by grub-mkimage")
	}
	// grub-mkimage fills the first blocklist entry's length and segment;
	// anything else means a diskboot.img whose layout this code does not
	// know, and patching it blindly would make an unbootable disk.
	bl := core[firstBlocklist : firstBlocklist+blocklistEntry]
	if seg := binary.LittleEndian.Uint16(bl[10:]); seg != coreSegment {
		return fmt.Errorf("core.img blocklist segment is %#x, want %#x (unexpected diskboot.img)", seg, coreSegment)
	}
	if l := binary.LittleEndian.Uint16(bl[8:]); int64(l) != n-1 {
		return fmt.Errorf("core.img blocklist length is %d sectors, grub-mkimage should have written %d", l, n-1)
	}
	// One contiguous run: everything after diskboot's own sector, loaded
	// from core's second sector on; the entry below it stays the zero
	// terminator diskboot stops at.
	binary.LittleEndian.PutUint64(bl[0:], uint64(partLBA+1))
	binary.LittleEndian.PutUint16(bl[8:], uint16(n-1))
	binary.LittleEndian.PutUint16(bl[10:], coreSegment)
	if !bytes.Equal(core[firstBlocklist-blocklistEntry:firstBlocklist], make([]byte, blocklistEntry)) {
		return errors.New("core.img has a second blocklist entry; grub-mkimage leaves it as the terminator")
	}
	if _, err := disk.WriteAt(core, partLBA*sectorSize); err != nil {
		return fmt.Errorf("write core.img at LBA %d: %w", partLBA, err)
	}

	mbr := make([]byte, sectorSize)
	if _, err := disk.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("read MBR: %w", err)
	}
	if mbr[mbrSignature] != 0x55 || mbr[mbrSignature+1] != 0xaa || mbr[mbrPartStart+4] != 0xee {
		return errors.New("sector 0 is not a GPT protective MBR")
	}
	// Like grub-bios-setup: boot.img's code over bytes 0..0x1B7 except a
	// BIOS parameter block already on the disk (none on a fresh image, so
	// zeros), boot drive "as passed by the BIOS", and the drive check jump
	// replaced by NOPs because buggy BIOSes pass 0/1 even for hard disks.
	bpb := slices.Clone(mbr[mbrBPBStart:mbrBPBEnd])
	copy(mbr[:mbrCodeEnd], im.Boot[:mbrCodeEnd])
	copy(mbr[mbrBPBStart:mbrBPBEnd], bpb)
	binary.LittleEndian.PutUint64(mbr[mbrKernelSector:], uint64(partLBA))
	mbr[mbrBootDrive] = 0xff
	mbr[mbrDriveCheck], mbr[mbrDriveCheck+1] = 0x90, 0x90
	if _, err := disk.WriteAt(mbr, 0); err != nil {
		return fmt.Errorf("write MBR: %w", err)
	}
	return nil
}

// Installed is what ReadInstalled found of the legacy BIOS boot path.
type Installed struct {
	// CoreLBA is where the MBR boot code loads core.img's first sector from.
	CoreLBA uint64 `json:"core_lba"`
	// CoreSectors is core.img's length as the blocklist describes it.
	CoreSectors uint64 `json:"core_sectors"`
}

// ReadInstalled checks that the MBR holds GRUB boot code that loads a
// core.img lying entirely inside the BIOS boot partition part, and that
// core.img's blocklist continues right after its first sector. It cannot
// compare with Debian's boot.img (inspect must work where grub-pc-bin is
// not installed), so it checks the fields GRUB's code depends on.
func ReadInstalled(disk io.ReaderAt, part bootloader.Extent) (Installed, error) {
	partLBA, partSectors := uint64(part.Start), uint64(part.Sectors)
	var r Installed
	mbr := make([]byte, sectorSize)
	if _, err := disk.ReadAt(mbr, 0); err != nil {
		return r, fmt.Errorf("read MBR: %w", err)
	}
	if mbr[mbrSignature] != 0x55 || mbr[mbrSignature+1] != 0xaa {
		return r, errors.New("MBR has no 0x55AA signature")
	}
	if mbr[mbrPartStart+4] != 0xee {
		return r, fmt.Errorf("MBR partition 1 has type %#x, want the GPT protective 0xee", mbr[mbrPartStart+4])
	}
	if bytes.Equal(mbr[:mbrCodeEnd], make([]byte, mbrCodeEnd)) {
		return r, errors.New("MBR has no boot code (a BIOS would not boot this disk)")
	}
	if mbr[0] != 0xeb {
		return r, fmt.Errorf("MBR boot code does not start with GRUB's short jump (byte %#x)", mbr[0])
	}
	r.CoreLBA = binary.LittleEndian.Uint64(mbr[mbrKernelSector:])
	if r.CoreLBA != partLBA {
		return r, fmt.Errorf("MBR boot code loads core.img from LBA %d, the BIOS boot partition starts at LBA %d", r.CoreLBA, partLBA)
	}
	first := make([]byte, sectorSize)
	if _, err := disk.ReadAt(first, int64(r.CoreLBA)*sectorSize); err != nil {
		return r, fmt.Errorf("read core.img: %w", err)
	}
	bl := first[firstBlocklist:]
	start, length, seg := binary.LittleEndian.Uint64(bl), uint64(binary.LittleEndian.Uint16(bl[8:])), binary.LittleEndian.Uint16(bl[10:])
	term := first[firstBlocklist-blocklistEntry : firstBlocklist]
	switch {
	case length == 0:
		return r, errors.New("core.img blocklist is empty (core.img missing or not installed)")
	case start != r.CoreLBA+1:
		return r, fmt.Errorf("core.img blocklist starts at LBA %d, want %d (right after its first sector)", start, r.CoreLBA+1)
	case seg != coreSegment:
		return r, fmt.Errorf("core.img blocklist loads at segment %#x, want %#x", seg, coreSegment)
	case !bytes.Equal(term, make([]byte, blocklistEntry)):
		return r, errors.New("core.img blocklist has more than one run (WriteBootCode writes one)")
	case 1+length > partSectors:
		return r, fmt.Errorf("core.img is %d sectors, past the end of the %d-sector BIOS boot partition", 1+length, partSectors)
	}
	r.CoreSectors = 1 + length
	return r, nil
}
