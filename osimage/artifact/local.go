package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/debvisor/debvisor/osimage"
)

// SlotFile is the slot squashfs's name in a directory written by a pull.
// A build output directory has none: there the slot is read from slot A
// of the raw image, where the builder wrote it.
const SlotFile = "debvisor-slot.squashfs"

// Option configures FromDir.
type Option func(*options) error

type options struct {
	kinds    []Kind
	progress func(done, total int64)
}

// WithKinds limits the release to some artifacts (default: all whose
// files the directory has; at least one).
func WithKinds(k ...Kind) Option {
	return func(o *options) error {
		for _, x := range k {
			if _, err := ParseKind(string(x)); err != nil {
				return err
			}
		}
		o.kinds = k
		return nil
	}
}

// WithProgress reports the bytes read while FromDir compresses the disk
// image to learn its digest.
func WithProgress(f func(done, total int64)) Option {
	return func(o *options) error { o.progress = f; return nil }
}

// Local is a release read from a build output directory, as an OCI image
// index whose blobs stream from the files when pushed.
type Local struct {
	Dir      string
	Build    *osimage.Manifest
	Metadata Metadata
	index    *localIndex
}

// Index returns the release as an image index.
func (l *Local) Index() v1.ImageIndex { return l.index }

// Kinds lists the artifacts in the release.
func (l *Local) Kinds() []Kind {
	var ks []Kind
	for _, img := range l.index.images {
		ks = append(ks, img.kind)
	}
	return ks
}

// FromDir reads manifest.json in dir and builds the release index: the
// slot from SlotFile or else from slot A of the raw image, the disk from
// the raw image. The disk layer is compressed once here to learn its
// digest (and the raw image is checked against the build manifest on the
// way); nothing is held in memory, and pushing compresses it again.
func FromDir(ctx context.Context, dir string, opts ...Option) (*Local, error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, osimage.ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("release in %s: %w", dir, err)
	}
	build, err := ParseBuildManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("release in %s: %w", dir, err)
	}
	meta := MetadataOf(build)
	if err := meta.Validate(); err != nil {
		return nil, fmt.Errorf("release in %s: %s: %w", dir, osimage.ManifestFile, err)
	}
	want := o.kinds
	if len(want) == 0 {
		for _, k := range Kinds {
			if ok, err := hasSource(dir, build, k); err != nil {
				return nil, err
			} else if ok {
				want = append(want, k)
			}
		}
		if len(want) == 0 {
			return nil, fmt.Errorf("release in %s: neither %s nor a raw disk image", dir, SlotFile)
		}
	}
	config := static(raw, MediaTypeBuildManifest)
	idx := &localIndex{meta: meta}
	for _, k := range Kinds {
		if !contains(want, k) {
			continue
		}
		var l *fileLayer
		switch k {
		case Slot:
			l, err = slotLayer(dir, build)
		case Disk:
			l, err = diskLayer(ctx, dir, build, o.progress)
		}
		if err != nil {
			return nil, fmt.Errorf("release in %s: %s: %w", dir, k, err)
		}
		img, err := newLocalImage(k, meta, config, l)
		if err != nil {
			return nil, err
		}
		idx.images = append(idx.images, img)
	}
	if err := idx.render(); err != nil {
		return nil, err
	}
	return &Local{Dir: dir, Build: build, Metadata: meta, index: idx}, nil
}

func contains(ks []Kind, k Kind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

func hasSource(dir string, b *osimage.Manifest, k Kind) (bool, error) {
	if k == Slot {
		if ok, err := exists(filepath.Join(dir, SlotFile)); ok || err != nil {
			return ok, err
		}
		if b.Slot.Size == 0 {
			return false, nil
		}
	}
	f, err := RawFile(b)
	if errors.Is(err, errNoRaw) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return exists(filepath.Join(dir, f.Name))
}

func exists(p string) (bool, error) {
	_, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// slotLayer streams the slot squashfs. Its digest and size are the build
// manifest's; the registry checks them on upload, so a corrupted file
// fails the push rather than publishing different bytes.
func slotLayer(dir string, b *osimage.Manifest) (*fileLayer, error) {
	h, err := v1.NewHash(b.Slot.Digest)
	if err != nil {
		return nil, fmt.Errorf("build manifest slot digest: %w", err)
	}
	if b.Slot.Size <= 0 {
		return nil, fmt.Errorf("build manifest slot size %d", b.Slot.Size)
	}
	ann := map[string]string{AnnotationTitle: SlotFile, AnnotationSlotCompression: b.Slot.Compression}
	path, off := filepath.Join(dir, SlotFile), int64(0)
	st, err := os.Stat(path)
	switch {
	case err == nil:
		if st.Size() != b.Slot.Size {
			return nil, fmt.Errorf("%s is %d bytes, the build manifest says %d", path, st.Size(), b.Slot.Size)
		}
	case errors.Is(err, os.ErrNotExist):
		f, err := RawFile(b)
		if err != nil {
			return nil, err
		}
		var part *osimage.ManifestPartition
		for i := range b.Partitions {
			if b.Partitions[i].Label == osimage.LabelA {
				part = &b.Partitions[i]
			}
		}
		if part == nil {
			return nil, fmt.Errorf("build manifest has no %s partition", osimage.LabelA)
		}
		if b.Slot.Size > part.Size {
			return nil, fmt.Errorf("slot (%d bytes) is larger than partition %s (%d bytes)", b.Slot.Size, part.Label, part.Size)
		}
		path, off = filepath.Join(dir, f.Name), part.Start
		rst, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if off < 0 || off+b.Slot.Size > rst.Size() {
			return nil, fmt.Errorf("%s (%d bytes) ends before slot A does (%d)", path, rst.Size(), off+b.Slot.Size)
		}
	default:
		return nil, err
	}
	size := b.Slot.Size
	return &fileLayer{
		mediaType: MediaTypeSlot, digest: h, size: size, annotations: ann,
		open: func() (io.ReadCloser, error) {
			f, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			return struct {
				io.Reader
				io.Closer
			}{io.NewSectionReader(f, off, size), f}, nil
		},
	}, nil
}

// diskLayer compresses the raw image once to learn the layer's digest and
// size, checking the raw bytes against the build manifest as it goes.
func diskLayer(ctx context.Context, dir string, b *osimage.Manifest, progress func(done, total int64)) (*fileLayer, error) {
	f, err := RawFile(b)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, f.Name)
	in, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() != f.Size {
		return nil, fmt.Errorf("%s is %d bytes, the build manifest says %d", path, st.Size(), f.Size)
	}
	out := &countingHash{h: sha256.New()}
	enc, err := NewDiskEncoder(out)
	if err != nil {
		return nil, err
	}
	rawHash := sha256.New()
	src := &ctxReader{ctx: ctx, r: io.TeeReader(in, rawHash), total: f.Size, progress: progress}
	if _, err := io.Copy(enc, src); err != nil {
		enc.Close()
		return nil, fmt.Errorf("compress %s: %w", path, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("compress %s: %w", path, err)
	}
	if got := "sha256:" + hex.EncodeToString(rawHash.Sum(nil)); got != f.Digest {
		return nil, fmt.Errorf("%s has digest %s, the build manifest says %s: the file changed after the build", path, got, f.Digest)
	}
	digest := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(out.h.Sum(nil))}
	ann := map[string]string{
		AnnotationTitle:      f.Name + ".zst",
		AnnotationDiskSize:   strconv.FormatInt(f.Size, 10),
		AnnotationDiskDigest: f.Digest,
	}
	return &fileLayer{
		mediaType: MediaTypeDisk, digest: digest, size: out.n, annotations: ann,
		open: func() (io.ReadCloser, error) { return compressFile(path) },
	}, nil
}

// compressFile streams the zstd form of path through a pipe; closing the
// reader stops the compressor.
func compressFile(path string) (io.ReadCloser, error) {
	in, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer in.Close()
		enc, err := NewDiskEncoder(pw)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		if _, err := io.Copy(enc, in); err != nil {
			enc.Close()
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(enc.Close())
	}()
	return pr, nil
}

type countingHash struct {
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

type ctxReader struct {
	ctx      context.Context
	r        io.Reader
	done     int64
	total    int64
	progress func(done, total int64)
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.done += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(c.done, c.total)
	}
	return n, err
}

// fileLayer is a layer whose digest is known up front and whose bytes
// are read from a file each time they are asked for (a push may retry).
type fileLayer struct {
	mediaType   types.MediaType
	digest      v1.Hash
	size        int64
	annotations map[string]string
	open        func() (io.ReadCloser, error)
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return l.open() }

// staticBlob is a small in-memory blob (the config).
type staticBlob struct {
	b  []byte
	mt types.MediaType
	h  v1.Hash
}

func static(b []byte, mt types.MediaType) *staticBlob {
	sum := sha256.Sum256(b)
	return &staticBlob{b: b, mt: mt, h: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
}

func (s *staticBlob) Digest() (v1.Hash, error)            { return s.h, nil }
func (s *staticBlob) Size() (int64, error)                { return int64(len(s.b)), nil }
func (s *staticBlob) MediaType() (types.MediaType, error) { return s.mt, nil }
func (s *staticBlob) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(s.b)), nil
}

// localImage is one artifact manifest (partial.CompressedImageCore).
type localImage struct {
	kind     Kind
	config   *staticBlob
	layer    *fileLayer
	manifest []byte
	desc     v1.Descriptor
}

func newLocalImage(k Kind, meta Metadata, config *staticBlob, l *fileLayer) (*localImage, error) {
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  k.ArtifactType(),
		Config:        v1.Descriptor{MediaType: config.mt, Size: int64(len(config.b)), Digest: config.h},
		Layers:        []v1.Descriptor{{MediaType: l.mediaType, Size: l.size, Digest: l.digest, Annotations: l.annotations}},
		Annotations:   meta.Annotations(),
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	p := Platform(meta.Architecture)
	sum := sha256.Sum256(b)
	descAnn := meta.Annotations()
	descAnn[AnnotationArtifact] = string(k)
	return &localImage{
		kind: k, config: config, layer: l, manifest: b,
		desc: v1.Descriptor{
			MediaType: types.OCIManifestSchema1, Size: int64(len(b)),
			Digest:       v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])},
			ArtifactType: k.ArtifactType(), Platform: &p, Annotations: descAnn,
		},
	}, nil
}

func (i *localImage) RawConfigFile() ([]byte, error)      { return i.config.b, nil }
func (i *localImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (i *localImage) RawManifest() ([]byte, error)        { return i.manifest, nil }
func (i *localImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	switch h {
	case i.layer.digest:
		return i.layer, nil
	case i.config.h:
		return i.config, nil
	}
	return nil, fmt.Errorf("%s artifact has no blob %s", i.kind, h)
}

// localIndex is the release index (v1.ImageIndex).
type localIndex struct {
	meta   Metadata
	images []*localImage
	raw    []byte
	digest v1.Hash
}

func (x *localIndex) render() error {
	m := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		ArtifactType:  ArtifactTypeRelease,
		Annotations:   x.meta.Annotations(),
	}
	for _, img := range x.images {
		m.Manifests = append(m.Manifests, img.desc)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	x.raw, x.digest = b, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	return nil
}

func (x *localIndex) MediaType() (types.MediaType, error) { return types.OCIImageIndex, nil }
func (x *localIndex) Digest() (v1.Hash, error)            { return x.digest, nil }
func (x *localIndex) Size() (int64, error)                { return int64(len(x.raw)), nil }
func (x *localIndex) RawManifest() ([]byte, error)        { return x.raw, nil }
func (x *localIndex) IndexManifest() (*v1.IndexManifest, error) {
	var m v1.IndexManifest
	if err := json.Unmarshal(x.raw, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

func (x *localIndex) Image(h v1.Hash) (v1.Image, error) {
	for _, img := range x.images {
		if img.desc.Digest == h {
			return partial.CompressedToImage(img)
		}
	}
	return nil, fmt.Errorf("release index has no manifest %s", h)
}

func (x *localIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	return nil, fmt.Errorf("release index has no nested index %s", h)
}
