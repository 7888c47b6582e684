package imagebuilder

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
)

// TestFixFAT32 formats a FAT32 filesystem with go-diskfs, writes the ESP's
// kind of tree into it, and checks that fsck.vfat rejects it before
// fixFAT32 and accepts it after, and that the files still read back.
func TestFixFAT32(t *testing.T) {
	if _, err := exec.LookPath("fsck.vfat"); err != nil {
		t.Fatalf("fsck.vfat is required (dosfstools): %v", err)
	}
	files := map[string]string{
		"EFI/BOOT/BOOTX64.EFI":   "efi",
		"grub/grub.cfg":          "cfg",
		"grub/grubenv":           "env",
		"debvisor/preseed.yaml":  "version: 1\n",
		"debvisor/pki/node1.crt": "crt",
	}
	p := filepath.Join(t.TempDir(), "esp.img")
	d, err := diskfs.Create(p, 100<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat32, VolumeLabel: "DEBVISOR", Reproducible: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range sortedKeys(files) {
		if err := fsWrite(fs, name, []byte(files[name])); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	d.Close()

	if out, err := exec.Command("fsck.vfat", "-n", p).CombinedOutput(); err == nil {
		t.Fatalf("fsck.vfat accepts go-diskfs' FAT32 as written: the workaround may be obsolete\n%s", out)
	} else if !strings.Contains(string(out), "'..'") {
		t.Logf("fsck.vfat before the fix:\n%s", out)
	}

	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := fixFAT32(f, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("fsck.vfat", "-n", p).CombinedOutput(); err != nil {
		t.Fatalf("fsck.vfat after fixFAT32: %v\n%s", err, out)
	}
	// Idempotent, and the files still read back.
	f, _ = os.OpenFile(p, os.O_RDWR, 0)
	if err := fixFAT32(f, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d, err = diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rfs, err := d.GetFilesystem(0)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := rfs.ReadFile("/" + name)
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestFixFAT32Refuses(t *testing.T) {
	tests := []struct {
		name string
		bs   func() []byte
		want string
	}{
		{"no signature", func() []byte { return make([]byte, 512) }, "signature"},
		{"FAT16 layout", func() []byte {
			b := make([]byte, 512)
			b[510], b[511] = 0x55, 0xAA
			b[11], b[13], b[16], b[22] = 0, 1, 2, 9 // 16-bit FAT size set: not FAT32
			b[12] = 2
			return b
		}, "not a FAT32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.img")
			if err := os.WriteFile(p, tt.bs(), 0o644); err != nil {
				t.Fatal(err)
			}
			f, _ := os.OpenFile(p, os.O_RDWR, 0)
			defer f.Close()
			err := fixFAT32(f, 0)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
