package grubpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/debvisor/debvisor/boot/bootloader"
	"github.com/debvisor/debvisor/osimage"
)

const mib = 1 << 20

// gptFirstUsableLBA is the first sector after a GPT with 128 entries: where
// the image builder starts the BIOS boot partition.
const gptFirstUsableLBA = 34

// ext is the BIOS boot partition from the first usable LBA to 1 MiB.
var ext = bootloader.Extent{Start: gptFirstUsableLBA, Sectors: (mib - gptFirstUsableLBA*sectorSize) / sectorSize}

// synthDisk makes a small GPT disk with go-diskfs the way the builder does:
// the BIOS boot partition (5) from the first usable LBA up to the ESP (1)
// at 1 mib. It returns the open file.
func synthDisk(t *testing.T) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	d, err := diskfs.Create(p, 4<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	table := &gpt.Table{LogicalSectorSize: sectorSize, PhysicalSectorSize: sectorSize, ProtectiveMBR: true, GUID: "0B2D6F52-4C7A-4B1E-9E39-5E1C2A7D4F00"}
	table.Partitions = []*gpt.Partition{
		{Index: osimage.PartESP, Start: mib / sectorSize, Size: 2 * mib, Type: gpt.Type(osimage.TypeEFISystem), Name: osimage.LabelESP, GUID: "0B2D6F52-4C7A-4B1E-9E39-5E1C2A7D4F01"},
		{Index: osimage.PartBIOS, Start: gptFirstUsableLBA, Size: mib - gptFirstUsableLBA*sectorSize, Type: gpt.Type(osimage.TypeBIOSBoot), Name: osimage.LabelBIOS, GUID: "0B2D6F52-4C7A-4B1E-9E39-5E1C2A7D4F05"},
	}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	d.Close()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// synthBoot makes a boot.img and a core.img of coreSectors sectors with
// every byte non-zero and recognisable, and diskboot's fields as
// grub-mkimage leaves them: first blocklist entry {2, n-1, 0x820}, a zero
// terminator below it, and the Reed-Solomon length field set.
func synthBoot(coreSectors int) Images {
	boot := make([]byte, sectorSize)
	for i := range boot {
		boot[i] = byte(i%251) + 1
	}
	boot[0], boot[1] = 0xeb, 0x63
	core := make([]byte, coreSectors*sectorSize-100) // not a whole number of sectors
	for i := range core {
		core[i] = byte(i%241) + 3
	}
	bl := core[firstBlocklist:]
	binary.LittleEndian.PutUint64(bl, 2)
	binary.LittleEndian.PutUint16(bl[8:], uint16(coreSectors-1))
	binary.LittleEndian.PutUint16(bl[10:], 0x820)
	copy(core[firstBlocklist-blocklistEntry:firstBlocklist], make([]byte, blocklistEntry))
	binary.LittleEndian.PutUint16(core[kernelNoRSLength:], 0x75b)
	return Images{Boot: boot, Core: core}
}

func readAt(t *testing.T, f io.ReaderAt, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInstallBIOSBoot patches a synthetic image and compares every byte
// of the MBR and of core.img's first sector with what grub-bios-setup
// writes (util/setup.c: BPB kept, kernel sector, boot drive 0xff, drive
// check NOPs, partition table and signature kept; one blocklist run from
// the sector after core.img's first).
func TestInstallBIOSBoot(t *testing.T) {
	const partLBA = gptFirstUsableLBA
	f := synthDisk(t)
	origMBR := readAt(t, f, 0, sectorSize)
	bb := synthBoot(409)
	if err := WriteBootCode(f, bb, ext); err != nil {
		t.Fatal(err)
	}

	want := bytes.Clone(origMBR)
	copy(want[:0x1b8], bb.Boot[:0x1b8])
	copy(want[0x03:0x5a], origMBR[0x03:0x5a])
	copy(want[0x5c:], []byte{partLBA, 0, 0, 0, 0, 0, 0, 0, 0xff})
	want[0x66], want[0x67] = 0x90, 0x90
	got := readAt(t, f, 0, sectorSize)
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("MBR byte %#x: got %#02x, want %#02x", i, got[i], want[i])
			}
		}
	}
	if got[0x1fe] != 0x55 || got[0x1ff] != 0xaa || got[0x1be+4] != 0xee {
		t.Fatalf("protective MBR entry or signature lost: % x", got[0x1be:])
	}

	core := readAt(t, f, partLBA*sectorSize, 409*sectorSize)
	wantCore := make([]byte, 409*sectorSize)
	copy(wantCore, bb.Core)
	copy(wantCore[0x200-12:0x200], []byte{partLBA + 1, 0, 0, 0, 0, 0, 0, 0, 0x98, 0x01, 0x20, 0x08})
	if !bytes.Equal(core, wantCore) {
		t.Fatalf("core.img in the partition differs; first sector tail % x, want % x", core[0x1e0:0x200], wantCore[0x1e0:0x200])
	}
	// Nothing after core.img and nothing before the partition was touched.
	if after := readAt(t, f, (partLBA+409)*sectorSize, sectorSize); !bytes.Equal(after, make([]byte, sectorSize)) {
		t.Fatal("WriteBootCode wrote past core.img")
	}

	rep, err := ReadInstalled(f, ext)
	if err != nil {
		t.Fatalf("ReadInstalled on the installed image: %v", err)
	}
	if rep.CoreLBA != partLBA || rep.CoreSectors != 409 {
		t.Fatalf("ReadInstalled: %+v", rep)
	}
}

// TestInstallBIOSBootRefuses covers the inputs WriteBootCode must not
// turn into an unbootable disk.
func TestInstallBIOSBootRefuses(t *testing.T) {
	tests := []struct {
		name   string
		sector int64 // partition size in sectors
		mutate func(*Images)
		want   string
	}{
		{"core larger than the partition", 100, nil, "holds only 100"},
		{"core too small", 2014, func(b *Images) { b.Core = b.Core[:300] }, "too small"},
		{"boot.img wrong size", 2014, func(b *Images) { b.Boot = b.Boot[:400] }, "boot.img is 400 bytes"},
		{"unexpected segment", 2014, func(b *Images) { b.Core[0x1fe] = 0 }, "segment"},
		{"length not filled by grub-mkimage", 2014, func(b *Images) { b.Core[0x1fc], b.Core[0x1fd] = 0, 0 }, "length is 0"},
		{"no terminator", 2014, func(b *Images) { b.Core[0x1f0] = 1 }, "second blocklist entry"},
		{"not a GRUB 2 core", 2014, func(b *Images) { b.Core[kernelNoRSLength], b.Core[kernelNoRSLength+1] = 0xff, 0xff }, "Reed-Solomon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := synthDisk(t)
			bb := synthBoot(409)
			if tt.mutate != nil {
				tt.mutate(&bb)
			}
			err := WriteBootCode(f, bb, bootloader.Extent{Start: gptFirstUsableLBA, Sectors: tt.sector})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.want)
			}
			if mbr := readAt(t, f, 0, 0x1b8); !bytes.Equal(mbr, make([]byte, 0x1b8)) {
				t.Fatal("a refused install still wrote the MBR")
			}
		})
	}
}

// TestReadBIOSBootProblems corrupts an installed image in the ways inspect
// must report.
func TestReadBIOSBootProblems(t *testing.T) {
	const partLBA = gptFirstUsableLBA
	part := bootloader.Extent{Start: partLBA, Sectors: 2014}
	tests := []struct {
		name string
		off  int64
		data []byte
		want string
	}{
		{"no boot code", 0, make([]byte, 0x1b8), "no boot code"},
		{"kernel sector elsewhere", 0x5c, []byte{35}, "from LBA 35"},
		{"signature gone", 0x1fe, []byte{0, 0}, "0x55AA"},
		{"blocklist not after first sector", partLBA*sectorSize + 0x1f4, []byte{99}, "starts at LBA 99"},
		{"blocklist empty", partLBA*sectorSize + 0x1fc, []byte{0, 0}, "empty"},
		{"core past the partition", partLBA*sectorSize + 0x1fc, []byte{0xff, 0x07}, "past the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := synthDisk(t)
			if err := WriteBootCode(f, synthBoot(409), part); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(tt.data, tt.off); err != nil {
				t.Fatal(err)
			}
			_, err := ReadInstalled(f, part)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// TestGrubBIOSCoreFits builds the real core.img from Debian's i386-pc
// modules and installs it with Debian's boot.img into a synthetic disk: it
// must fit the gap before the ESP with room to spare, grub-mkimage's
// fields must be where WriteBootCode expects them, and two builds must
// be identical (the image is reproducible). It goes through the
// Bootloader interface as the builder and an installer do.
func TestGrubBIOSCoreFits(t *testing.T) {
	if _, err := exec.LookPath("grub-mkimage"); err != nil {
		t.Fatalf("grub-mkimage is required (grub-common): %v", err)
	}
	ctx := context.Background()
	b := New(WithWorkDir(t.TempDir()))
	bb, err := b.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again, err := New(WithWorkDir(t.TempDir())).Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bb.Core, again.Core) {
		t.Fatal("grub-mkimage -O i386-pc is not deterministic")
	}
	n := sectorsFor(len(bb.Core))
	t.Logf("core.img: %d bytes, %d of %d sectors", len(bb.Core), n, ext.Sectors)
	if n > ext.Sectors/2 {
		t.Errorf("core.img uses %d of %d sectors: little room left for modules", n, ext.Sectors)
	}
	f := synthDisk(t)
	tgt := bootloader.Target{Disk: f, BIOSBoot: ext}
	if err := b.Prepare(ctx, bootloader.Target{BIOSBoot: bootloader.Extent{Start: gptFirstUsableLBA, Sectors: n - 1}}); err == nil {
		t.Fatal("Prepare accepted a BIOS boot partition one sector too small")
	}
	if err := b.Install(ctx, tgt); err != nil {
		t.Fatal(err)
	}
	mbr := readAt(t, f, 0, sectorSize)
	// The code around the patched fields is Debian's boot.img.
	if !bytes.Equal(mbr[0x68:0x1b8], bb.Boot[0x68:0x1b8]) || !bytes.Equal(mbr[:3], bb.Boot[:3]) {
		t.Fatal("MBR code is not boot.img's")
	}
	if rep, err := ReadInstalled(f, ext); err != nil || rep.CoreSectors != uint64(n) {
		t.Fatalf("ReadInstalled: %+v %v", rep, err)
	}
	if st, err := b.Check(ctx, tgt); err != nil || !strings.Contains(st.Summary, "LBA 34") {
		t.Fatalf("Check: %+v %v", st, err)
	}
}
