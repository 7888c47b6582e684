package imagebuilder

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
)

// TestESPSizes formats FAT32 with go-diskfs at sizes around the ones the
// spec allows and runs fsck.vfat -n on each: the sizes espSizeOK accepts
// must pass, and the known-bad sizes must still be bad (else the table is
// stale and can shrink).
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
		_, err = d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat32, VolumeLabel: "DEBVISOR", Reproducible: true})
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
