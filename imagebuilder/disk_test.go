package imagebuilder

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/debvisor/debvisor/boot/esp"
	"github.com/debvisor/debvisor/osimage"
)

func mustPart(t *testing.T, l layout, n int) partSpec {
	t.Helper()
	p, err := l.part(n)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGrubCfgDefaultSpec: the default spec renders exactly the grub.cfg
// golden file that boot/bootloader/grub keeps beside its renderer.
func TestGrubCfgDefaultSpec(t *testing.T) {
	s, err := DefaultSpec()
	if err != nil {
		t.Fatal(err)
	}
	got, err := RenderGrubCfg(s)
	if err != nil {
		t.Fatal(err)
	}
	golden, err := os.ReadFile("../boot/bootloader/grub/testdata/grub.cfg.golden")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, golden) {
		t.Fatalf("grub.cfg for the default spec differs from boot/bootloader/grub/testdata/grub.cfg.golden (go test ./boot/bootloader/grub -run TestGrubCfgGolden -update to accept, after aligning its config):\n%s", got)
	}
}

func TestDerivedGUIDStable(t *testing.T) {
	a, b := derivedGUID("sha256:x", "disk"), derivedGUID("sha256:x", "disk")
	if a != b || a == derivedGUID("sha256:y", "disk") || a[14] != '4' {
		t.Fatalf("derived GUIDs: %s %s", a, b)
	}
}

func TestLayoutPartMissing(t *testing.T) {
	s, err := DefaultSpec()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := planLayout(s, "sha256:test").part(9); err == nil || !strings.Contains(err.Error(), "no partition 9") {
		t.Fatalf("part(9): %v", err)
	}
}

// TestBIOSLayout checks where partition 5 goes and that go-diskfs writes
// and reads it back there, and sgdisk accepts the table: from the first
// usable LBA after the GPT entries to just before the ESP, numbers 1-4
// unchanged and the data partition still last on disk.
func TestBIOSLayout(t *testing.T) {
	if _, err := exec.LookPath("sgdisk"); err != nil {
		t.Fatalf("sgdisk is required (gdisk): %v", err)
	}
	s, err := DefaultSpec()
	if err != nil {
		t.Fatal(err)
	}
	l := planLayout(s, "sha256:test")
	bios, espPart, data := mustPart(t, l, osimage.PartBIOS), mustPart(t, l, osimage.PartESP), mustPart(t, l, osimage.PartData)
	if bios.start != 34*sectorSize || bios.start+bios.size != espPart.start || bios.size/sectorSize != 2014 {
		t.Fatalf("BIOS boot partition at %d+%d, ESP at %d", bios.start, bios.size, espPart.start)
	}
	if ext := bios.extent(); ext.Start != 34 || ext.Sectors != 2014 {
		t.Fatalf("BIOS boot extent %+v", ext)
	}
	for i, n := range []int{1, 2, 3, 4, 5} {
		if l.parts[i].num != n {
			t.Fatalf("layout order %v: the manifest lists partitions by number", l.parts)
		}
		if n != osimage.PartData && l.parts[i].start > data.start {
			t.Fatalf("partition %d lies after the data partition", n)
		}
	}
	p := filepath.Join(t.TempDir(), "disk.raw")
	d, err := diskfs.Create(p, l.total, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	table := &gpt.Table{LogicalSectorSize: sectorSize, PhysicalSectorSize: sectorSize, ProtectiveMBR: true, GUID: l.guid}
	for _, ps := range l.parts {
		table.Partitions = append(table.Partitions, &gpt.Partition{Index: ps.num, Start: uint64(ps.start / sectorSize), Size: uint64(ps.size), Type: gpt.Type(ps.typ), Name: ps.label, GUID: ps.guid})
	}
	if err := d.Partition(table); err != nil {
		t.Fatalf("go-diskfs refused the layout: %v", err)
	}
	d.Close()
	d, err = diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, gp := range pt.(*gpt.Table).Partitions {
		if gp.Index == osimage.PartBIOS {
			found = gp.GetStart() == bios.start && gp.GetSize() == bios.size && gp.Name == osimage.LabelBIOS && strings.EqualFold(string(gp.Type), osimage.TypeBIOSBoot)
		}
	}
	if !found {
		t.Fatalf("partition 5 not read back as written: %+v", pt.GetPartitions())
	}
	out, err := exec.Command("sgdisk", "-v", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v: %v\n%s", err, out)
	}
	out, err = exec.Command("sgdisk", "-i", "5", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "BIOS boot partition") || !strings.Contains(string(out), "First sector: 34 ") {
		t.Fatalf("sgdisk -i 5: %v\n%s", err, out)
	}
}

// TestESPSizes formats FAT32 with go-diskfs (esp.Create, as the builder
// does) at sizes around the ones the spec allows and runs fsck.vfat -n on
// each: the sizes espSizeOK accepts must pass, and the known-bad sizes must
// still be bad (else the table is stale and can shrink).
func TestESPSizes(t *testing.T) {
	if _, err := exec.LookPath("fsck.vfat"); err != nil {
		t.Fatalf("fsck.vfat is required (dosfstools): %v", err)
	}
	sizes := []int64{40, 48, 96, 100, 128, 200, 256, 64, 129, 194}
	for _, mib := range sizes {
		p := filepath.Join(t.TempDir(), "esp.img")
		d, err := diskfs.Create(p, mib<<20, diskfs.SectorSizeDefault)
		if err != nil {
			t.Fatal(err)
		}
		_, err = esp.Create(d, 0)
		d.Close()
		if err != nil {
			t.Fatalf("%d MiB: %v", mib, err)
		}
		out, err := exec.Command("fsck.vfat", "-n", p).CombinedOutput()
		fsckOK := err == nil
		if want := espSizeOK(Size(mib) * MiB); fsckOK != want {
			t.Errorf("%d MiB: fsck.vfat ok=%v but espSizeOK=%v\n%s", mib, fsckOK, want, out)
		}
		os.Remove(p)
	}
}
