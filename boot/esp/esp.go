// Package esp owns the EFI system partition as DebVisor lays it out: a
// FAT32 filesystem made and written with go-diskfs (no mount, no loop
// device), the byte-level repairs that make go-diskfs' FAT32 acceptable to
// fsck.vfat (Repair), reproducible timestamps (StampTimes), and reading and
// writing files of the ESP inside a disk image or on a block device (FS).
// The image builder creates ESPs with it; installers and an emergency CLI
// use FS, which also serves as a bootenv.FS and a bootloader.Files.
package esp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"sort"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/debvisor/debvisor/osimage"
)

// Label is the ESP's FAT volume label.
const Label = "DEBVISOR"

const sectorSize = 512

// Device is a disk image or block device addressed in bytes.
type Device interface {
	io.ReaderAt
	io.WriterAt
}

// FS is an ESP's FAT32 filesystem, read and written through go-diskfs.
type FS struct {
	fs    *fat32.FileSystem
	store backend.Storage
	start int64
	// disk is set when FS opened the disk itself and must close it.
	disk *disk.Disk
}

// Create formats partition part of d (0: the whole disk) as a FAT32 ESP in
// go-diskfs' reproducible mode (a fixed volume id). The caller writes its
// files, then calls Finish on the raw disk once every go-diskfs write is
// done.
func Create(d *disk.Disk, part int) (*FS, error) {
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: part, FSType: filesystem.TypeFat32, VolumeLabel: Label, Reproducible: true})
	if err != nil {
		return nil, fmt.Errorf("format FAT32: %w", err)
	}
	fat, ok := fs.(*fat32.FileSystem)
	if !ok {
		return nil, fmt.Errorf("go-diskfs made %T, not FAT32", fs)
	}
	start := int64(0)
	if part != 0 {
		p, err := d.GetPartition(part)
		if err != nil {
			return nil, err
		}
		start = p.GetStart()
	}
	return &FS{fs: fat, store: d.Backend, start: start}, nil
}

// OpenOption configures Open.
type OpenOption func(*openOptions)

type openOptions struct{ readOnly bool }

// ReadOnly opens the disk without write access; WriteFile then fails.
func ReadOnly() OpenOption { return func(o *openOptions) { o.readOnly = true } }

// Open opens the ESP (GPT partition osimage.PartESP) of a disk image or
// block device. Opened for writing, the disk is opened exclusively, so a
// block device whose partitions are mounted is refused: on a running node
// use the mounted ESP (bootenv.DirFS) instead. Close releases the disk.
func Open(image string, opts ...OpenOption) (_ *FS, err error) {
	defer recoverReader(&err, image)
	var o openOptions
	for _, opt := range opts {
		opt(&o)
	}
	mode := diskfs.ReadWriteExclusive
	if o.readOnly {
		mode = diskfs.ReadOnly
	}
	d, err := diskfs.Open(image, diskfs.WithOpenMode(mode))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", image, err)
	}
	pt, err := d.GetPartitionTable()
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("%s: no readable partition table: %w", image, err)
	}
	table, ok := pt.(*gpt.Table)
	if !ok {
		d.Close()
		return nil, fmt.Errorf("%s: partition table is %s, not GPT", image, pt.Type())
	}
	for _, p := range table.Partitions {
		if p.Index != osimage.PartESP || p.Type == gpt.Unused {
			continue
		}
		if !strings.EqualFold(string(p.Type), osimage.TypeEFISystem) {
			d.Close()
			return nil, fmt.Errorf("%s: partition %d has type %s, not an EFI system partition", image, p.Index, p.Type)
		}
		f, err := OpenAt(d.Backend, p.GetStart(), p.GetSize())
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("%s: %w", image, err)
		}
		f.disk = d
		return f, nil
	}
	d.Close()
	return nil, fmt.Errorf("%s: no partition %d (the ESP)", image, osimage.PartESP)
}

// OpenAt reads the FAT32 filesystem of size bytes at byte start of store
// (a disk go-diskfs already opened, as inspect does). Closing the FS does
// not close store.
func OpenAt(store backend.Storage, start, size int64) (_ *FS, err error) {
	defer recoverReader(&err, "ESP")
	if err := checkBootSector(store, start, size); err != nil {
		return nil, fmt.Errorf("ESP: not a readable FAT32: %w", err)
	}
	fat, err := fat32.Read(store, size, start, sectorSize)
	if err != nil {
		return nil, fmt.Errorf("ESP: not a readable FAT32: %w", err)
	}
	return &FS{fs: fat, store: store, start: start}, nil
}

// FileSystem returns the go-diskfs filesystem, for walking it.
func (f *FS) FileSystem() filesystem.FileSystem { return f.fs }

// Close releases the disk when Open opened it.
func (f *FS) Close() error {
	if f.disk == nil {
		return nil
	}
	return f.disk.Close()
}

func checkName(name string) error {
	if !iofs.ValidPath(name) || name == "." {
		return fmt.Errorf("%q is not a path inside the ESP", name)
	}
	return nil
}

// ReadFile returns the contents of name (slash-separated, relative to the
// ESP's root). A missing file is an error wrapping fs.ErrNotExist.
func (f *FS) ReadFile(ctx context.Context, name string) (_ []byte, err error) {
	defer recoverReader(&err, "ESP "+name)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	info, err := lookup(f.fs, name)
	if err != nil {
		return nil, fmt.Errorf("ESP %s: %w", name, err)
	}
	fl, err := f.fs.OpenFile("/"+name, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	defer fl.Close()
	// One read of exactly the file's size: go-diskfs v1.9.4 reads past the
	// end of a file when a read starts inside a cluster (io.ReadAll's
	// growing buffer makes it do so), returning whole clusters.
	b := make([]byte, info.Size())
	if _, err := io.ReadFull(fl, b); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}

// WriteFile writes name, creating its directories. A file of the same
// size is overwritten in place (it keeps its clusters, as GRUB's save_env
// does to grubenv); otherwise it is truncated first. On an FS from Open it
// then repairs the filesystem's metadata (Repair) and fsyncs the disk, so
// the contents are durable on return; on one from Create or OpenAt the
// caller owns the disk and does both (Finish) when it is done writing.
func (f *FS) WriteFile(ctx context.Context, name string, data []byte) (err error) {
	defer recoverReader(&err, "ESP "+name)
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	if err := writeFile(f.fs, name, data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if f.disk == nil {
		return nil
	}
	w, err := f.store.Writable()
	if err != nil {
		return err
	}
	if err := Repair(w, f.start); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	osf, err := f.store.Sys()
	if err != nil {
		return fmt.Errorf("write %s: sync: %w", name, err)
	}
	if err := osf.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", name, err)
	}
	return nil
}

// WriteFiles writes every file in files, in name order (the order decides
// cluster allocation, so the bytes of a reproducible build).
func (f *FS) WriteFiles(ctx context.Context, files map[string][]byte) error {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := f.WriteFile(ctx, n, files[n]); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(fs filesystem.FileSystem, name string, data []byte) error {
	if dir := path.Dir(name); dir != "." {
		if err := fs.Mkdir("/" + dir); err != nil {
			return err
		}
	}
	// A missing file (Stat fails) is created by OpenFile; any other trouble
	// reading the directory surfaces there too.
	flag := os.O_CREATE | os.O_RDWR
	if st, err := lookup(fs, name); err == nil && st.Size() != int64(len(data)) {
		flag |= os.O_TRUNC
	}
	fl, err := fs.OpenFile("/"+name, flag)
	if err != nil {
		return err
	}
	if _, err := fl.Write(data); err != nil {
		fl.Close()
		return err
	}
	return fl.Close()
}

// lookup finds name the way FAT does, ignoring case (go-diskfs' Stat
// compares the displayed name exactly, which is the upper-case short name
// for names that fit 8.3). A missing file or directory wraps
// fs.ErrNotExist.
func lookup(fs filesystem.FileSystem, name string) (iofs.FileInfo, error) {
	dir := "."
	parts := strings.Split(name, "/")
	for i, part := range parts {
		ents, err := fs.ReadDir(dir)
		if err != nil {
			if i > 0 {
				return nil, fmt.Errorf("%s: %w", name, iofs.ErrNotExist)
			}
			return nil, err
		}
		var found iofs.DirEntry
		for _, e := range ents {
			if strings.EqualFold(e.Name(), part) {
				found = e
				break
			}
		}
		if found == nil || (i < len(parts)-1 && !found.IsDir()) {
			return nil, fmt.Errorf("%s: %w", name, iofs.ErrNotExist)
		}
		if i == len(parts)-1 {
			return found.Info()
		}
		dir = path.Join(dir, found.Name())
	}
	return nil, fmt.Errorf("%s: %w", name, iofs.ErrNotExist)
}

// ErrUnreadable: go-diskfs's FAT32 code failed on the structures it found
// (it panics on some damaged filesystems instead of returning an error).
var ErrUnreadable = errors.New("damaged or unexpected FAT32 structures")

// recoverReader turns a panic inside go-diskfs into an error wrapping
// ErrUnreadable, so a damaged disk is reported, never a crash of the
// agent, inspect or dvctl's emergency mode.
func recoverReader(err *error, what string) {
	if v := recover(); v != nil {
		*err = fmt.Errorf("%s: %w: %v", what, ErrUnreadable, v)
	}
}

// checkBootSector refuses a FAT32 boot sector whose geometry does not fit
// the partition before go-diskfs sees it: its reader trusts the sizes it
// finds (a damaged FAT size made it read and allocate gigabytes).
func checkBootSector(store backend.Storage, start, size int64) error {
	bs := make([]byte, sectorSize)
	if _, err := store.ReadAt(bs, start); err != nil {
		return fmt.Errorf("read the boot sector: %w", err)
	}
	g, err := parseFAT32Geometry(bs)
	if err != nil {
		return err
	}
	total := int64(binary.LittleEndian.Uint32(bs[32:]))
	if t16 := int64(binary.LittleEndian.Uint16(bs[19:])); t16 != 0 {
		total = t16
	}
	spc := int64(g.sectorsPerCluster)
	switch {
	case g.sectorSize != sectorSize:
		return fmt.Errorf("%d-byte sectors, want %d", g.sectorSize, sectorSize)
	case spc&(spc-1) != 0:
		return fmt.Errorf("%d sectors per cluster is not a power of two", spc)
	case total*sectorSize > size:
		return fmt.Errorf("the filesystem (%d sectors) is larger than its partition (%d bytes)", total, size)
	case g.fats > 2 || int64(g.fats)*int64(g.fatSectors) >= total:
		return fmt.Errorf("%d FATs of %d sectors do not fit %d sectors", g.fats, g.fatSectors, total)
	case g.rootCluster < 2 || g.rootCluster >= g.clusters+2:
		return fmt.Errorf("root directory cluster %d outside 2..%d", g.rootCluster, g.clusters+1)
	}
	return nil
}
