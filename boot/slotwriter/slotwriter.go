// Package slotwriter owns putting a slot image (or any partition content)
// onto its partition: it streams from an io.Reader of known or unknown
// length (a local squashfs, a registry blob) onto a byte range of a disk
// image file or block device with fixed buffers, hashes as it goes, checks
// an expected size and digest, fsyncs, and verifies by reading the range
// back and hashing it again. Before the first byte of a slot it marks the
// slot not bootable, so a write that stops half-way never leaves GRUB a
// half-written slot to boot; marking it bootable again is the caller's
// step, after Write has verified the slot.
package slotwriter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/debvisor/debvisor/osimage"
)

// Device is the disk holding the partition: an image file or a block
// device (*os.File satisfies it).
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// Target is the byte range a write goes to.
type Target struct {
	Device Device
	// Offset is the partition's first byte on Device.
	Offset int64
	// Size is the partition's size: nothing is ever written at or past
	// Offset+Size.
	Size int64
	// Sparse says the range is known to read as zeros because Device is a
	// freshly created sparse file (the image builder's case), so all-zero
	// buffers may be skipped and stay holes. Write checks it where it can
	// (SEEK_DATA on a regular file) and writes the zeros anyway when the
	// range already holds data. Never set it for a block device or a file
	// that held anything.
	Sparse bool
}

// Marker is what WriteSlot needs of the boot environment:
// bootenv.Store satisfies it.
type Marker interface {
	MarkNotBootable(ctx context.Context, slot osimage.Slot) error
}

// Result describes what was written and verified.
type Result struct {
	// Size is the number of bytes written from the reader.
	Size int64
	// Digest is "sha256:<hex>" of those bytes.
	Digest string
}

// Option configures a write.
type Option func(*options) error

type options struct {
	expectSize   int64 // -1: unknown
	expectDigest string
	bufSize      int
	log          *slog.Logger
	progress     func(written int64)
	readBack     func()
}

// DefaultBufferSize is the size of each of the three buffers a write
// cycles through, whatever the image size: large enough that per-call
// costs vanish against the copies and the hash, small enough that memory
// stays flat.
const DefaultBufferSize = 4 << 20

// WithExpectedSize makes a write fail when the reader does not yield
// exactly n bytes; a size larger than the partition fails before anything
// is written.
func WithExpectedSize(n int64) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("expected size %d < 0", n)
		}
		o.expectSize = n
		return nil
	}
}

// WithExpectedDigest makes a write fail when the bytes read do not hash
// to digest ("sha256:<hex>", as OCI descriptors and the build manifest
// write it).
func WithExpectedDigest(digest string) Option {
	return func(o *options) error {
		hexPart, ok := strings.CutPrefix(digest, "sha256:")
		if b, err := hex.DecodeString(hexPart); !ok || err != nil || len(b) != sha256.Size {
			return fmt.Errorf("expected digest %q is not sha256:<64 hex digits>", digest)
		}
		o.expectDigest = strings.ToLower(digest)
		return nil
	}
}

// WithBufferSize sets the buffer size (default DefaultBufferSize).
func WithBufferSize(n int) Option {
	return func(o *options) error {
		if n < 512 {
			return fmt.Errorf("buffer size %d < 512", n)
		}
		o.bufSize = n
		return nil
	}
}

// WithLogger reports the write's steps at debug level.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.log = l; return nil }
}

// WithProgress is called after each buffer is written with the bytes
// written so far.
func WithProgress(fn func(written int64)) Option {
	return func(o *options) error { o.progress = fn; return nil }
}

// WithReadBack is called once the image is written, checked and synced to
// the disk, as the read-back verification starts.
func WithReadBack(fn func()) Option {
	return func(o *options) error { o.readBack = fn; return nil }
}

// WriteSlot marks slot not bootable through env, then writes src onto t
// like Write. When WriteSlot returns an error at any point after the mark,
// the slot stays marked not bootable; on success it also stays so until
// the caller activates it (bootenv.Store.Activate).
func WriteSlot(ctx context.Context, env Marker, slot osimage.Slot, src io.Reader, t Target, opts ...Option) (Result, error) {
	if env == nil {
		return Result{}, fmt.Errorf("write slot %s: no boot environment to mark the slot not bootable in", slot)
	}
	o, err := newOptions(opts)
	if err != nil {
		return Result{}, fmt.Errorf("write slot %s: %w", slot, err)
	}
	if err := check(t, o); err != nil {
		return Result{}, fmt.Errorf("write slot %s: %w", slot, err)
	}
	if err := env.MarkNotBootable(ctx, slot); err != nil {
		return Result{}, fmt.Errorf("write slot %s: %w", slot, err)
	}
	o.log.DebugContext(ctx, "slot marked not bootable", slog.String("slot", string(slot)))
	r, err := write(ctx, src, t, o)
	if err != nil {
		return r, fmt.Errorf("write slot %s: %w", slot, err)
	}
	return r, nil
}

// Write streams src onto t without touching any boot environment: for a
// partition that is not a slot (the data filesystem), or a slot of an image
// whose boot environment is written afterwards (the builder, which
// publishes the image only when it is complete).
func Write(ctx context.Context, src io.Reader, t Target, opts ...Option) (Result, error) {
	o, err := newOptions(opts)
	if err != nil {
		return Result{}, err
	}
	if err := check(t, o); err != nil {
		return Result{}, err
	}
	return write(ctx, src, t, o)
}

func newOptions(opts []Option) (options, error) {
	o := options{expectSize: -1, bufSize: DefaultBufferSize, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// check refuses a target or expectation that cannot work, before anything
// is marked or written.
func check(t Target, o options) error {
	switch {
	case t.Device == nil:
		return errors.New("no target device")
	case t.Offset < 0 || t.Size <= 0:
		return fmt.Errorf("target range offset %d size %d is empty or negative", t.Offset, t.Size)
	case o.expectSize > t.Size:
		return fmt.Errorf("the image is %d bytes, the partition only %d", o.expectSize, t.Size)
	}
	return nil
}

func write(ctx context.Context, src io.Reader, t Target, o options) (Result, error) {
	skipZeros := t.Sparse && rangeIsHole(t, o.log)
	bufs := make([][]byte, buffers)
	for i := range bufs {
		bufs[i] = make([]byte, o.bufSize)
	}
	// Reading and writing stay on this goroutine (in order, so a failure
	// leaves a prefix written); the hash runs behind them on its own.
	h := newHasher(bufs)
	defer h.stop()
	var pos int64
	for {
		if err := ctx.Err(); err != nil {
			return Result{}, fmt.Errorf("stopped after %d bytes: %w", pos, err)
		}
		buf := h.buffer()
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			if pos+int64(n) > t.Size {
				return Result{}, fmt.Errorf("the image is larger than the %d-byte partition (more than %d bytes read)", t.Size, pos+int64(n))
			}
			if o.expectSize >= 0 && pos+int64(n) > o.expectSize {
				return Result{}, fmt.Errorf("the image is larger than the expected %d bytes", o.expectSize)
			}
			if err := writeAt(t, buf[:n], pos, skipZeros); err != nil {
				return Result{}, err
			}
			h.hash(buf[:n])
			pos += int64(n)
			if o.progress != nil {
				o.progress(pos)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return Result{}, fmt.Errorf("read the image after %d bytes: %w", pos, rerr)
		}
	}
	res := Result{Size: pos, Digest: "sha256:" + hex.EncodeToString(h.sum())}
	if o.expectSize >= 0 && pos != o.expectSize {
		return res, fmt.Errorf("the image is %d bytes, expected %d", pos, o.expectSize)
	}
	if o.expectDigest != "" && res.Digest != o.expectDigest {
		return res, fmt.Errorf("the image's digest is %s, expected %s", res.Digest, o.expectDigest)
	}
	if err := t.Device.Sync(); err != nil {
		return res, fmt.Errorf("fsync: %w", err)
	}
	o.log.DebugContext(ctx, "partition written", slog.Int64("bytes", pos), slog.String("digest", res.Digest), slog.Bool("zeros_skipped", skipZeros))
	if o.readBack != nil {
		o.readBack()
	}
	if !t.Sparse {
		// Read back from the disk, not from the page cache (best effort).
		dropCache(t.Device, t.Offset, pos)
	}
	if err := verify(ctx, t, pos, res.Digest, bufs); err != nil {
		return res, err
	}
	return res, nil
}

// zeroBlock is the granularity at which zeros of a sparse target stay
// holes: finer than a buffer, so that a buffer mixing data and zeros still
// leaves its zero runs unwritten.
const zeroBlock = 64 << 10

var zeros [zeroBlock]byte

// writeAt writes b at pos of the partition in one call, or, when
// skipZeros, its runs of zeroBlock-aligned blocks that are not all zero.
func writeAt(t Target, b []byte, pos int64, skipZeros bool) error {
	write := func(from, to int) error {
		off := t.Offset + pos + int64(from)
		if _, err := t.Device.WriteAt(b[from:to], off); err != nil {
			return fmt.Errorf("write at byte %d of the partition: %w", pos+int64(from), err)
		}
		startWriteback(t.Device, off, int64(to-from))
		return nil
	}
	if !skipZeros {
		return write(0, len(b))
	}
	start := -1 // of the current run of data
	flush := func(end int) error {
		err := write(start, end)
		start = -1
		return err
	}
	for i := 0; i < len(b); i += zeroBlock {
		end := min(i+zeroBlock, len(b))
		if !bytes.Equal(b[i:end], zeros[:end-i]) {
			if start < 0 {
				start = i
			}
		} else if start >= 0 {
			if err := flush(i); err != nil {
				return err
			}
		}
	}
	if start >= 0 {
		return flush(len(b))
	}
	return nil
}

// verify reads [Offset, Offset+n) back and compares its hash.
func verify(ctx context.Context, t Target, n int64, want string, bufs [][]byte) error {
	h := newHasher(bufs)
	defer h.stop()
	for pos := int64(0); pos < n; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("verify stopped after %d bytes: %w", pos, err)
		}
		buf := h.buffer()
		chunk := buf[:min(int64(len(buf)), n-pos)]
		if _, err := t.Device.ReadAt(chunk, t.Offset+pos); err != nil {
			return fmt.Errorf("read back at byte %d of the partition: %w", pos, err)
		}
		h.hash(chunk)
		pos += int64(len(chunk))
	}
	if got := "sha256:" + hex.EncodeToString(h.sum()); got != want {
		return fmt.Errorf("read back %s from the partition, wrote %s", got, want)
	}
	return nil
}

// buffers is how many buffers a write cycles through: one being filled
// (read from the source, or from the disk when verifying), one being
// hashed, one queued between them so that neither side waits for the
// other's jitter.
const buffers = 3

// hasher computes SHA-256 on its own goroutine over buffers handed to it
// in order, so that hashing (as expensive as the rest of a write put
// together) overlaps reading and writing instead of adding to them.
type hasher struct {
	free   chan []byte
	full   chan []byte
	done   chan []byte
	summed bool
}

func newHasher(bufs [][]byte) *hasher {
	h := &hasher{free: make(chan []byte, len(bufs)), full: make(chan []byte, len(bufs)), done: make(chan []byte, 1)}
	for _, b := range bufs {
		h.free <- b
	}
	go func() {
		d := sha256.New()
		for b := range h.full {
			d.Write(b)
			h.free <- b[:cap(b)]
		}
		h.done <- d.Sum(nil)
	}()
	return h
}

// buffer returns a buffer the hasher is done with.
func (h *hasher) buffer() []byte { return <-h.free }

// hash queues b, a buffer from buffer, to be hashed; b is not touched
// again until buffer returns it.
func (h *hasher) hash(b []byte) { h.full <- b }

// sum waits for everything queued and returns the digest.
func (h *hasher) sum() []byte {
	h.summed = true
	close(h.full)
	return <-h.done
}

// stop ends the goroutine when sum was not called (a failed write).
func (h *hasher) stop() {
	if !h.summed {
		h.sum()
	}
}

// fileDevice is a Device that is an open file descriptor.
type fileDevice interface {
	Fd() uintptr
	Stat() (os.FileInfo, error)
}
