package imagebuilder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"

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
func (l layout) part(n int) partSpec {
	for _, p := range l.parts {
		if p.num == n {
			return p
		}
	}
	panic(fmt.Sprintf("layout has no partition %d", n))
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

// assemble writes the GPT, the ESP, slot A, the data partition and the
// BIOS boot loader into a new raw file.
func (b *builder) assemble(ctx context.Context, rawPath string, slot slotInfo) (layout, error) {
	l := planLayout(b.spec, b.digest)
	bios := l.part(osimage.PartBIOS)
	// core.img is built first so a too-large one fails before any writing.
	bb, err := b.grubBIOS(ctx)
	if err != nil {
		return l, err
	}
	if err := checkBIOSFit(bb.core, bios.size/sectorSize); err != nil {
		return l, fmt.Errorf("BIOS boot partition: %w", err)
	}
	os.Remove(rawPath)
	// go-diskfs stamps FAT entries with SOURCE_DATE_EPOCH when set
	// (util/timestamp); the build's epoch must win over the wall clock.
	prev, had := os.LookupEnv("SOURCE_DATE_EPOCH")
	os.Setenv("SOURCE_DATE_EPOCH", fmt.Sprint(b.epoch))
	defer func() {
		if had {
			os.Setenv("SOURCE_DATE_EPOCH", prev)
		} else {
			os.Unsetenv("SOURCE_DATE_EPOCH")
		}
	}()
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
	if err := b.writeESP(ctx, d); err != nil {
		d.Close()
		return l, fmt.Errorf("ESP: %w", err)
	}
	if err := d.Close(); err != nil {
		return l, fmt.Errorf("close %s: %w", rawPath, err)
	}
	data, err := b.mkData(ctx, l.part(osimage.PartData))
	if err != nil {
		return l, fmt.Errorf("data partition: %w", err)
	}
	// go-diskfs' WritePartitionContents insists on filling the whole
	// partition; the slot is smaller than that, and zero runs are better
	// left as holes, so the contents are copied at their offsets here.
	raw, err := os.OpenFile(rawPath, os.O_RDWR, 0)
	if err != nil {
		return l, err
	}
	defer raw.Close()
	if err := fixFAT32(raw, l.part(osimage.PartESP).start); err != nil {
		return l, fmt.Errorf("ESP: %w", err)
	}
	for _, w := range []struct {
		part partSpec
		file string
	}{{l.part(osimage.PartA), slot.path}, {l.part(osimage.PartData), data}} {
		if err := copySparseAt(raw, w.part.start, w.part.size, w.file); err != nil {
			return l, fmt.Errorf("partition %d (%s): %w", w.part.num, w.part.label, err)
		}
	}
	if err := installBIOSBoot(raw, bb, bios.start/sectorSize, bios.size/sectorSize); err != nil {
		return l, fmt.Errorf("BIOS boot loader: %w", err)
	}
	return l, raw.Sync()
}

// copySparseAt writes file into dst at off, skipping all-zero blocks (the
// destination is a fresh sparse file, so they already read as zeros).
func copySparseAt(dst *os.File, off, limit int64, file string) error {
	src, err := os.Open(file)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if st.Size() > limit {
		return fmt.Errorf("%s is %d bytes, the partition only %d", file, st.Size(), limit)
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for pos := int64(0); ; {
		n, err := io.ReadFull(src, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := dst.WriteAt(buf[:n], off+pos); werr != nil {
				return werr
			}
		}
		pos += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// writeESP formats partition 1 as FAT32 (go-diskfs, reproducible mode)
// and writes the boot loader, its configuration and both grubenv copies.
func (b *builder) writeESP(ctx context.Context, d *disk.Disk) error {
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: osimage.PartESP, FSType: filesystem.TypeFat32, VolumeLabel: "DEBVISOR", Reproducible: true})
	if err != nil {
		return fmt.Errorf("format FAT32: %w", err)
	}
	efi, err := b.grubEFI(ctx)
	if err != nil {
		return err
	}
	cfg, err := RenderGrubCfg(b.spec)
	if err != nil {
		return err
	}
	env, err := osimage.NewBootEnv().Marshal()
	if err != nil {
		return err
	}
	files := map[string][]byte{
		osimage.ESPBootloader:    efi,
		osimage.ESPGrubCfg:       cfg,
		osimage.ESPGrubEnv:       env,
		osimage.ESPGrubEnvBackup: env,
	}
	if b.spec.Preseed != "" {
		if err := b.addPreseed(files); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(files) {
		if err := fsWrite(fs, name, files[name]); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// addPreseed copies the spec's preseed and the PKI files it names to the
// ESP, where firstboot looks when no seed volume is attached.
func (b *builder) addPreseed(files map[string][]byte) error {
	src := b.spec.resolve(b.spec.Preseed)
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("preseed: %w", err)
	}
	p, err := osimage.ParsePreseed(data)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	files[osimage.ESPPreseed] = data
	if p.PKI != nil {
		for _, f := range []string{p.PKI.CA, p.PKI.Cert, p.PKI.Key} {
			c, err := os.ReadFile(filepath.Join(filepath.Dir(src), f))
			if err != nil {
				return fmt.Errorf("preseed pki: %w", err)
			}
			files[path.Join(path.Dir(osimage.ESPPreseed), f)] = c
		}
	}
	return nil
}

func fsWrite(fs filesystem.FileSystem, name string, data []byte) error {
	dir := "/" + path.Dir(name)
	if dir != "/." {
		if err := fs.Mkdir(dir); err != nil {
			return err
		}
	}
	f, err := fs.OpenFile("/"+name, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
