package vm

import (
	"fmt"
	"os"
	"path/filepath"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// writeSeed writes a cloud-init NoCloud seed ISO (volume label "cidata")
// holding user-data, meta-data and, when given, network-config. meta-data
// defaults to the VM's instance-id and hostname.
func writeSeed(path, name, uuid string, ci *v1.CloudInit) (err error) {
	files := map[string]string{
		"user-data": ci.UserData,
		"meta-data": ci.MetaData,
	}
	if files["meta-data"] == "" {
		files["meta-data"] = fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", uuid, name)
	}
	if files["user-data"] == "" {
		files["user-data"] = "#cloud-config\n{}\n"
	}
	if ci.NetworkConfig != "" {
		files["network-config"] = ci.NetworkConfig
	}
	size := int64(1 << 20)
	for _, c := range files {
		size += int64(len(c)) + 4096
	}
	// QEMU (its own user) must reach the ISO: the directory is
	// traversable, the seeds themselves readable.
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return fmt.Errorf("seed dir: %w", err)
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	work, err := os.MkdirTemp(filepath.Dir(path), ".seed-work-")
	if err != nil {
		return fmt.Errorf("seed workspace: %w", err)
	}
	defer os.RemoveAll(work)
	d, err := diskfs.Create(tmp, size, diskfs.SectorSize(2048))
	if err != nil {
		return fmt.Errorf("create seed image: %w", err)
	}
	defer d.Close()
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeISO9660, VolumeLabel: "cidata", WorkDir: work})
	if err != nil {
		return fmt.Errorf("create seed filesystem: %w", err)
	}
	for _, n := range []string{"meta-data", "user-data", "network-config"} {
		c, ok := files[n]
		if !ok {
			continue
		}
		f, err := fs.OpenFile("/"+n, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("seed %s: %w", n, err)
		}
		if _, err := f.Write([]byte(c)); err != nil {
			return fmt.Errorf("seed %s: %w", n, err)
		}
		_ = f.Close()
	}
	iso, ok := fs.(*iso9660.FileSystem)
	if !ok {
		return fmt.Errorf("seed filesystem is %T, not ISO9660", fs)
	}
	// Rock Ridge keeps the lower-case, dashed names cloud-init looks for.
	if err := iso.Finalize(iso9660.FinalizeOptions{RockRidge: true, VolumeIdentifier: "cidata"}); err != nil {
		return fmt.Errorf("finalize seed ISO: %w", err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
