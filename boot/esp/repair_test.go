package esp

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
)

// espTree is the kind of tree the builder writes.
var espTree = map[string][]byte{
	"EFI/BOOT/BOOTX64.EFI":   []byte("efi"),
	"grub/grub.cfg":          []byte("cfg"),
	"grub/grubenv":           []byte("env"),
	"debvisor/preseed.yaml":  []byte("version: 1\n"),
	"debvisor/pki/node1.crt": []byte("crt"),
}

// newFAT formats a whole-disk FAT32 of mib MiB at p with go-diskfs and
// writes files into it.
func newFAT(t *testing.T, p string, mib int64, files map[string][]byte) {
	t.Helper()
	d, err := diskfs.Create(p, mib<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := Create(d, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.WriteFiles(context.Background(), files); err != nil {
		t.Fatal(err)
	}
}

func requireFsck(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("fsck.vfat"); err != nil {
		t.Fatalf("fsck.vfat is required (dosfstools): %v", err)
	}
}

// TestRepair formats a FAT32 filesystem with go-diskfs, writes the ESP's
// kind of tree into it, and checks that fsck.vfat rejects it before Repair
// and accepts it after, and that the files still read back.
func TestRepair(t *testing.T) {
	requireFsck(t)
	p := filepath.Join(t.TempDir(), "esp.img")
	newFAT(t, p, 100, espTree)

	if out, err := exec.Command("fsck.vfat", "-n", p).CombinedOutput(); err == nil {
		t.Fatalf("fsck.vfat accepts go-diskfs' FAT32 as written: the workaround may be obsolete\n%s", out)
	} else if !strings.Contains(string(out), "'..'") {
		t.Logf("fsck.vfat before the fix:\n%s", out)
	}

	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := Repair(f, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("fsck.vfat", "-n", p).CombinedOutput(); err != nil {
		t.Fatalf("fsck.vfat after Repair: %v\n%s", err, out)
	}
	// Idempotent, and the files still read back.
	f, _ = os.OpenFile(p, os.O_RDWR, 0)
	if err := Repair(f, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rfs, err := d.GetFilesystem(0)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range espTree {
		got, err := rfs.ReadFile("/" + name)
		if err != nil || string(got) != string(want) {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestRepairRefuses(t *testing.T) {
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
			for _, fn := range []func(Device, int64) error{Repair, func(d Device, off int64) error { return StampTimes(d, off, epoch) }} {
				err := fn(f, 0)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("got %v, want an error containing %q", err, tt.want)
				}
			}
		})
	}
}
