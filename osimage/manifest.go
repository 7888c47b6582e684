package osimage

import (
	"encoding/json"
	"fmt"
)

// ManifestFile is the manifest's name beside the image files.
const ManifestFile = "manifest.json"

// Manifest describes a built image; it is written as JSON next to the
// raw and qcow2 files and is what upgrade tooling checks a slot against.
type Manifest struct {
	// Version is the DebVisor OS version baked into the slot.
	Version string `json:"version"`
	// SpecDigest is "sha256:<hex>" of the canonical spec.
	SpecDigest string `json:"spec_digest"`
	// SourceDateEpoch is the timestamp every file in the image carries.
	SourceDateEpoch int64 `json:"source_date_epoch"`
	// Architecture is the Debian/Go architecture name of the image
	// ("amd64"). Manifests written before it was recorded omit it; they
	// were all amd64.
	Architecture string `json:"architecture,omitempty"`
	// Kernel is the kernel release in the slot ("6.1.0-40-amd64"), the
	// target of /boot/vmlinuz.
	Kernel string `json:"kernel,omitempty"`
	// DiskSize is the raw image size in bytes.
	DiskSize int64 `json:"disk_size"`
	// DiskGUID is the GPT disk GUID.
	DiskGUID   string              `json:"disk_guid"`
	Partitions []ManifestPartition `json:"partitions"`
	// Slot describes the squashfs written to slot A.
	Slot ManifestSlot `json:"slot"`
	// Files are the output files with their digests.
	Files []ManifestFileEntry `json:"files"`
}

// ManifestPartition is one GPT entry.
type ManifestPartition struct {
	Number int    `json:"number"`
	Label  string `json:"label"`
	Type   string `json:"type"`
	GUID   string `json:"guid"`
	Start  int64  `json:"start_bytes"`
	Size   int64  `json:"size_bytes"`
}

// ManifestSlot is the slot filesystem.
type ManifestSlot struct {
	Compression string `json:"compression"`
	Size        int64  `json:"size_bytes"`
	Digest      string `json:"digest"`
}

// ManifestFileEntry is one output file.
type ManifestFileEntry struct {
	Name   string `json:"name"`
	Size   int64  `json:"size_bytes"`
	Digest string `json:"digest"`
}

// ParseManifest decodes a manifest, refusing unknown fields.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &m, nil
}
