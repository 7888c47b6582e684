// Package artifact owns the OCI form of a DebVisor release, the contract
// between the image builder (which pushes it) and the node agent and the
// installers (which pull it): media types, annotation keys, the layout of
// the image index, building that index from a build output directory, and
// picking the slot or disk artifact out of an index for a platform.
//
// A release is one OCI image index with one image manifest per artifact:
//
//	index  (artifactType application/vnd.debvisor.release.v1, release annotations)
//	├── slot manifest (artifactType application/vnd.debvisor.slot.v1, platform linux/ARCH)
//	│     config: the build manifest (manifest.json), application/vnd.debvisor.build-manifest.v1+json
//	│     layer:  the slot squashfs as-is, application/vnd.debvisor.slot.v1.squashfs
//	└── disk manifest (artifactType application/vnd.debvisor.disk.v1, platform linux/ARCH)
//	      config: the same build manifest
//	      layer:  the raw disk image, zstd-compressed, application/vnd.debvisor.disk.v1.raw+zstd
//
// The package does no network I/O; osimage/registry moves these values.
package artifact

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Kind names one artifact of a release.
type Kind string

const (
	// Slot is the slot squashfs: what an A/B upgrade writes to the
	// inactive slot partition.
	Slot Kind = "slot"
	// Disk is the whole raw disk image: what an installer writes.
	Disk Kind = "disk"
)

// Kinds lists every artifact kind in index order.
var Kinds = []Kind{Slot, Disk}

// ParseKind accepts "slot" or "disk".
func ParseKind(s string) (Kind, error) {
	k := Kind(strings.ToLower(strings.TrimSpace(s)))
	if !slices.Contains(Kinds, k) {
		return "", fmt.Errorf("unknown artifact %q (want slot or disk)", s)
	}
	return k, nil
}

// Media and artifact types. Versioned (v1) so a later layout can coexist
// with nodes that only read this one.
const (
	// ArtifactTypeRelease is the index's artifactType.
	ArtifactTypeRelease = "application/vnd.debvisor.release.v1"
	// ArtifactTypeSlot and ArtifactTypeDisk are the manifests'
	// artifactType (and the index descriptors').
	ArtifactTypeSlot = "application/vnd.debvisor.slot.v1"
	ArtifactTypeDisk = "application/vnd.debvisor.disk.v1"
	// MediaTypeBuildManifest is the config blob of both manifests: the
	// builder's manifest.json (osimage.Manifest), byte for byte.
	MediaTypeBuildManifest = "application/vnd.debvisor.build-manifest.v1+json"
	// MediaTypeSlot is the slot layer: the squashfs, uncompressed by the
	// registry layer (squashfs compresses itself).
	MediaTypeSlot = "application/vnd.debvisor.slot.v1.squashfs"
	// MediaTypeDisk is the disk layer: the raw image as one zstd stream.
	// A raw image is mostly zeros (the empty slot B, the slack of slot A).
	MediaTypeDisk = "application/vnd.debvisor.disk.v1.raw+zstd"
)

// ArtifactType returns the artifactType of kind k.
func (k Kind) ArtifactType() string {
	if k == Disk {
		return ArtifactTypeDisk
	}
	return ArtifactTypeSlot
}

// LayerMediaType returns the media type of kind k's only layer.
func (k Kind) LayerMediaType() string {
	if k == Disk {
		return MediaTypeDisk
	}
	return MediaTypeSlot
}

func kindOfArtifactType(t string) (Kind, bool) {
	switch t {
	case ArtifactTypeSlot:
		return Slot, true
	case ArtifactTypeDisk:
		return Disk, true
	}
	return "", false
}

// descriptorKind is the artifact an index descriptor points at: its
// artifactType, or (when a copy tool dropped that) its annotation.
func descriptorKind(artifactType string, annotations map[string]string) (Kind, bool) {
	if artifactType != "" {
		return kindOfArtifactType(artifactType)
	}
	k, err := ParseKind(annotations[AnnotationArtifact])
	return k, err == nil
}

// Annotation keys. The standard OCI keys are used where one exists.
const (
	AnnotationVersion         = "org.opencontainers.image.version"
	AnnotationCreated         = "org.opencontainers.image.created"
	AnnotationTitle           = "org.opencontainers.image.title"
	AnnotationKernel          = "dev.debvisor.image.kernel"
	AnnotationSpecDigest      = "dev.debvisor.image.spec-digest"
	AnnotationSourceDateEpoch = "dev.debvisor.image.source-date-epoch"
	AnnotationArchitecture    = "dev.debvisor.image.architecture"
	// AnnotationSlotCompression is on the slot layer: the squashfs
	// compressor (xz or gzip).
	AnnotationSlotCompression = "dev.debvisor.slot.compression"
	// AnnotationDiskSize and AnnotationDiskDigest are on the disk layer:
	// size and sha256 of the raw image after decompression, which an
	// installer checks what it wrote against.
	AnnotationDiskSize   = "dev.debvisor.disk.size"
	AnnotationDiskDigest = "dev.debvisor.disk.digest"
	// AnnotationArtifact is on each index descriptor: "slot" or "disk".
	// It repeats the descriptor's artifactType for copy tools that predate
	// OCI 1.1 and drop that field when they rewrite an index (skopeo 1.9
	// does); a release copied that way has a new digest and needs a new
	// signature, but is otherwise still readable.
	AnnotationArtifact = "dev.debvisor.artifact"
)

// Metadata is what every level of a release is annotated with (the index,
// each index descriptor and each manifest), so a client can decide from
// the index alone whether a release is newer and fits its platform.
type Metadata struct {
	// Version is the DebVisor OS version (the spec's version).
	Version string
	// Kernel is the kernel release in the slot; empty when unknown.
	Kernel string
	// SpecDigest is "sha256:<hex>" of the canonical spec and its files.
	SpecDigest string
	// SourceDateEpoch is the build's timestamp (seconds since 1970).
	SourceDateEpoch int64
	// Architecture is the Debian/Go architecture name ("amd64").
	Architecture string
}

// Annotations renders m. org.opencontainers.image.created is derived from
// the source date so the same build always gives the same bytes.
func (m Metadata) Annotations() map[string]string {
	a := map[string]string{
		AnnotationVersion:         m.Version,
		AnnotationSpecDigest:      m.SpecDigest,
		AnnotationSourceDateEpoch: strconv.FormatInt(m.SourceDateEpoch, 10),
		AnnotationCreated:         time.Unix(m.SourceDateEpoch, 0).UTC().Format(time.RFC3339),
		AnnotationArchitecture:    m.Architecture,
	}
	if m.Kernel != "" {
		a[AnnotationKernel] = m.Kernel
	}
	return a
}

// Validate checks the fields a node relies on.
func (m Metadata) Validate() error {
	if m.Version == "" {
		return fmt.Errorf("no version")
	}
	if strings.ContainsAny(m.Version, "\n\r") {
		return fmt.Errorf("version %q contains a line break", m.Version)
	}
	if err := checkDigest(m.SpecDigest); err != nil {
		return fmt.Errorf("spec digest: %w", err)
	}
	if m.SourceDateEpoch < 0 {
		return fmt.Errorf("source date epoch %d is negative", m.SourceDateEpoch)
	}
	if !validArch(m.Architecture) {
		return fmt.Errorf("architecture %q is not a Debian architecture name", m.Architecture)
	}
	if strings.ContainsAny(m.Kernel, " \t\n\r/") {
		return fmt.Errorf("kernel release %q contains a space or slash", m.Kernel)
	}
	return nil
}

// ParseAnnotations reads Metadata back from annotations and validates it.
// Unknown keys are ignored (later builders may add some).
func ParseAnnotations(a map[string]string) (Metadata, error) {
	var m Metadata
	var ok bool
	if m.Version, ok = a[AnnotationVersion]; !ok {
		return Metadata{}, fmt.Errorf("annotation %s missing", AnnotationVersion)
	}
	m.Kernel = a[AnnotationKernel]
	if m.SpecDigest, ok = a[AnnotationSpecDigest]; !ok {
		return Metadata{}, fmt.Errorf("annotation %s missing", AnnotationSpecDigest)
	}
	e, ok := a[AnnotationSourceDateEpoch]
	if !ok {
		return Metadata{}, fmt.Errorf("annotation %s missing", AnnotationSourceDateEpoch)
	}
	n, err := strconv.ParseInt(e, 10, 64)
	if err != nil {
		return Metadata{}, fmt.Errorf("annotation %s: %w", AnnotationSourceDateEpoch, err)
	}
	m.SourceDateEpoch = n
	if m.Architecture, ok = a[AnnotationArchitecture]; !ok {
		return Metadata{}, fmt.Errorf("annotation %s missing", AnnotationArchitecture)
	}
	if err := m.Validate(); err != nil {
		return Metadata{}, fmt.Errorf("release annotations: %w", err)
	}
	return m, nil
}

func checkDigest(d string) error {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 {
		return fmt.Errorf("%q is not sha256:<64 hex digits>", d)
	}
	for _, c := range hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%q is not sha256:<64 hex digits>", d)
		}
	}
	return nil
}

func validArch(a string) bool {
	if a == "" || len(a) > 32 {
		return false
	}
	for _, c := range a {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
