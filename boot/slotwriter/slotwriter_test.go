package slotwriter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/osimage"
)

// memDevice is a disk in memory. failAfter > 0 makes writes fail once that
// many bytes were written; corrupt flips the first byte of every write
// (a disk that silently mangles data).
type memDevice struct {
	data      []byte
	written   int64
	failAfter int64
	corrupt   bool
	syncs     int
}

func newMemDevice(size int) *memDevice {
	d := &memDevice{data: make([]byte, size)}
	for i := range d.data {
		d.data[i] = 0xA5 // old contents, never zero
	}
	return d
}

func (d *memDevice) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d.data)) {
		return 0, io.EOF
	}
	n := copy(p, d.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

var errDisk = errors.New("disk gone")

func (d *memDevice) WriteAt(p []byte, off int64) (int, error) {
	if d.failAfter > 0 && d.written+int64(len(p)) > d.failAfter {
		return 0, errDisk
	}
	if off+int64(len(p)) > int64(len(d.data)) {
		return 0, fmt.Errorf("write past the end of the disk at %d", off)
	}
	copy(d.data[off:], p)
	if d.corrupt && len(p) > 0 {
		d.data[off] ^= 0xFF
	}
	d.written += int64(len(p))
	return len(p), nil
}

func (d *memDevice) Sync() error { d.syncs++; return nil }

func randomImage(seed int64, n int) []byte {
	r := rand.New(rand.NewSource(seed))
	b := make([]byte, n)
	r.Read(b)
	// Zero runs, as a squashfs has.
	for i := 0; i+3000 < n; i += 7000 {
		copy(b[i:i+3000], make([]byte, 3000))
	}
	return b
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// onlyReader hides every interface but io.Reader (a registry blob stream
// of unknown length).
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestWriteVerifies(t *testing.T) {
	tests := []struct {
		name        string
		size        int
		bufSize     int
		offset      int64
		partSize    int64
		expectSize  bool
		expectDigst bool
	}{
		{"empty image", 0, 4096, 512, 8192, false, false},
		{"one byte", 1, 4096, 512, 8192, true, true},
		{"exactly one buffer", 4096, 4096, 1024, 4096, true, false},
		{"many buffers, short tail", 3*4096 + 17, 4096, 4096, 65536, false, true},
		{"fills the partition", 65536, 4096, 0, 65536, true, true},
		{"default buffer", DefaultBufferSize + 3, 0, 8192, 2 * DefaultBufferSize, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := randomImage(int64(tt.size), tt.size)
			dev := newMemDevice(int(tt.offset+tt.partSize) + 4096)
			before := bytes.Clone(dev.data)
			var opts []Option
			if tt.bufSize != 0 {
				opts = append(opts, WithBufferSize(tt.bufSize))
			}
			if tt.expectSize {
				opts = append(opts, WithExpectedSize(int64(tt.size)))
			}
			if tt.expectDigst {
				opts = append(opts, WithExpectedDigest(digestOf(img)))
			}
			var last int64
			opts = append(opts, WithProgress(func(n int64) { last = n }))
			res, err := Write(context.Background(), onlyReader{bytes.NewReader(img)}, Target{Device: dev, Offset: tt.offset, Size: tt.partSize}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Size != int64(tt.size) || res.Digest != digestOf(img) || last != int64(tt.size) {
				t.Fatalf("result %+v (progress %d), want %d bytes %s", res, last, tt.size, digestOf(img))
			}
			want := bytes.Clone(before)
			copy(want[tt.offset:], img)
			if !bytes.Equal(dev.data, want) {
				t.Fatal("device contents differ from the image at the offset, or bytes outside it changed")
			}
			if dev.syncs == 0 {
				t.Fatal("no fsync")
			}
		})
	}
}

func TestWriteRefuses(t *testing.T) {
	img := randomImage(1, 10000)
	tests := []struct {
		name    string
		target  func(*memDevice) Target
		opts    []Option
		src     io.Reader
		want    string
		nothing bool // nothing at all may have been written
	}{
		{"expected size larger than the partition", func(d *memDevice) Target { return Target{Device: d, Offset: 512, Size: 4096} },
			[]Option{WithExpectedSize(10000)}, bytes.NewReader(img), "the partition only 4096", true},
		{"stream larger than the partition", func(d *memDevice) Target { return Target{Device: d, Offset: 512, Size: 4096} },
			[]Option{WithBufferSize(1000)}, onlyReader{bytes.NewReader(img)}, "larger than the 4096-byte partition", false},
		{"stream longer than expected", func(d *memDevice) Target { return Target{Device: d, Offset: 0, Size: 20000} },
			[]Option{WithExpectedSize(5000), WithBufferSize(1024)}, bytes.NewReader(img), "larger than the expected 5000", false},
		{"stream shorter than expected", func(d *memDevice) Target { return Target{Device: d, Offset: 0, Size: 20000} },
			[]Option{WithExpectedSize(12000)}, bytes.NewReader(img), "is 10000 bytes, expected 12000", false},
		{"digest mismatch", func(d *memDevice) Target { return Target{Device: d, Offset: 0, Size: 20000} },
			[]Option{WithExpectedDigest(digestOf(img[1:]))}, bytes.NewReader(img), "expected " + digestOf(img[1:]), false},
		{"malformed digest", func(d *memDevice) Target { return Target{Device: d, Offset: 0, Size: 20000} },
			[]Option{WithExpectedDigest("md5:abc")}, bytes.NewReader(img), "not sha256", true},
		{"no device", func(*memDevice) Target { return Target{Size: 1} }, nil, bytes.NewReader(img), "no target device", true},
		{"empty range", func(d *memDevice) Target { return Target{Device: d} }, nil, bytes.NewReader(img), "empty", true},
		{"disk fails half-way", func(d *memDevice) Target { d.failAfter = 5000; return Target{Device: d, Size: 20000} },
			[]Option{WithBufferSize(1024)}, bytes.NewReader(img), errDisk.Error(), false},
		{"disk mangles data", func(d *memDevice) Target { d.corrupt = true; return Target{Device: d, Size: 20000} },
			nil, bytes.NewReader(img), "read back sha256:", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := newMemDevice(32768)
			tgt := tt.target(dev)
			_, err := Write(context.Background(), tt.src, tgt, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.want)
			}
			if tt.nothing && dev.written != 0 {
				t.Fatalf("%d bytes written before the refusal", dev.written)
			}
			// Never a byte at or past the partition's end.
			if tgt.Device != nil && tgt.Size > 0 {
				for i := tgt.Offset + tgt.Size; i < int64(len(dev.data)); i++ {
					if dev.data[i] != 0xA5 {
						t.Fatalf("byte %d past the partition's end was written", i)
					}
				}
			}
		})
	}
}

// envWithSlotB returns a store whose slot B holds an older bootable image
// (the state before an upgrade writes B).
func envWithSlotB(t *testing.T) *bootenv.Store {
	t.Helper()
	s := bootenv.NewStore(bootenv.DirFS{Root: t.TempDir()})
	e := bootenv.New()
	e.SetSlot(osimage.SlotB, true, false)
	if err := s.Save(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	return s
}

// failingReader returns n bytes of data, then err (a dropped connection to
// the registry) or, with cancel set, cancels the write's context and keeps
// going (the operation cancelled from the API).
type failingReader struct {
	r      io.Reader
	n      int64
	err    error
	cancel context.CancelFunc
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		if f.cancel != nil {
			f.cancel()
			return f.r.Read(p)
		}
		return 0, f.err
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

// TestInterruptedWriteLeavesSlotNotBootable: whatever stops a slot write
// half-way, GRUB's environment says the slot is not bootable, and GRUB
// would boot the other slot.
func TestInterruptedWriteLeavesSlotNotBootable(t *testing.T) {
	img := randomImage(7, 64<<10)
	tests := []struct {
		name string
		src  func(cancel context.CancelFunc) io.Reader
		dev  func() *memDevice
		want string
	}{
		{"reader fails half-way", func(context.CancelFunc) io.Reader {
			return &failingReader{r: bytes.NewReader(img), n: 30000, err: syscall.ECONNRESET}
		}, func() *memDevice { return newMemDevice(1 << 20) }, "connection reset"},
		{"context cancelled mid-stream", func(c context.CancelFunc) io.Reader {
			return &failingReader{r: bytes.NewReader(img), n: 30000, cancel: c}
		}, func() *memDevice { return newMemDevice(1 << 20) }, "context canceled"},
		{"disk fails half-way", func(context.CancelFunc) io.Reader { return bytes.NewReader(img) },
			func() *memDevice { d := newMemDevice(1 << 20); d.failAfter = 30000; return d }, "disk gone"},
		{"digest mismatch at the end", func(context.CancelFunc) io.Reader { return bytes.NewReader(img[:len(img)-1]) },
			func() *memDevice { return newMemDevice(1 << 20) }, "digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := envWithSlotB(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			dev := tt.dev()
			_, err := WriteSlot(ctx, env, osimage.SlotB, tt.src(cancel), Target{Device: dev, Offset: 4096, Size: 512 << 10},
				WithBufferSize(4096), WithExpectedDigest(digestOf(img)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.want)
			}
			if dev.written == 0 {
				t.Fatal("the test meant to interrupt a write that had started")
			}
			e, err := env.Load(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if ok, _ := e.SlotState(osimage.SlotB); ok {
				t.Fatalf("slot B still bootable after an interrupted write: %v", e.Get("B_OK"))
			}
			if nb := e.NextBoot(); nb.Slot != osimage.SlotA || nb.Fallback {
				t.Fatalf("GRUB would boot %+v, want A", nb)
			}
		})
	}
}

// TestWriteSlotMarksFirst: the mark happens before the first byte, a
// failed mark writes nothing, and a successful write leaves activation to
// the caller.
func TestWriteSlotMarksFirst(t *testing.T) {
	img := randomImage(3, 20000)
	dev := newMemDevice(1 << 16)
	var written int64
	m := markerFunc(func(ctx context.Context, s osimage.Slot) error {
		written = dev.written
		return nil
	})
	if _, err := WriteSlot(context.Background(), m, osimage.SlotB, bytes.NewReader(img), Target{Device: dev, Size: 1 << 15}); err != nil {
		t.Fatal(err)
	}
	if written != 0 {
		t.Fatalf("%d bytes were written before the slot was marked", written)
	}
	failing := markerFunc(func(context.Context, osimage.Slot) error { return errors.New("ESP read-only") })
	dev = newMemDevice(1 << 16)
	if _, err := WriteSlot(context.Background(), failing, osimage.SlotB, bytes.NewReader(img), Target{Device: dev, Size: 1 << 15}); err == nil || dev.written != 0 {
		t.Fatalf("a failed mark: %v, %d bytes written", err, dev.written)
	}
	if _, err := WriteSlot(context.Background(), nil, osimage.SlotB, bytes.NewReader(img), Target{Device: dev, Size: 1 << 15}); err == nil {
		t.Fatal("WriteSlot without an environment succeeded")
	}
	// Too large: refused before the mark, so a good slot is not disturbed.
	env := envWithSlotB(t)
	if _, err := WriteSlot(context.Background(), env, osimage.SlotB, bytes.NewReader(img), Target{Device: dev, Size: 1000}, WithExpectedSize(int64(len(img)))); err == nil {
		t.Fatal("too large accepted")
	}
	if e, _ := env.Load(context.Background()); e.Get("B_OK") != "1" {
		t.Fatal("a refused write marked the slot")
	}
	// Success: still not bootable until the caller activates.
	res, err := WriteSlot(context.Background(), env, osimage.SlotB, bytes.NewReader(img), Target{Device: newMemDevice(1 << 16), Size: 1 << 15})
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := env.Load(context.Background()); e.Get("B_OK") != "0" {
		t.Fatal("WriteSlot marked the slot bootable itself")
	}
	if err := env.Activate(context.Background(), osimage.SlotB); err != nil || res.Digest != digestOf(img) {
		t.Fatal(err)
	}
}

type markerFunc func(context.Context, osimage.Slot) error

func (f markerFunc) MarkNotBootable(ctx context.Context, s osimage.Slot) error { return f(ctx, s) }

func allocated(t *testing.T, p string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestSparse: on a fresh sparse file zero buffers stay holes; on a file
// whose range holds old data the zeros are written even when Sparse is
// claimed, so the slot never keeps stale bytes.
func TestSparse(t *testing.T) {
	const part = 8 << 20
	// 1 MiB of data, 4 MiB of zeros, data, zeros and a short tail of
	// data: no buffer is all zeros, and the end is not block-aligned.
	img := make([]byte, 6<<20+100)
	rand.New(rand.NewSource(5)).Read(img[:1<<20])
	copy(img[5<<20:], img[:4096])
	copy(img[6<<20:], img[:100])
	tests := []struct {
		name       string
		sparse     bool
		prefill    bool
		wantHoles  bool
		wantErrMsg string
	}{
		{"fresh file, sparse", true, false, true, ""},
		{"fresh file, not sparse", false, false, false, ""},
		{"old data, sparse claimed", true, true, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "disk.raw")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(1<<20 + part + 1<<20); err != nil {
				t.Fatal(err)
			}
			if tt.prefill {
				old := bytes.Repeat([]byte{0xEE}, part)
				if _, err := f.WriteAt(old, 1<<20); err != nil {
					t.Fatal(err)
				}
			}
			res, err := Write(context.Background(), bytes.NewReader(img), Target{Device: f, Offset: 1 << 20, Size: part, Sparse: tt.sparse})
			if err != nil {
				t.Fatal(err)
			}
			if res.Digest != digestOf(img) {
				t.Fatal("digest")
			}
			got := make([]byte, len(img))
			if _, err := f.ReadAt(got, 1<<20); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, img) {
				t.Fatal("the file does not hold the image (stale bytes where the image has zeros?)")
			}
			used := allocated(t, p)
			t.Logf("allocated %d KiB for a %d KiB image", used>>10, len(img)>>10)
			if holes := used < 3<<20; holes != tt.wantHoles {
				t.Fatalf("allocated %d bytes: holes=%v, want %v", used, holes, tt.wantHoles)
			}
		})
	}
}

// FuzzWrite writes random images at random offsets into random partition
// sizes through randomly chunked reads and compares the device with a
// reference copy: the image at the offset when it fits, nothing past the
// partition's end ever, and an error exactly when it does not fit.
func FuzzWrite(f *testing.F) {
	f.Add(int64(1), uint16(5000), uint16(512), uint16(6000), uint16(1024), []byte{1, 7, 200})
	f.Add(int64(2), uint16(0), uint16(0), uint16(1), uint16(512), []byte{})
	f.Add(int64(3), uint16(9000), uint16(100), uint16(8999), uint16(4096), []byte{0, 0, 3})
	f.Fuzz(func(t *testing.T, seed int64, size, offset, partSize, bufSize uint16, chunks []byte) {
		if partSize == 0 || bufSize < 512 {
			return
		}
		img := randomImage(seed, int(size))
		dev := newMemDevice(int(offset) + int(partSize) + 1024)
		want := bytes.Clone(dev.data)
		src := &chunkReader{data: img, chunks: chunks}
		res, err := Write(context.Background(), src, Target{Device: dev, Offset: int64(offset), Size: int64(partSize)}, WithBufferSize(int(bufSize)))
		for i := int(offset) + int(partSize); i < len(dev.data); i++ {
			if dev.data[i] != 0xA5 {
				t.Fatalf("byte %d past the partition's end was written", i)
			}
		}
		if int(size) > int(partSize) {
			if err == nil {
				t.Fatal("an image larger than the partition was accepted")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		copy(want[offset:], img)
		if !bytes.Equal(dev.data, want) || res.Size != int64(size) || res.Digest != digestOf(img) {
			t.Fatalf("device differs from the reference (result %+v)", res)
		}
	})
}

// chunkReader returns data in reads whose sizes come from chunks (times
// 37, at least one byte), cycling.
type chunkReader struct {
	data   []byte
	chunks []byte
	i      int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(c.chunks) > 0 {
		n = min(n, max(1, int(c.chunks[c.i%len(c.chunks)])*37))
		c.i++
	}
	n = min(n, len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}
