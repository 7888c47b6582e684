package artifact

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/compress/zstd"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrContentMismatch is wrapped by every error that means the bytes
// received are not the bytes the signed release describes (a tampered or
// corrupted blob).
var ErrContentMismatch = errors.New("content does not match its digest")

// The disk layer's zstd parameters. Fixed, so that the same raw image
// always compresses to the same bytes and a re-push finds the blob
// already there. One encoder goroutine keeps memory small (the output
// does not depend on the concurrency; the tests check).
const (
	diskLevel  = zstd.SpeedDefault
	diskWindow = 8 << 20
)

// NewDiskEncoder returns the zstd writer for the disk layer.
func NewDiskEncoder(w io.Writer) (*zstd.Encoder, error) {
	return zstd.NewWriter(w, zstd.WithEncoderLevel(diskLevel), zstd.WithWindowSize(diskWindow),
		zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
}

// NewDiskDecoder returns a zstd reader for the disk layer; it refuses
// frames that ask for a larger window than the encoder uses, so a hostile
// stream cannot make it allocate more.
func NewDiskDecoder(r io.Reader) (*zstd.Decoder, error) {
	return zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(diskWindow))
}

// VerifyingReader passes r through, hashing it; it fails with
// ErrContentMismatch as soon as more than size bytes arrive, and at EOF if
// fewer did or the sha256 differs. Callers must not treat what they
// wrote as valid until they read io.EOF.
type VerifyingReader struct {
	r    io.Reader
	h    hash.Hash
	want v1.Hash
	size int64
	n    int64
	what string
}

// NewVerifyingReader checks r against digest d and size (what names the
// content in errors).
func NewVerifyingReader(r io.Reader, d v1.Hash, size int64, what string) (*VerifyingReader, error) {
	if d.Algorithm != "sha256" {
		return nil, fmt.Errorf("%s: digest algorithm %q unsupported (want sha256)", what, d.Algorithm)
	}
	return &VerifyingReader{r: r, h: sha256.New(), want: d, size: size, what: what}, nil
}

// Read implements io.Reader.
func (v *VerifyingReader) Read(p []byte) (int, error) {
	if int64(len(p)) > v.size-v.n+1 {
		p = p[:v.size-v.n+1] // read at most one byte past the end, to notice it
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if v.n > v.size {
		return n, fmt.Errorf("%s: more than the %d bytes its descriptor says: %w", v.what, v.size, ErrContentMismatch)
	}
	if errors.Is(err, io.EOF) {
		if v.n != v.size {
			return n, fmt.Errorf("%s: %d bytes, its descriptor says %d: %w", v.what, v.n, v.size, ErrContentMismatch)
		}
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want.Hex {
			return n, fmt.Errorf("%s: content hashes to sha256:%s (tampered or corrupted): %w", v.what, got, ErrContentMismatch)
		}
	}
	return n, err
}
