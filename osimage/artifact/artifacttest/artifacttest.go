// Package artifacttest writes synthetic build output directories for
// tests of the OCI code: random slot bytes inside a raw "disk" at slot A's
// offset, and a manifest.json that describes them as the image builder
// would. No OS image is built; the bytes only have to be consistent.
package artifacttest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/osimage/artifact"
)

// Spec sizes a synthetic release.
type Spec struct {
	// Version of the release (default "1.0.0").
	Version string
	// SlotSize is the slot squashfs size in bytes (default 3 MiB + 17).
	SlotSize int64
	// NoDisk writes the slot as artifact.SlotFile and no raw image (what
	// the 1 GiB benchmark uses).
	NoDisk bool
	// Seed makes different releases differ (default 1).
	Seed uint64
}

// Partition sizes of the synthetic disk.
const (
	espStart = 1 << 20
	espSize  = 2 << 20
)

// Write fills dir with a release and returns its build manifest.
func Write(t testing.TB, dir string, s Spec) *osimage.Manifest {
	t.Helper()
	if s.Version == "" {
		s.Version = "1.0.0"
	}
	if s.SlotSize == 0 {
		s.SlotSize = 3<<20 + 17
	}
	if s.Seed == 0 {
		s.Seed = 1
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8(seed(s.Seed))
	slotPart := (s.SlotSize + 1<<20 - 1) &^ (1<<20 - 1)
	aStart := int64(espStart + espSize)
	bStart := aStart + slotPart
	dataStart := bStart + slotPart
	dataSize := int64(1 << 20)
	total := dataStart + dataSize + 1<<20
	m := &osimage.Manifest{
		Version:         s.Version,
		SpecDigest:      "sha256:" + hex.EncodeToString(sum([]byte(s.Version))),
		SourceDateEpoch: 1700000000,
		Architecture:    "amd64",
		Kernel:          "6.1.0-40-amd64",
		DiskSize:        total,
		DiskGUID:        "8E0A1D52-0000-4000-8000-000000000001",
		Partitions: []osimage.ManifestPartition{
			{Number: osimage.PartESP, Label: osimage.LabelESP, Type: osimage.TypeEFISystem, Start: espStart, Size: espSize},
			{Number: osimage.PartA, Label: osimage.LabelA, Type: osimage.TypeLinuxFilesystem, Start: aStart, Size: slotPart},
			{Number: osimage.PartB, Label: osimage.LabelB, Type: osimage.TypeLinuxFilesystem, Start: bStart, Size: slotPart},
			{Number: osimage.PartData, Label: osimage.LabelData, Type: osimage.TypeLinuxFilesystem, Start: dataStart, Size: dataSize},
		},
		Slot: osimage.ManifestSlot{Compression: "xz", Size: s.SlotSize},
	}
	slotHash := sha256.New()
	if s.NoDisk {
		f := create(t, filepath.Join(dir, artifact.SlotFile))
		copyRandom(t, io.MultiWriter(f, slotHash), rng, s.SlotSize)
		closeFile(t, f)
		m.Files = []osimage.ManifestFileEntry{{Name: "debvisor.raw", Size: total, Digest: "sha256:" + hex.EncodeToString(sum(nil))}}
	} else {
		f := create(t, filepath.Join(dir, "debvisor.raw"))
		// A little random data in the ESP, the slot in A, zeros elsewhere:
		// compressible like a real image.
		if _, err := f.Seek(espStart, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		copyRandom(t, f, rng, 64<<10)
		if _, err := f.Seek(aStart, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		copyRandom(t, io.MultiWriter(f, slotHash), rng, s.SlotSize)
		if err := f.Truncate(total); err != nil {
			t.Fatal(err)
		}
		closeFile(t, f)
		m.Files = []osimage.ManifestFileEntry{{Name: "debvisor.raw", Size: total, Digest: FileDigest(t, filepath.Join(dir, "debvisor.raw"))}}
	}
	m.Slot.Digest = "sha256:" + hex.EncodeToString(slotHash.Sum(nil))
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, osimage.ManifestFile), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

// FileDigest returns "sha256:<hex>" of a file.
func FileDigest(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func seed(n uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(n >> (8 * i))
	}
	return s
}

func sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func create(t testing.TB, p string) *os.File {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func closeFile(t testing.TB, f *os.File) {
	t.Helper()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func copyRandom(t testing.TB, w io.Writer, rng *rand.ChaCha8, n int64) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for n > 0 {
		c := min(int64(len(buf)), n)
		if _, err := rng.Read(buf[:c]); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(buf[:c]); err != nil {
			t.Fatal(err)
		}
		n -= c
	}
}
