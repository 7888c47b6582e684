package imagebuilder

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/boot/esp"
	"github.com/debvisor/debvisor/osimage"
)

// smallDisk is a disk laid out and written by the builder's own assembly
// (GPT with the BIOS boot partition, GRUB on the ESP with both grubenv
// copies, slot A a small squashfs with a release file, slot B empty, the
// data ext4), only small: the damage tests and the fuzzer change bytes in
// it and put them back.
type smallDisk struct {
	path    string
	regions map[string][2]int64 // name -> start, length
}

var (
	smallDiskOnce sync.Once
	smallDiskVal  *smallDisk
	smallDiskErr  error
)

func buildSmallDisk(t testing.TB) *smallDisk {
	t.Helper()
	for _, tool := range []string{"mksquashfs", "mkfs.ext4", "grub-mkimage"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (scripts/install-deps installs it): %v", tool, err)
		}
	}
	smallDiskOnce.Do(func() { smallDiskVal, smallDiskErr = makeSmallDisk() })
	if smallDiskErr != nil {
		t.Fatalf("build the small disk: %v", smallDiskErr)
	}
	return smallDiskVal
}

func makeSmallDisk() (*smallDisk, error) {
	dir, err := os.MkdirTemp("", "debvisor-inspect-damage-")
	if err != nil {
		return nil, err
	}
	spec, err := DefaultSpec()
	if err != nil {
		return nil, err
	}
	spec.SlotSize, spec.DataSize = 8*MiB, 16*MiB
	b := &builder{spec: spec, log: slog.New(slog.NewTextHandler(io.Discard, nil)), digest: "sha256:inspect-damage",
		epoch: 1700000000, work: filepath.Join(dir, "work")}
	if err := os.MkdirAll(filepath.Join(b.work, "tree", "boot"), 0o755); err != nil {
		return nil, err
	}
	tree := filepath.Join(b.work, "tree")
	rel := osimage.Release{Version: "0.1.0", SpecDigest: b.digest, SourceDateEpoch: b.epoch, Arch: osimage.Arch}.Marshal()
	if err := writeFile(filepath.Join(tree, osimage.ReleaseFile), rel, 0o644); err != nil {
		return nil, err
	}
	for _, f := range []string{"boot/vmlinuz", "boot/initrd.img"} {
		if err := os.WriteFile(filepath.Join(tree, f), []byte(strings.Repeat(f, 500)), 0o644); err != nil {
			return nil, err
		}
	}
	sq := filepath.Join(b.work, "slot.squashfs")
	if out, err := exec.Command("mksquashfs", tree, sq, "-noappend", "-quiet", "-all-root").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mksquashfs: %w\n%s", err, out)
	}
	st, err := os.Stat(sq)
	if err != nil {
		return nil, err
	}
	raw := filepath.Join(dir, "disk.raw")
	l, err := b.assemble(context.Background(), raw, slotInfo{path: sq, size: st.Size()})
	if err != nil {
		return nil, err
	}
	part := func(n int) partSpec { p, _ := l.part(n); return p }
	espP, a, data := part(osimage.PartESP), part(osimage.PartA), part(osimage.PartData)
	return &smallDisk{path: raw, regions: map[string][2]int64{
		"gpt":  {0, 34 * sectorSize},
		"esp":  {espP.start, 2 * int64(MiB)},
		"slot": {a.start, st.Size()},
		"data": {data.start, int64(MiB)},
	}}, nil
}

// damage overwrites len(data) bytes at off, and returns a function that
// puts the old bytes back.
func (d *smallDisk) damage(t testing.TB, off int64, data []byte) func() {
	t.Helper()
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := make([]byte, len(data))
	if _, err := f.ReadAt(old, off); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	return func() {
		f, err := os.OpenFile(d.path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(old, off); err != nil {
			t.Fatal(err)
		}
	}
}

// TestInspectDamagedDisks: inspect and the emergency mode's reader (the
// ESP and the boot environment) on a disk with one part destroyed report
// that part and still read the others; none of them crashes.
func TestInspectDamagedDisks(t *testing.T) {
	d := buildSmallDisk(t)
	rep, err := Inspect(context.Background(), d.path)
	if err != nil {
		t.Fatalf("the undamaged small disk: %v", err)
	}
	if rep.Slots["A"].Version != "0.1.0" || !rep.Slots["B"].Empty {
		t.Fatalf("undamaged report: %+v", rep)
	}
	zero := func(n int64) []byte { return make([]byte, n) }
	junk := func(n int64) []byte { return []byte(strings.Repeat("\xff\x13\x00\x80", int(n/4))) }
	for _, tt := range []struct {
		name    string
		region  string
		off     int64
		data    []byte
		problem string // in inspect's problems
		stillOK string // a part inspect must still have read
	}{
		{"ext4 superblock zeroed", "data", 1024, zero(1024), "data", "slot A"},
		{"ext4 group descriptors garbage", "data", 4096, junk(4096), "data", "slot A"},
		{"squashfs superblock zeroed", "slot", 0, zero(96), "slot A", "data"},
		{"squashfs superblock garbage", "slot", 8, junk(88), "slot A", "data"},
		{"FAT boot sector zeroed", "esp", 0, zero(512), "ESP", "slot A"},
		{"FAT tables garbage", "esp", 32 * 512, junk(64 << 10), "ESP", "slot A"},
		{"primary GPT header zeroed", "gpt", 512, zero(512), "primary GPT", "slot A"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := d.regions[tt.region]
			restore := d.damage(t, r[0]+tt.off, tt.data)
			defer restore()
			rep, err := Inspect(context.Background(), d.path)
			if err == nil {
				t.Fatalf("inspect found nothing wrong: %+v", rep)
			}
			if rep == nil {
				t.Fatalf("no report: %v", err)
			}
			if !strings.Contains(strings.Join(rep.Problems, "\n"), tt.problem) {
				t.Fatalf("problems do not name %q:\n%s", tt.problem, strings.Join(rep.Problems, "\n"))
			}
			checked := strings.Join(rep.Checked, "\n")
			want := map[string]string{"slot A": "slot A", "data": "data:"}[tt.stillOK]
			if !strings.Contains(checked, want) {
				t.Fatalf("inspect gave up on %s after the damage (checked %q, problems %q)", tt.stillOK, rep.Checked, rep.Problems)
			}
			// The emergency mode's reader: opening the ESP and its
			// boot environment gives a result or an error, never a
			// crash.
			if f, err := esp.Open(d.path, esp.ReadOnly()); err == nil {
				_, _ = bootenv.NewStore(f).Load(context.Background())
				_ = f.Close()
			}
		})
	}
}

// FuzzInspectDamage writes fuzzer-chosen bytes into one part of the small
// disk (partition table, ESP, slot squashfs, data ext4) and runs inspect
// and the emergency mode's reader on it: whatever they find, they must
// return (a crash, a hang or runaway memory is a failure). The seeds run
// in `make test`; `make fuzz` explores.
func FuzzInspectDamage(f *testing.F) {
	f.Add(uint8(0), uint32(512), []byte("EFI PART\x00\x00\x01\x00"))
	f.Add(uint8(1), uint32(11), []byte{0, 0, 0, 0})
	f.Add(uint8(1), uint32(0x2c), []byte{0xff, 0xff, 0xff, 0x0f})
	f.Add(uint8(2), uint32(0), []byte("hsqs\xff\xff\xff\xff"))
	f.Add(uint8(2), uint32(40), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add(uint8(3), uint32(1024+4), []byte{0xff, 0xff, 0xff, 0xff})
	f.Add(uint8(3), uint32(1024+0x58), []byte{0x00, 0x01})
	f.Add(uint8(3), uint32(4096), []byte("\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff"))
	names := []string{"gpt", "esp", "slot", "data"}
	f.Fuzz(func(t *testing.T, region uint8, off uint32, data []byte) {
		if len(data) == 0 || len(data) > 4096 {
			return
		}
		d := buildSmallDisk(t)
		r := d.regions[names[int(region)%len(names)]]
		at := r[0] + int64(off)%r[1]
		defer d.damage(t, at, data)()
		rep, err := Inspect(context.Background(), d.path)
		if err == nil && (rep == nil || len(rep.Problems) != 0) {
			t.Fatalf("inspect: no error but report %+v", rep)
		}
		if fs, err := esp.Open(d.path, esp.ReadOnly()); err == nil {
			_, _ = bootenv.NewStore(fs).Load(context.Background())
			_ = fs.Close()
		}
	})
}
