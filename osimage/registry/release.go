package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/signature"
)

// Source is the read side of a verified release, what an upgrade or an
// installer consumes (and what their tests fake).
type Source interface {
	// Artifact reads and checks the manifest of kind k.
	Artifact(ctx context.Context, k artifact.Kind) (*Artifact, error)
	// Copy streams kind k's content to w, verified; see Release.Copy.
	Copy(ctx context.Context, k artifact.Kind, w io.Writer) (int64, error)
}

var _ Source = (*Release)(nil)

// Release is a release whose signature verified. Only Open makes one, so
// holding a *Release means the index digest was signed by a trusted key;
// everything read through it is checked against that index.
type Release struct {
	// Ref is the release's index, by digest.
	Ref name.Digest
	// Index is the parsed release index.
	Index *artifact.Index
	// Signature is the signature that verified.
	Signature *signature.Verified

	c         *Client
	platform  v1.Platform
	mu        sync.Mutex
	artifacts map[artifact.Kind]*Artifact
}

// Artifact is one artifact of a release, with its build manifest.
type Artifact struct {
	*artifact.Artifact
	// Descriptor is the manifest's descriptor in the index.
	Descriptor v1.Descriptor
	// Build is the build manifest (the config blob), and BuildJSON its
	// bytes as signed.
	Build     *osimage.Manifest
	BuildJSON []byte
}

// Open resolves ref, verifies its signature with v and reads the release
// index. Nothing about the release is trusted, and no blob is fetched,
// before the signature verified.
func (c *Client) Open(ctx context.Context, ref name.Reference, v *signature.Verifier) (*Release, error) {
	if v == nil {
		return nil, errors.New("open release: no verifier (a release is only read after its signature is checked)")
	}
	d, err := c.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	sig, err := c.Verify(ctx, d, v)
	if err != nil {
		return nil, err
	}
	h, _ := v1.NewHash(d.DigestStr())
	raw, err := c.manifest(ctx, d, h, artifact.MaxIndexSize)
	if err != nil {
		return nil, err
	}
	idx, err := artifact.ParseIndex(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d, err)
	}
	return &Release{Ref: d, Index: idx, Signature: sig, c: c, platform: c.o.platform, artifacts: map[artifact.Kind]*Artifact{}}, nil
}

// manifest fetches a manifest by digest and checks its bytes hash to it.
func (c *Client) manifest(ctx context.Context, d name.Digest, h v1.Hash, limit int64) ([]byte, error) {
	desc, err := remote.Get(d, c.remoteOptions(ctx)...)
	if err != nil {
		return nil, c.explain("fetch", d, err)
	}
	if int64(len(desc.Manifest)) > limit {
		return nil, fmt.Errorf("%s: manifest of %d bytes is over the %d-byte limit", d, len(desc.Manifest), limit)
	}
	sum := sha256.Sum256(desc.Manifest)
	if hex.EncodeToString(sum[:]) != h.Hex {
		return nil, fmt.Errorf("%s: manifest bytes hash to sha256:%x: %w", d, sum, artifact.ErrContentMismatch)
	}
	return desc.Manifest, nil
}

// Artifact reads the manifest and build manifest of kind k for the
// client's platform and checks them against the index.
func (r *Release) Artifact(ctx context.Context, k artifact.Kind) (*Artifact, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.artifacts[k]; ok {
		return a, nil
	}
	desc, err := r.Index.Find(k, r.platform)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Ref, err)
	}
	repo := r.Ref.Context()
	raw, err := r.c.manifest(ctx, repo.Digest(desc.Digest.String()), desc.Digest, artifact.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) != desc.Size {
		return nil, fmt.Errorf("%s manifest %s: %d bytes, the index says %d: %w", k, desc.Digest, len(raw), desc.Size, artifact.ErrContentMismatch)
	}
	a, err := artifact.ParseArtifact(raw, k)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", desc.Digest, err)
	}
	var buf bytes.Buffer
	if err := r.c.fetchBlob(ctx, repo, a.Config, &buf, "", nil); err != nil {
		return nil, fmt.Errorf("%s build manifest: %w", k, err)
	}
	build, err := artifact.ParseBuildManifest(buf.Bytes())
	if err != nil {
		return nil, err
	}
	if err := a.Check(r.Index.Metadata, build); err != nil {
		return nil, fmt.Errorf("%s: %w", r.Ref, err)
	}
	out := &Artifact{Artifact: a, Descriptor: desc, Build: build, BuildJSON: buf.Bytes()}
	r.artifacts[k] = out
	return out, nil
}

// Copy streams the content of artifact k to w: the slot squashfs, or the
// raw disk image decompressed. The bytes are checked as they pass; w has
// received verified content only when Copy returns nil, so a caller
// writes to a place that does not count yet (a partial file, a slot
// marked not bootable) and commits it afterwards. It returns the bytes
// written.
func (r *Release) Copy(ctx context.Context, k artifact.Kind, w io.Writer) (int64, error) {
	a, err := r.Artifact(ctx, k)
	if err != nil {
		return 0, err
	}
	cw := &countWriter{w: w}
	if err := r.c.fetchBlob(ctx, r.Ref.Context(), a.Layer, cw, k, func(src io.Reader) (io.Reader, func() error, error) {
		if k != artifact.Disk {
			return src, nil, nil
		}
		dec, err := artifact.NewDiskDecoder(src)
		if err != nil {
			return nil, nil, err
		}
		vr, err := artifact.NewVerifyingReader(dec, a.DiskDigest, a.DiskSize, "disk image (decompressed)")
		if err != nil {
			dec.Close()
			return nil, nil, err
		}
		return vr, func() error { dec.Close(); return nil }, nil
	}); err != nil {
		return cw.n, fmt.Errorf("%s of %s: %w", k, r.Ref, err)
	}
	return cw.n, nil
}

// Blob streams the stored blob of artifact k unchecked, for a consumer
// that checks it itself as it reads, against the size and digest of the
// artifact's Layer (the slot writer does, before a slot can become
// bootable): the bytes are hashed once instead of twice on the way to the
// disk. Nothing read from it counts as verified until that check passed;
// Copy is the stream that verifies. A dropped connection resumes as in
// Copy. Only an artifact whose content is its blob as stored can be read
// so: not the compressed disk image.
func (r *Release) Blob(ctx context.Context, k artifact.Kind) (io.ReadCloser, error) {
	if k == artifact.Disk {
		return nil, fmt.Errorf("%s of %s: stored compressed, read it with Copy", k, r.Ref)
	}
	a, err := r.Artifact(ctx, k)
	if err != nil {
		return nil, err
	}
	br, err := r.c.newBlobReader(ctx, r.Ref.Context(), a.Layer, k)
	if err != nil {
		return nil, fmt.Errorf("%s of %s: %w", k, r.Ref, err)
	}
	return br, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
