package imagebuilder

import (
	"fmt"
	"os"
	"path"
	"path/filepath"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"github.com/debvisor/debvisor/osimage"
)

// MakeSeed writes an ISO9660 volume labelled DEBVISOR-SEED holding the
// preseed (as preseed.yaml) and the files it names (PKI, a cluster CA). Attach it to a VM
// or write it to a USB stick; firstboot applies it. The ISO is written to a
// temporary name and renamed, so a failure leaves nothing at out.
func MakeSeed(preseedFile, out string) error {
	data, err := os.ReadFile(preseedFile)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	p, err := osimage.ParsePreseed(data)
	if err != nil {
		return fmt.Errorf("seed: %s: %w", preseedFile, err)
	}
	files := map[string][]byte{osimage.SeedFile: data}
	size := int64(len(data))
	for _, f := range p.SeedFiles() {
		c, err := os.ReadFile(filepath.Join(filepath.Dir(preseedFile), f))
		if err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		files[filepath.ToSlash(f)] = c
		size += int64(len(c))
	}
	tmp := out + partialSf
	os.Remove(tmp)
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	d, err := diskfs.Create(tmp, size+4<<20, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	defer d.Close()
	// ISO9660 uses 2048-byte logical blocks.
	d.LogicalBlocksize = 2048
	work, err := os.MkdirTemp("", "debvisor-seed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeISO9660, VolumeLabel: osimage.SeedLabel, WorkDir: work})
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	for _, name := range sortedKeys(files) {
		if err := isoWrite(fs, name, files[name]); err != nil {
			return fmt.Errorf("seed: write %s: %w", name, err)
		}
	}
	iso, isISO := fs.(*iso9660.FileSystem)
	if !isISO {
		return fmt.Errorf("seed: go-diskfs made %T, not ISO9660", fs)
	}
	if err := iso.Finalize(iso9660.FinalizeOptions{RockRidge: true, VolumeIdentifier: osimage.SeedLabel}); err != nil {
		return fmt.Errorf("seed: finalize ISO: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	ok = true
	return nil
}

// isoWrite adds one file to the ISO9660 volume being built.
func isoWrite(fs filesystem.FileSystem, name string, data []byte) error {
	if dir := path.Dir(name); dir != "." {
		if err := fs.Mkdir("/" + dir); err != nil {
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
