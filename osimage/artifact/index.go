package artifact

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/debvisor/debvisor/osimage"
)

// Size limits for what a client reads into memory before it has checked
// anything: a release index or manifest is a few KiB, the build manifest
// about one.
const (
	MaxIndexSize         = 1 << 20
	MaxManifestSize      = 1 << 20
	MaxBuildManifestSize = 1 << 20
)

// OS is the platform OS of every DebVisor artifact.
const OS = "linux"

// Platform returns the OCI platform of an architecture.
func Platform(arch string) v1.Platform {
	return v1.Platform{OS: OS, Architecture: arch}
}

// Index is a parsed release index.
type Index struct {
	Manifest *v1.IndexManifest
	Metadata Metadata
}

// ParseIndex decodes a release index and checks its shape: an OCI image
// index whose artifactType is a DebVisor release, release annotations,
// and descriptors that are image manifests with a known artifactType.
func ParseIndex(b []byte) (*Index, error) {
	if len(b) > MaxIndexSize {
		return nil, fmt.Errorf("release index: %d bytes is over the %d-byte limit", len(b), MaxIndexSize)
	}
	var m v1.IndexManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("release index: %w", err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("release index: schemaVersion %d, want 2", m.SchemaVersion)
	}
	if m.MediaType != types.OCIImageIndex {
		return nil, fmt.Errorf("release index: media type %q, want %q", m.MediaType, types.OCIImageIndex)
	}
	// An empty artifactType is accepted: copy tools older than OCI 1.1
	// drop it (the annotations below still have to be DebVisor's).
	if m.ArtifactType != ArtifactTypeRelease && m.ArtifactType != "" {
		return nil, fmt.Errorf("not a DebVisor release: index artifactType %q, want %q", m.ArtifactType, ArtifactTypeRelease)
	}
	meta, err := ParseAnnotations(m.Annotations)
	if err != nil {
		return nil, fmt.Errorf("release index: %w", err)
	}
	seen := map[string]bool{}
	for i, d := range m.Manifests {
		if d.MediaType != types.OCIManifestSchema1 {
			return nil, fmt.Errorf("release index: manifests[%d]: media type %q, want %q", i, d.MediaType, types.OCIManifestSchema1)
		}
		k, ok := descriptorKind(d.ArtifactType, d.Annotations)
		if !ok {
			// Tolerated: a later builder may add artifacts this reader
			// does not know; Find never returns them.
			continue
		}
		if d.Platform == nil {
			return nil, fmt.Errorf("release index: manifests[%d] (%s): no platform", i, k)
		}
		key := string(k) + "/" + d.Platform.String()
		if seen[key] {
			return nil, fmt.Errorf("release index: two %s artifacts for %s", k, d.Platform)
		}
		seen[key] = true
		if err := checkDigest(d.Digest.String()); err != nil || d.Size <= 0 || d.Size > MaxManifestSize {
			return nil, fmt.Errorf("release index: manifests[%d] (%s): bad digest or size (%s, %d bytes)", i, k, d.Digest, d.Size)
		}
	}
	return &Index{Manifest: &m, Metadata: meta}, nil
}

// Find returns the descriptor of kind k for platform p.
func (x *Index) Find(k Kind, p v1.Platform) (v1.Descriptor, error) {
	var have []string
	for _, d := range x.Manifest.Manifests {
		dk, ok := descriptorKind(d.ArtifactType, d.Annotations)
		if !ok || d.Platform == nil {
			continue
		}
		if dk == k && d.Platform.OS == p.OS && d.Platform.Architecture == p.Architecture {
			return d, nil
		}
		have = append(have, string(dk)+" for "+d.Platform.String())
	}
	if len(have) == 0 {
		return v1.Descriptor{}, fmt.Errorf("release %s has no %s artifact for %s (it has none DebVisor knows)", x.Metadata.Version, k, p)
	}
	return v1.Descriptor{}, fmt.Errorf("release %s has no %s artifact for %s (it has %s)", x.Metadata.Version, k, p, strings.Join(have, ", "))
}

// Artifact is a parsed artifact manifest: its config (the build manifest)
// and its one layer.
type Artifact struct {
	Kind     Kind
	Manifest *v1.Manifest
	Config   v1.Descriptor
	Layer    v1.Descriptor
	Metadata Metadata
	// SlotCompression is the squashfs compressor (slot artifacts).
	SlotCompression string
	// DiskSize and DiskDigest describe the raw image after decompression
	// (disk artifacts).
	DiskSize   int64
	DiskDigest v1.Hash
}

// ParseArtifact decodes an artifact manifest of kind k and checks its
// shape: media types, one layer, annotations.
func ParseArtifact(b []byte, k Kind) (*Artifact, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%s manifest: %d bytes is over the %d-byte limit", k, len(b), MaxManifestSize)
	}
	var m v1.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s manifest: %w", k, err)
	}
	if m.SchemaVersion != 2 || m.MediaType != types.OCIManifestSchema1 {
		return nil, fmt.Errorf("%s manifest: schemaVersion %d, media type %q: want 2, %q", k, m.SchemaVersion, m.MediaType, types.OCIManifestSchema1)
	}
	if m.ArtifactType != k.ArtifactType() {
		return nil, fmt.Errorf("%s manifest: artifactType %q, want %q", k, m.ArtifactType, k.ArtifactType())
	}
	if m.Config.MediaType != MediaTypeBuildManifest {
		return nil, fmt.Errorf("%s manifest: config media type %q, want %q", k, m.Config.MediaType, MediaTypeBuildManifest)
	}
	if m.Config.Size <= 0 || m.Config.Size > MaxBuildManifestSize {
		return nil, fmt.Errorf("%s manifest: config size %d out of range", k, m.Config.Size)
	}
	if len(m.Layers) != 1 {
		return nil, fmt.Errorf("%s manifest: %d layers, want exactly 1", k, len(m.Layers))
	}
	l := m.Layers[0]
	if string(l.MediaType) != k.LayerMediaType() {
		return nil, fmt.Errorf("%s manifest: layer media type %q, want %q", k, l.MediaType, k.LayerMediaType())
	}
	if l.Size <= 0 {
		return nil, fmt.Errorf("%s manifest: layer size %d", k, l.Size)
	}
	for _, d := range []v1.Hash{m.Config.Digest, l.Digest} {
		if err := checkDigest(d.String()); err != nil {
			return nil, fmt.Errorf("%s manifest: %w", k, err)
		}
	}
	if len(l.URLs) != 0 {
		return nil, fmt.Errorf("%s manifest: foreign layer URLs are not allowed", k)
	}
	meta, err := ParseAnnotations(m.Annotations)
	if err != nil {
		return nil, fmt.Errorf("%s manifest: %w", k, err)
	}
	a := &Artifact{Kind: k, Manifest: &m, Config: m.Config, Layer: l, Metadata: meta}
	switch k {
	case Slot:
		a.SlotCompression = l.Annotations[AnnotationSlotCompression]
	case Disk:
		n, err := strconv.ParseInt(l.Annotations[AnnotationDiskSize], 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("disk manifest: layer annotation %s=%q is not a positive size", AnnotationDiskSize, l.Annotations[AnnotationDiskSize])
		}
		d := l.Annotations[AnnotationDiskDigest]
		if err := checkDigest(d); err != nil {
			return nil, fmt.Errorf("disk manifest: layer annotation %s: %w", AnnotationDiskDigest, err)
		}
		a.DiskSize = n
		a.DiskDigest, _ = v1.NewHash(d)
	}
	return a, nil
}

// Check ties an artifact to the index that named it and to its build
// manifest: same release metadata everywhere, and the build manifest's
// slot or disk digest is the content the layer carries. A signature
// covers the index digest, the index covers the manifest digests and the
// manifests cover the configs, so after Check every byte a client writes
// is accounted for by the signature.
func (a *Artifact) Check(idx Metadata, build *osimage.Manifest) error {
	if a.Metadata != idx {
		return fmt.Errorf("%s manifest annotations (%+v) disagree with the index (%+v)", a.Kind, a.Metadata, idx)
	}
	if err := buildMatches(build, idx); err != nil {
		return fmt.Errorf("%s build manifest: %w", a.Kind, err)
	}
	switch a.Kind {
	case Slot:
		if build.Slot.Digest != a.Layer.Digest.String() || build.Slot.Size != a.Layer.Size {
			return fmt.Errorf("slot layer %s (%d bytes) is not the slot of the build manifest (%s, %d bytes)", a.Layer.Digest, a.Layer.Size, build.Slot.Digest, build.Slot.Size)
		}
		if a.SlotCompression != build.Slot.Compression {
			return fmt.Errorf("slot layer compression %q, build manifest says %q", a.SlotCompression, build.Slot.Compression)
		}
	case Disk:
		f, err := RawFile(build)
		if err != nil {
			return err
		}
		if f.Digest != a.DiskDigest.String() || f.Size != a.DiskSize {
			return fmt.Errorf("disk layer holds %s (%d bytes), build manifest's %s is %s (%d bytes)", a.DiskDigest, a.DiskSize, f.Name, f.Digest, f.Size)
		}
	}
	return nil
}

func buildMatches(b *osimage.Manifest, m Metadata) error {
	got := MetadataOf(b)
	if got != m {
		return fmt.Errorf("describes %+v, annotations say %+v", got, m)
	}
	return nil
}

// MetadataOf is the release metadata of a build manifest. Manifests
// written before the architecture was recorded are amd64: the only
// architecture the builder ever produced.
func MetadataOf(b *osimage.Manifest) Metadata {
	arch := b.Architecture
	if arch == "" {
		arch = "amd64"
	}
	return Metadata{Version: b.Version, Kernel: b.Kernel, SpecDigest: b.SpecDigest, SourceDateEpoch: b.SourceDateEpoch, Architecture: arch}
}

// ParseBuildManifest decodes the config blob of an artifact.
func ParseBuildManifest(b []byte) (*osimage.Manifest, error) {
	if len(b) > MaxBuildManifestSize {
		return nil, fmt.Errorf("build manifest: %d bytes is over the %d-byte limit", len(b), MaxBuildManifestSize)
	}
	return osimage.ParseManifest(b)
}

// RawFile returns the raw disk image's entry in a build manifest.
func RawFile(b *osimage.Manifest) (osimage.ManifestFileEntry, error) {
	for _, f := range b.Files {
		if strings.HasSuffix(f.Name, ".raw") {
			if strings.ContainsAny(f.Name, `/\`) || f.Name == ".raw" {
				return osimage.ManifestFileEntry{}, fmt.Errorf("build manifest: file name %q is not a plain name", f.Name)
			}
			return f, nil
		}
	}
	return osimage.ManifestFileEntry{}, errNoRaw
}

var errNoRaw = errors.New("build manifest lists no raw disk image")
