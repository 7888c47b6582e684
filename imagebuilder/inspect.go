package imagebuilder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"strings"
	"text/tabwriter"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/boot/bootloader"
	"github.com/debvisor/debvisor/boot/bootloader/grubefi"
	"github.com/debvisor/debvisor/boot/bootloader/grubpc"
	"github.com/debvisor/debvisor/boot/esp"
	"github.com/debvisor/debvisor/osimage"
)

// Report is what inspect found in an image.
type Report struct {
	Image      string                      `json:"image"`
	Size       int64                       `json:"size_bytes"`
	DiskGUID   string                      `json:"disk_guid"`
	Partitions []osimage.ManifestPartition `json:"partitions"`
	Slots      map[string]SlotReport       `json:"slots"`
	BootEnv    map[string]string           `json:"bootenv,omitempty"`
	NextBoot   string                      `json:"next_boot,omitempty"`
	BIOSBoot   *grubpc.Installed           `json:"bios_boot,omitempty"`
	Checked    []string                    `json:"checked"`
	Problems   []string                    `json:"problems"`
}

// SlotReport describes one slot.
type SlotReport struct {
	Empty   bool   `json:"empty"`
	Version string `json:"version,omitempty"`
	Spec    string `json:"spec_digest,omitempty"`
	Files   int    `json:"files_read,omitempty"`
}

// Inspect reads an image back with go-diskfs, without writing to it:
// partition table against the layout contract, the legacy BIOS boot code in
// the MBR and the BIOS boot partition it loads (grubpc), every file on the
// ESP and the UEFI loader (grubefi), both grubenv copies (bootenv), every
// file in each slot's squashfs, and the data partition's ext4. It returns
// the report and an error when anything is inconsistent.
//
// A disk that has lived (or been damaged) can hold structures the readers
// do not expect: a part that cannot be read is reported as a problem and
// inspect goes on with the next; no input makes it crash.
func Inspect(ctx context.Context, image string) (r *Report, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%s: the partition table could not be read: %v", image, v)
		}
	}()
	d, err := diskfs.Open(image, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", image, err)
	}
	defer d.Close()
	r = &Report{Image: image, Size: d.Size, Slots: map[string]SlotReport{}, Checked: []string{}, Problems: []string{}}
	bad := func(format string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, a...)) }
	pt, err := d.GetPartitionTable()
	if err != nil {
		return r, fmt.Errorf("%s: no readable partition table: %w", image, err)
	}
	table, ok := pt.(*gpt.Table)
	if !ok {
		return r, fmt.Errorf("%s: partition table is %s, not GPT", image, pt.Type())
	}
	r.DiskGUID = table.GUID
	want := map[int][2]string{
		osimage.PartESP: {osimage.LabelESP, osimage.TypeEFISystem}, osimage.PartA: {osimage.LabelA, osimage.TypeLinuxFilesystem},
		osimage.PartB: {osimage.LabelB, osimage.TypeLinuxFilesystem}, osimage.PartData: {osimage.LabelData, osimage.TypeLinuxFilesystem},
		osimage.PartBIOS: {osimage.LabelBIOS, osimage.TypeBIOSBoot},
	}
	parts := map[int]*gpt.Partition{}
	for _, p := range table.Partitions {
		if p.Type == gpt.Unused {
			continue
		}
		parts[p.Index] = p
		r.Partitions = append(r.Partitions, osimage.ManifestPartition{Number: p.Index, Label: p.Name, Type: strings.ToUpper(string(p.Type)), GUID: p.GUID, Start: p.GetStart(), Size: p.GetSize()})
	}
	for _, n := range []int{osimage.PartESP, osimage.PartA, osimage.PartB, osimage.PartData, osimage.PartBIOS} {
		p, ok := parts[n]
		switch {
		case !ok:
			bad("partition %d (%s) is missing", n, want[n][0])
		case p.Name != want[n][0]:
			bad("partition %d is labelled %q, want %q", n, p.Name, want[n][0])
		case !strings.EqualFold(string(p.Type), want[n][1]):
			bad("partition %d has type %s, want %s", n, p.Type, want[n][1])
		}
	}
	if a, b := parts[osimage.PartA], parts[osimage.PartB]; a != nil && b != nil && a.GetSize() != b.GetSize() {
		bad("slots differ in size: A %d, B %d bytes", a.GetSize(), b.GetSize())
	}
	if len(r.Problems) > 0 {
		return r, r.err()
	}
	r.Checked = append(r.Checked, "gpt")
	// The layout is intact in the backup: read on, and say so.
	if table.RecoveredFromBackup {
		bad("primary GPT is damaged (read from the backup)")
	}
	r.guard("BIOS boot", func() { r.inspectBIOS(d.Backend, parts[osimage.PartBIOS], parts) })
	r.guard("ESP", func() { r.inspectESP(ctx, d.Backend, parts[osimage.PartESP]) })
	for _, s := range osimage.Slots {
		r.guard("slot "+string(s), func() { r.inspectSlot(d.Backend, s, parts[s.Partition()]) })
	}
	r.guard("data", func() { r.inspectData(d.Backend, parts[osimage.PartData]) })
	return r, r.err()
}

// guard runs the reader of one part of the disk. The readers are
// go-diskfs's, written for disks they made: on a damaged or unexpected
// structure some of them panic instead of returning an error. That part is
// then reported unreadable and the others are still read.
func (r *Report) guard(part string, read func()) {
	defer func() {
		if v := recover(); v != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: unreadable, its reader failed on this disk: %v", part, v))
		}
	}()
	read()
}

func (r *Report) err() error {
	if len(r.Problems) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %d problem(s): %s", r.Image, len(r.Problems), strings.Join(r.Problems, "; "))
}

// inspectBIOS checks that the BIOS boot partition lies in the gap before
// every other partition (firstboot grows the data partition, which must stay
// last) and that the MBR boot code loads a core.img inside it.
func (r *Report) inspectBIOS(b backend.Storage, p *gpt.Partition, parts map[int]*gpt.Partition) {
	start, size := uint64(p.GetStart()), uint64(p.GetSize())
	if start%sectorSize != 0 || size%sectorSize != 0 || size == 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("BIOS boot partition %d is not whole sectors (start %d, size %d bytes)", p.Index, start, size))
		return
	}
	for n, o := range parts {
		if n != p.Index && uint64(o.GetStart()) < start+size {
			r.Problems = append(r.Problems, fmt.Sprintf("BIOS boot partition %d (bytes %d-%d) is not before partition %d (starts at %d)", p.Index, start, start+size, n, o.GetStart()))
		}
	}
	bios, err := grubpc.ReadInstalled(b, bootloader.Extent{Start: int64(start / sectorSize), Sectors: int64(size / sectorSize)})
	if err != nil {
		r.Problems = append(r.Problems, "BIOS boot: "+err.Error())
		return
	}
	r.BIOSBoot = &bios
	r.Checked = append(r.Checked, fmt.Sprintf("bios: MBR boot code loads core.img (%d sectors) from LBA %d in partition %d", bios.CoreSectors, bios.CoreLBA, p.Index))
}

func (r *Report) inspectESP(ctx context.Context, b backend.Storage, p *gpt.Partition) {
	fs, err := esp.OpenAt(b, p.GetStart(), p.GetSize())
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		return
	}
	n, err := readAll(fs.FileSystem(), ".")
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("ESP: %v", err))
		return
	}
	if _, err := grubefi.New().Check(ctx, bootloader.Target{ESP: fs}); err != nil {
		for _, e := range splitErrors(err) {
			r.Problems = append(r.Problems, "ESP: "+e.Error())
		}
	}
	copies, err := bootenv.NewStore(fs).Read(ctx)
	if err != nil {
		r.Problems = append(r.Problems, "ESP: "+err.Error())
		return
	}
	if copies.RepairPrimary {
		r.Problems = append(r.Problems, "ESP: primary grubenv is damaged (backup is intact)")
	}
	if copies.RepairBackup {
		r.Problems = append(r.Problems, "ESP: backup grubenv is damaged or differs from the primary")
	}
	r.BootEnv = map[string]string{}
	for _, k := range []string{bootenv.VarOrder, "A_OK", "A_TRY", "B_OK", "B_TRY", bootenv.VarCommitted, bootenv.VarOnce} {
		if v := copies.Env.Get(k); v != "" || !strings.HasPrefix(k, "O") && k != bootenv.VarCommitted {
			r.BootEnv[k] = v
		}
	}
	next := copies.Env.NextBoot()
	r.NextBoot = string(next.Slot)
	switch {
	case next.Once:
		r.NextBoot += " (once)"
	case next.Fallback:
		r.NextBoot += " (fallback: no slot with a clean boot counter)"
	}
	r.Checked = append(r.Checked, fmt.Sprintf("esp: fat32, %d files read", n))
}

// splitErrors undoes errors.Join, so each problem is reported on its own.
func splitErrors(err error) []error {
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		return j.Unwrap()
	}
	return []error{err}
}

func (r *Report) inspectSlot(b backend.Storage, s osimage.Slot, p *gpt.Partition) {
	head := make([]byte, 4)
	if _, err := b.ReadAt(head, p.GetStart()); err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("slot %s: %v", s, err))
		return
	}
	if bytes.Equal(head, make([]byte, 4)) {
		r.Slots[string(s)] = SlotReport{Empty: true}
		r.Checked = append(r.Checked, fmt.Sprintf("slot %s: empty", s))
		if ok, _ := r.slotOK(s); ok {
			r.Problems = append(r.Problems, fmt.Sprintf("slot %s is empty but grubenv marks it bootable", s))
		}
		return
	}
	fs, err := squashfs.Read(b, p.GetSize(), p.GetStart(), 4096)
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("slot %s: not a readable squashfs: %v", s, err))
		return
	}
	n, err := readAll(fs, ".")
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("slot %s: %v", s, err))
		return
	}
	rep := SlotReport{Files: n}
	// The release file is in the slot's layer (/debvisor/...), linked from
	// its usual path; slots built before the layer have it in place.
	rel, err := readFile(fs, layerDir+"/"+osimage.ReleaseFile)
	if err != nil {
		rel, err = readFile(fs, osimage.ReleaseFile)
	}
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("slot %s: no %s: %v", s, osimage.ReleaseFile, err))
	}
	if err == nil {
		if rr, perr := osimage.ParseRelease(rel); perr != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("slot %s: %s: %v", s, osimage.ReleaseFile, perr))
		} else {
			rep.Version, rep.Spec = rr.Version, rr.SpecDigest
		}
	}
	for _, f := range []string{"boot/vmlinuz", "boot/initrd.img"} {
		if _, err := fs.Stat(f); err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("slot %s: %s: %v", s, f, err))
		}
	}
	r.Slots[string(s)] = rep
	r.Checked = append(r.Checked, fmt.Sprintf("slot %s: squashfs, %d files read", s, n))
}

func (r *Report) slotOK(s osimage.Slot) (bool, bool) {
	return r.BootEnv[bootenv.OKVar(s)] == "1", r.BootEnv[bootenv.TryVar(s)] == "1"
}

func (r *Report) inspectData(b backend.Storage, p *gpt.Partition) {
	fs, err := ext4.Read(b, p.GetSize(), p.GetStart(), sectorSize)
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("data: not a readable ext4: %v", err))
		return
	}
	if l := strings.TrimRight(fs.Label(), "\x00"); l != osimage.LabelData {
		r.Problems = append(r.Problems, fmt.Sprintf("data: ext4 label %q, want %q", l, osimage.LabelData))
	}
	n, err := readAll(fs, ".")
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("data: %v", err))
		return
	}
	r.Checked = append(r.Checked, fmt.Sprintf("data: ext4, %d files read", n))
}

// readAll walks a filesystem and reads every regular file to the end,
// which makes the reader follow every directory, inode and data block.
func readAll(fs filesystem.FileSystem, dir string) (int, error) {
	ents, err := fs.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read dir %s: %w", dir, err)
	}
	n := 0
	for _, e := range ents {
		if e.Name() == "." || e.Name() == ".." || e.Name() == "lost+found" {
			continue
		}
		p := path.Join(dir, e.Name())
		switch {
		case e.IsDir():
			m, err := readAll(fs, p)
			n += m
			if err != nil {
				return n, err
			}
		case e.Type()&iofs.ModeType == 0:
			if _, err := readFile(fs, p); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

func readFile(fs filesystem.FileSystem, p string) ([]byte, error) {
	f, err := fs.OpenFile(p, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return b, nil
}

// sizeText shows whole MiB as such and anything else (the BIOS boot
// partition at sector 34, under 1 MiB) in sectors, so nothing reads as 0.
func sizeText(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d s", n/sectorSize)
}

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "image     %s (%d MiB, disk %s)\n", r.Image, r.Size>>20, r.DiskGUID)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tlabel\tstart\tsize\tguid")
	for _, p := range r.Partitions {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", p.Number, p.Label, sizeText(p.Start), sizeText(p.Size), p.GUID)
	}
	tw.Flush()
	for _, s := range osimage.Slots {
		sr, ok := r.Slots[string(s)]
		switch {
		case !ok:
			fmt.Fprintf(w, "slot %s    unreadable\n", s)
		case sr.Empty:
			fmt.Fprintf(w, "slot %s    empty\n", s)
		default:
			fmt.Fprintf(w, "slot %s    version %s (%s)\n", s, sr.Version, sr.Spec)
		}
	}
	if r.BootEnv != nil {
		fmt.Fprintf(w, "grubenv   ORDER=%q A_OK=%s A_TRY=%s B_OK=%s B_TRY=%s -> next boot: %s\n",
			r.BootEnv["ORDER"], r.BootEnv["A_OK"], r.BootEnv["A_TRY"], r.BootEnv["B_OK"], r.BootEnv["B_TRY"], r.NextBoot)
	}
	for _, c := range r.Checked {
		fmt.Fprintf(w, "ok        %s\n", c)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "PROBLEM   %s\n", p)
	}
}
