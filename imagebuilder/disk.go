package imagebuilder

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"

	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/boot/bootloader"
	"github.com/debvisor/debvisor/boot/bootloader/grubefi"
	"github.com/debvisor/debvisor/boot/bootloader/grubpc"
	"github.com/debvisor/debvisor/boot/esp"
	"github.com/debvisor/debvisor/boot/slotwriter"
	"github.com/debvisor/debvisor/osimage"
)

const sectorSize = 512

// gptFirstUsableLBA is the first sector after the primary GPT header and
// its 128 entries of 128 bytes (go-diskfs' defaults, like every other
// partitioner's): the BIOS boot partition starts there.
const gptFirstUsableLBA = 2 + 128*128/sectorSize

// layout is where each partition goes.
type layout struct {
	total int64
	parts []partSpec
	guid  string
}

type partSpec struct {
	num         int
	label, typ  string
	guid        string
	start, size int64 // bytes
}

// planLayout places the four partitions 1 MiB-aligned in contract order,
// then the BIOS boot partition (number 5) in the gap before the ESP: it is
// listed last so partition numbers 1-4 keep their meaning, and lies first
// on disk so the data partition stays last and can grow.
func planLayout(s *Spec, digest string) layout {
	l := layout{guid: derivedGUID(digest, "disk")}
	off := int64(MiB)
	add := func(num int, label, typ string, size Size) {
		l.parts = append(l.parts, partSpec{num: num, label: label, typ: typ, guid: derivedGUID(digest, label), start: off, size: int64(size)})
		off += int64(size)
	}
	add(osimage.PartESP, osimage.LabelESP, osimage.TypeEFISystem, s.ESPSize)
	add(osimage.PartA, osimage.LabelA, osimage.TypeLinuxFilesystem, s.SlotSize)
	add(osimage.PartB, osimage.LabelB, osimage.TypeLinuxFilesystem, s.SlotSize)
	add(osimage.PartData, osimage.LabelData, osimage.TypeLinuxFilesystem, s.DataSize)
	l.total = off + int64(MiB) // room for the backup GPT
	biosStart := int64(gptFirstUsableLBA * sectorSize)
	l.parts = append(l.parts, partSpec{num: osimage.PartBIOS, label: osimage.LabelBIOS, typ: osimage.TypeBIOSBoot,
		guid: derivedGUID(digest, osimage.LabelBIOS), start: biosStart, size: l.parts[0].start - biosStart})
	return l
}

// part returns the planned partition with GPT number n.
func (l layout) part(n int) (partSpec, error) {
	for _, p := range l.parts {
		if p.num == n {
			return p, nil
		}
	}
	return partSpec{}, fmt.Errorf("layout has no partition %d", n)
}

// extent is the partition in sectors, as boot loaders address it.
func (p partSpec) extent() bootloader.Extent {
	return bootloader.Extent{Start: p.start / sectorSize, Sectors: p.size / sectorSize}
}

// derivedGUID makes a stable, valid (version 4 layout) GUID from the spec
// digest, so equal specs give byte-equal partition tables.
func derivedGUID(digest, name string) string {
	h := sha256.Sum256([]byte(digest + "\x00" + name))
	h[6] = h[6]&0x0f | 0x40
	h[8] = h[8]&0x3f | 0x80
	u, _ := uuid.FromBytes(h[:16])
	return strings.ToUpper(u.String())
}

// assemble writes the GPT, slot A, the data partition, the ESP and the
// BIOS boot loader into a new raw file, in the order an upgrade follows:
// the slot is written and verified before the boot environment that makes
// it bootable exists.
func (b *builder) assemble(ctx context.Context, rawPath string, slot slotInfo) (layout, error) {
	l := planLayout(b.spec, b.digest)
	var espPart, slotA, dataPart, biosPart partSpec
	for _, p := range []struct {
		n   int
		dst *partSpec
	}{{osimage.PartESP, &espPart}, {osimage.PartA, &slotA}, {osimage.PartData, &dataPart}, {osimage.PartBIOS, &biosPart}} {
		var err error
		if *p.dst, err = l.part(p.n); err != nil {
			return l, err
		}
	}
	efi := grubefi.New(grubefi.WithLogger(b.log), grubefi.WithWorkDir(b.work))
	pc := grubpc.New(grubpc.WithLogger(b.log), grubpc.WithWorkDir(b.work))
	// Both boot loaders are built, and core.img checked against the BIOS
	// boot partition, before anything is written.
	for _, bl := range []bootloader.Bootloader{efi, pc} {
		if err := bl.Prepare(ctx, bootloader.Target{BIOSBoot: biosPart.extent()}); err != nil {
			return l, err
		}
	}
	os.Remove(rawPath)
	d, err := diskfs.Create(rawPath, l.total, diskfs.SectorSizeDefault)
	if err != nil {
		return l, fmt.Errorf("create %s: %w", rawPath, err)
	}
	table := &gpt.Table{LogicalSectorSize: sectorSize, PhysicalSectorSize: sectorSize, ProtectiveMBR: true, GUID: l.guid}
	for _, p := range l.parts {
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: p.num, Start: uint64(p.start / sectorSize), Size: uint64(p.size),
			Type: gpt.Type(p.typ), Name: p.label, GUID: p.guid,
		})
	}
	if err := d.Partition(table); err != nil {
		d.Close()
		return l, fmt.Errorf("write GPT: %w", err)
	}
	if err := d.Close(); err != nil {
		return l, fmt.Errorf("close %s: %w", rawPath, err)
	}
	data, err := b.mkData(ctx, dataPart)
	if err != nil {
		return l, fmt.Errorf("data partition: %w", err)
	}
	raw, err := os.OpenFile(rawPath, os.O_RDWR, 0)
	if err != nil {
		return l, err
	}
	defer raw.Close()
	// The file is new and sparse: zero runs stay holes.
	for _, w := range []struct {
		part   partSpec
		file   string
		digest string
	}{{slotA, slot.path, slot.digest}, {dataPart, data, ""}} {
		if err := b.writePartition(ctx, raw, w.part, w.file, w.digest); err != nil {
			return l, fmt.Errorf("partition %d (%s): %w", w.part.num, w.part.label, err)
		}
	}
	if err := b.writeESP(ctx, rawPath, efi); err != nil {
		return l, fmt.Errorf("ESP: %w", err)
	}
	// go-diskfs is done with the ESP: make fsck.vfat accept it and give
	// every entry the build's time.
	if err := esp.Finish(raw, espPart.start, time.Unix(b.epoch, 0)); err != nil {
		return l, fmt.Errorf("ESP: %w", err)
	}
	if err := pc.Install(ctx, bootloader.Target{Disk: raw, BIOSBoot: biosPart.extent()}); err != nil {
		return l, err
	}
	return l, raw.Sync()
}

// writePartition streams file onto its partition of the new raw image
// (slotwriter: bounded memory, read back and verified), checking the
// digest the squashfs phase computed when there is one.
func (b *builder) writePartition(ctx context.Context, raw *os.File, p partSpec, file, digest string) error {
	src, err := os.Open(file)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	opts := []slotwriter.Option{slotwriter.WithExpectedSize(st.Size()), slotwriter.WithLogger(b.log)}
	if digest != "" {
		opts = append(opts, slotwriter.WithExpectedDigest(digest))
	}
	_, err = slotwriter.Write(ctx, src, slotwriter.Target{Device: raw, Offset: p.start, Size: p.size, Sparse: true}, opts...)
	return err
}

// writeESP formats partition 1 as FAT32 (go-diskfs, reproducible mode)
// and writes the boot loader, its configuration, the preseed if any and
// both grubenv copies, in name order (which fixes cluster allocation).
func (b *builder) writeESP(ctx context.Context, rawPath string, efi bootloader.Bootloader) error {
	d, err := diskfs.Open(rawPath, diskfs.WithOpenMode(diskfs.ReadWrite))
	if err != nil {
		return fmt.Errorf("open %s: %w", rawPath, err)
	}
	if err := b.writeESPFiles(ctx, d, efi); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

func (b *builder) writeESPFiles(ctx context.Context, d *disk.Disk, efi bootloader.Bootloader) error {
	fs, err := esp.Create(d, osimage.PartESP)
	if err != nil {
		return err
	}
	t := bootloader.Target{ESP: fs}
	if err := efi.Install(ctx, t); err != nil { // EFI/BOOT/BOOTX64.EFI
		return err
	}
	if b.spec.Preseed != "" { // debvisor/...
		files, err := b.preseedFiles()
		if err != nil {
			return err
		}
		if err := fs.WriteFiles(ctx, files); err != nil {
			return err
		}
	}
	if err := efi.Configure(ctx, t, bootConfig(b.spec)); err != nil { // grub/grub.cfg
		return err
	}
	// grub/grubenv, grub/grubenv.bak: slot A bootable and untried.
	return bootenv.NewStore(fs, bootenv.WithLogger(b.log)).Save(ctx, bootenv.New())
}

// preseedFiles reads the spec's preseed and the files it names (PKI, a
// cluster CA), for the ESP, where firstboot looks when no seed volume is
// attached.
func (b *builder) preseedFiles() (map[string][]byte, error) {
	files := map[string][]byte{}
	src := b.spec.resolve(b.spec.Preseed)
	data, err := os.ReadFile(src)
	if err != nil {
		return nil, fmt.Errorf("preseed: %w", err)
	}
	p, err := osimage.ParsePreseed(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	files[osimage.ESPPreseed] = data
	for _, f := range p.SeedFiles() {
		c, err := os.ReadFile(filepath.Join(filepath.Dir(src), f))
		if err != nil {
			return nil, fmt.Errorf("preseed files: %w", err)
		}
		files[path.Join(path.Dir(osimage.ESPPreseed), f)] = c
	}
	return files, nil
}

// mkData makes the small ext4 for debvisor-data with a fixed UUID, hash
// seed and clock so it is reproducible; firstboot grows it.
func (b *builder) mkData(ctx context.Context, p partSpec) (string, error) {
	out := filepath.Join(b.work, "data.ext4")
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	if err := f.Truncate(p.size); err != nil {
		f.Close()
		return "", err
	}
	f.Close()
	fsUUID := strings.ToLower(derivedGUID(b.digest, "data-fs"))
	seed := strings.ToLower(derivedGUID(b.digest, "data-hash"))
	env := []string{fmt.Sprintf("E2FSPROGS_FAKE_TIME=%d", b.epoch)}
	err = b.cmd(ctx, env, "mkfs.ext4", "-q", "-F", "-L", osimage.LabelData, "-U", fsUUID,
		"-E", "hash_seed="+seed+",lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0", "-b", "4096", out)
	return out, err
}
