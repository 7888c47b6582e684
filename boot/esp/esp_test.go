package esp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/osimage"
)

// The ESP serves the boot environment store.
var _ bootenv.FS = (*FS)(nil)

var epoch = time.Unix(1700000000, 0)

// TestStampTimes: go-diskfs stamps entries with SOURCE_DATE_EPOCH or the
// wall clock; after Finish two ESPs made under different clocks are
// byte-identical, fsck.vfat accepts them, and every entry carries the
// given time.
func TestStampTimes(t *testing.T) {
	requireFsck(t)
	var images [][]byte
	for i, env := range []string{"1000000000", ""} {
		t.Setenv("SOURCE_DATE_EPOCH", env)
		if env == "" {
			os.Unsetenv("SOURCE_DATE_EPOCH") // the wall clock
		}
		p := filepath.Join(t.TempDir(), "esp.img")
		newFAT(t, p, 40, espTree)
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := Finish(f, 0, epoch); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if out, err := exec.Command("fsck.vfat", "-n", p).CombinedOutput(); err != nil {
			t.Fatalf("image %d: fsck.vfat after Finish: %v\n%s", i, err, out)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, b)

		d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
		if err != nil {
			t.Fatal(err)
		}
		rfs, err := d.GetFilesystem(0)
		if err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{".", "EFI", "EFI/BOOT", "grub", "debvisor", "debvisor/pki"} {
			ents, err := rfs.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				info, err := e.Info()
				if err != nil {
					t.Fatal(err)
				}
				if !info.ModTime().Equal(epoch.UTC()) {
					t.Errorf("image %d: %s/%s has time %s, want %s", i, dir, e.Name(), info.ModTime(), epoch.UTC())
				}
			}
		}
		d.Close()
	}
	if !bytes.Equal(images[0], images[1]) {
		t.Fatal("two ESPs made under different clocks differ after Finish")
	}
}

func TestFATDateTime(t *testing.T) {
	tests := []struct {
		in          time.Time
		date, clock uint16
	}{
		{time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC), 43<<9 | 11<<5 | 14, 22<<11 | 13<<5 | 10},
		{time.Date(1980, 1, 1, 0, 0, 1, 0, time.UTC), 1<<5 | 1, 0},
		{time.Unix(0, 0), 1<<5 | 1, 0}, // before FAT's epoch: clamped
		{time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), 127<<9 | 12<<5 | 31, 23<<11 | 59<<5 | 29},
		{time.Date(2023, 11, 15, 0, 13, 20, 0, time.FixedZone("x", 2*3600)), 43<<9 | 11<<5 | 14, 22<<11 | 13<<5 | 10},
	}
	for _, tt := range tests {
		d, c := fatDateTime(tt.in)
		if d != tt.date || c != tt.clock {
			t.Errorf("fatDateTime(%s) = %#x %#x, want %#x %#x", tt.in, d, c, tt.date, tt.clock)
		}
	}
}

// gptImage makes a disk with the ESP as partition 1 and an empty
// partition 2, the ESP formatted and holding files, finished as the
// builder does.
func gptImage(t *testing.T, files map[string][]byte) (path string, espStart, espSize int64) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	d, err := diskfs.Create(p, 64<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	espStart, espSize = 1<<20, 40<<20
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, GUID: "6E1F4D38-1D52-4B4B-9C61-0C1A4CEF2F00"}
	table.Partitions = []*gpt.Partition{
		{Index: osimage.PartESP, Start: uint64(espStart / 512), Size: uint64(espSize), Type: gpt.Type(osimage.TypeEFISystem), Name: osimage.LabelESP, GUID: "6E1F4D38-1D52-4B4B-9C61-0C1A4CEF2F01"},
		{Index: osimage.PartA, Start: uint64((espStart + espSize) / 512), Size: 8 << 20, Type: gpt.Type(osimage.TypeLinuxFilesystem), Name: osimage.LabelA, GUID: "6E1F4D38-1D52-4B4B-9C61-0C1A4CEF2F02"},
	}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	fs, err := Create(d, osimage.PartESP)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.WriteFiles(context.Background(), files); err != nil {
		t.Fatal(err)
	}
	d.Close()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Finish(f, espStart, epoch); err != nil {
		t.Fatal(err)
	}
	return p, espStart, espSize
}

// fsckPartition runs fsck.vfat -n on a copy of the ESP's bytes.
func fsckPartition(t *testing.T, image string, start, size int64) {
	t.Helper()
	src, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := filepath.Join(t.TempDir(), "esp.img")
	dst, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, io.NewSectionReader(src, start, size)); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	if o, err := exec.Command("fsck.vfat", "-n", out).CombinedOutput(); err != nil {
		t.Fatalf("fsck.vfat on the ESP: %v\n%s", err, o)
	}
}

// TestOpenReadWrite opens the ESP of a GPT image the way an installer or
// the emergency CLI would, reads and rewrites files, and checks that the
// result reads back, stays fsck-clean, and that a read-only open refuses
// writes.
func TestOpenReadWrite(t *testing.T) {
	requireFsck(t)
	ctx := context.Background()
	img, start, size := gptImage(t, espTree)

	f, err := Open(img)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := f.ReadFile(ctx, "grub/grub.cfg"); err != nil || string(got) != "cfg" {
		t.Fatalf("ReadFile: %q %v", got, err)
	}
	if _, err := f.ReadFile(ctx, "grub/nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
	long := bytes.Repeat([]byte("x"), 3000)
	for name, data := range map[string][]byte{
		"grub/grubenv":         bytes.Repeat([]byte("e"), 3), // same size: in place
		"grub/grub.cfg":        long,                         // grows
		"EFI/BOOT/BOOTX64.EFI": []byte("e"),                  // shrinks
		"new/dir/file":         []byte("new"),                // new directories
	} {
		if err := f.WriteFile(ctx, name, data); err != nil {
			t.Fatalf("WriteFile %s: %v", name, err)
		}
	}
	if err := f.WriteFile(ctx, "../escape", nil); err == nil {
		t.Fatal("WriteFile accepted a path outside the ESP")
	}
	f.Close()
	fsckPartition(t, img, start, size)

	r, err := Open(img, ReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for name, want := range map[string][]byte{"grub/grubenv": []byte("eee"), "grub/grub.cfg": long, "EFI/BOOT/BOOTX64.EFI": []byte("e"), "new/dir/file": []byte("new"), "debvisor/pki/node1.crt": []byte("crt")} {
		if got, err := r.ReadFile(ctx, name); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, %v; want %d bytes", name, len(got), err, len(want))
		}
	}
	if err := r.WriteFile(ctx, "grub/grubenv", []byte("x")); err == nil {
		t.Fatal("a read-only ESP accepted a write")
	}
}

func TestOpenRefuses(t *testing.T) {
	p := filepath.Join(t.TempDir(), "blank.raw")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p); err == nil {
		t.Fatal("Open accepted a disk without a partition table")
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("Open accepted a missing file")
	}
}

// TestBootEnvStoreOnImage: the grubenv store repairs a damaged copy inside
// a disk image, without mounting it, and the ESP stays fsck-clean.
func TestBootEnvStoreOnImage(t *testing.T) {
	requireFsck(t)
	ctx := context.Background()
	env, err := bootenv.New().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	img, start, size := gptImage(t, map[string][]byte{osimage.ESPGrubEnv: make([]byte, bootenv.BlockSize), osimage.ESPGrubEnvBackup: env})
	f, err := Open(img)
	if err != nil {
		t.Fatal(err)
	}
	s := bootenv.NewStore(f)
	if err := s.Activate(ctx, osimage.SlotB); err != nil {
		t.Fatal(err)
	}
	f.Close()
	fsckPartition(t, img, start, size)
	r, err := Open(img, ReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := bootenv.NewStore(r).Read(ctx)
	if err != nil || c.RepairPrimary || c.RepairBackup {
		t.Fatalf("copies after Activate: %+v %v", c, err)
	}
	if next := c.Env.NextBoot().Slot; next != osimage.SlotB {
		t.Fatalf("next boot %s, want B", next)
	}
}
