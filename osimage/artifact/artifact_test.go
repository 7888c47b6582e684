package artifact_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
)

func fromDir(t *testing.T, dir string, opts ...artifact.Option) *artifact.Local {
	t.Helper()
	l, err := artifact.FromDir(context.Background(), dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func readAll(t *testing.T, rc io.ReadCloser) []byte {
	t.Helper()
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// TestFromDir checks the whole layout: the index, both manifests, their
// config and layers, and that reading it back with the parsers the agent
// uses gives the same release.
func TestFromDir(t *testing.T) {
	dir := t.TempDir()
	build := artifacttest.Write(t, dir, artifacttest.Spec{Version: "2.1.0"})
	l := fromDir(t, dir)
	if got := l.Kinds(); len(got) != 2 || got[0] != artifact.Slot || got[1] != artifact.Disk {
		t.Fatalf("kinds %v, want [slot disk]", got)
	}
	idx := l.Index()
	if err := validate.Index(idx, validate.Fast); err != nil {
		t.Fatalf("go-containerregistry's validate.Index: %v", err)
	}
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	x, err := artifact.ParseIndex(raw)
	if err != nil {
		t.Fatalf("ParseIndex of what FromDir made: %v\n%s", err, raw)
	}
	want := artifact.Metadata{Version: "2.1.0", Kernel: "6.1.0-40-amd64", SpecDigest: build.SpecDigest, SourceDateEpoch: 1700000000, Architecture: "amd64"}
	if x.Metadata != want {
		t.Fatalf("index metadata %+v, want %+v", x.Metadata, want)
	}
	if x.Manifest.Annotations[artifact.AnnotationCreated] != "2023-11-14T22:13:20Z" {
		t.Errorf("created annotation %q", x.Manifest.Annotations[artifact.AnnotationCreated])
	}
	rawBytes, err := os.ReadFile(filepath.Join(dir, "debvisor.raw"))
	if err != nil {
		t.Fatal(err)
	}
	slotBytes := rawBytes[build.Partitions[1].Start : build.Partitions[1].Start+build.Slot.Size]
	for _, k := range artifact.Kinds {
		desc, err := x.Find(k, artifact.Platform("amd64"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		mraw, err := img.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		a, err := artifact.ParseArtifact(mraw, k)
		if err != nil {
			t.Fatalf("%s: ParseArtifact: %v\n%s", k, err, mraw)
		}
		cfg, err := img.RawConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		onDisk, _ := os.ReadFile(filepath.Join(dir, osimage.ManifestFile))
		if !bytes.Equal(cfg, onDisk) {
			t.Errorf("%s config is not manifest.json byte for byte", k)
		}
		b, err := artifact.ParseBuildManifest(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Check(x.Metadata, b); err != nil {
			t.Fatalf("%s: Check: %v", k, err)
		}
		layer, err := img.LayerByDigest(a.Layer.Digest)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := layer.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		content := readAll(t, rc)
		if digestOf(content) != a.Layer.Digest.String() || int64(len(content)) != a.Layer.Size {
			t.Fatalf("%s layer bytes do not match the descriptor", k)
		}
		switch k {
		case artifact.Slot:
			if !bytes.Equal(content, slotBytes) {
				t.Fatal("slot layer is not slot A's squashfs")
			}
		case artifact.Disk:
			dec, err := artifact.NewDiskDecoder(bytes.NewReader(content))
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, dec.IOReadCloser())
			if !bytes.Equal(got, rawBytes) {
				t.Fatal("disk layer does not decompress to the raw image")
			}
			if len(content) > len(rawBytes)/2 {
				t.Errorf("disk layer %d bytes for a %d-byte raw image that is mostly zeros", len(content), len(rawBytes))
			}
		}
	}
}

// TestFromDirDeterministic: the same directory gives the same digest
// (re-pushes find every blob), a different build a different one, and a
// pulled directory (slot as its own file) the same as the build output.
func TestFromDirDeterministic(t *testing.T) {
	dir := t.TempDir()
	artifacttest.Write(t, dir, artifacttest.Spec{})
	d1, _ := fromDir(t, dir).Index().Digest()
	d2, _ := fromDir(t, dir).Index().Digest()
	if d1 != d2 {
		t.Fatalf("two FromDir of one directory: %s, %s", d1, d2)
	}
	other := t.TempDir()
	artifacttest.Write(t, other, artifacttest.Spec{Seed: 2})
	if d3, _ := fromDir(t, other).Index().Digest(); d3 == d1 {
		t.Fatal("different builds, same index digest")
	}

	// The pull layout: the slot beside the raw image, as its own file.
	pulled := t.TempDir()
	m := artifacttest.Write(t, pulled, artifacttest.Spec{})
	raw, err := os.ReadFile(filepath.Join(pulled, "debvisor.raw"))
	if err != nil {
		t.Fatal(err)
	}
	a := m.Partitions[1]
	if err := os.WriteFile(filepath.Join(pulled, artifact.SlotFile), raw[a.Start:a.Start+m.Slot.Size], 0o644); err != nil {
		t.Fatal(err)
	}
	if d4, _ := fromDir(t, pulled).Index().Digest(); d4 != d1 {
		t.Fatalf("pulled layout digest %s, build output %s", d4, d1)
	}
}

func TestFromDirKinds(t *testing.T) {
	dir := t.TempDir()
	artifacttest.Write(t, dir, artifacttest.Spec{NoDisk: true})
	l := fromDir(t, dir)
	if got := l.Kinds(); len(got) != 1 || got[0] != artifact.Slot {
		t.Fatalf("slot-only directory: kinds %v", got)
	}
	if _, err := artifact.FromDir(context.Background(), dir, artifact.WithKinds(artifact.Disk)); err == nil || !strings.Contains(err.Error(), "debvisor.raw") {
		t.Fatalf("disk asked for without a raw image: %v", err)
	}
	full := t.TempDir()
	artifacttest.Write(t, full, artifacttest.Spec{})
	if got := fromDir(t, full, artifact.WithKinds(artifact.Disk)).Kinds(); len(got) != 1 || got[0] != artifact.Disk {
		t.Fatalf("WithKinds(disk): %v", got)
	}
	var calls int
	var last int64
	fromDir(t, full, artifact.WithProgress(func(done, total int64) { calls++; last = done }))
	st, _ := os.Stat(filepath.Join(full, "debvisor.raw"))
	if calls == 0 || last != st.Size() {
		t.Fatalf("progress: %d calls, last %d, want the raw size %d", calls, last, st.Size())
	}
}

func TestFromDirRefuses(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(t *testing.T, dir string, m *osimage.Manifest)
		want   string
	}{
		{"no manifest", func(t *testing.T, dir string, m *osimage.Manifest) {
			os.Remove(filepath.Join(dir, osimage.ManifestFile))
		}, "manifest.json"},
		{"raw changed after the build", func(t *testing.T, dir string, m *osimage.Manifest) {
			f, _ := os.OpenFile(filepath.Join(dir, "debvisor.raw"), os.O_WRONLY, 0)
			f.WriteAt([]byte("x"), 100)
			f.Close()
		}, "the file changed after the build"},
		{"raw truncated", func(t *testing.T, dir string, m *osimage.Manifest) {
			os.Truncate(filepath.Join(dir, "debvisor.raw"), 4<<20)
		}, "bytes, the build manifest says"},
		{"no version", func(t *testing.T, dir string, m *osimage.Manifest) {
			m.Version = ""
			rewrite(t, dir, m)
		}, "no version"},
		{"bad spec digest", func(t *testing.T, dir string, m *osimage.Manifest) {
			m.SpecDigest = "md5:1"
			rewrite(t, dir, m)
		}, "spec digest"},
		{"slot larger than its partition", func(t *testing.T, dir string, m *osimage.Manifest) {
			m.Slot.Size = m.Partitions[1].Size + 1
			rewrite(t, dir, m)
		}, "larger than partition"},
		{"no slot A partition", func(t *testing.T, dir string, m *osimage.Manifest) {
			m.Partitions = m.Partitions[:1]
			rewrite(t, dir, m)
		}, "no debvisor-a partition"},
		{"nothing to push", func(t *testing.T, dir string, m *osimage.Manifest) {
			os.Remove(filepath.Join(dir, "debvisor.raw"))
		}, "neither"},
		{"raw name with a path", func(t *testing.T, dir string, m *osimage.Manifest) {
			m.Files[0].Name = "../x.raw"
			rewrite(t, dir, m)
		}, "not a plain name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			m := artifacttest.Write(t, dir, artifacttest.Spec{SlotSize: 1 << 20})
			tt.break_(t, dir, m)
			_, err := artifact.FromDir(context.Background(), dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func rewrite(t *testing.T, dir string, m *osimage.Manifest) {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, osimage.ManifestFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// release returns a valid index and slot manifest to mutate in the
// rejection tables.
func release(t *testing.T) (*v1.IndexManifest, *v1.Manifest, *osimage.Manifest) {
	t.Helper()
	dir := t.TempDir()
	build := artifacttest.Write(t, dir, artifacttest.Spec{SlotSize: 1 << 20})
	l := fromDir(t, dir)
	im, err := l.Index().IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := l.Index().Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return im, m, build
}

func TestParseIndexRefuses(t *testing.T) {
	tests := []struct {
		name string
		mut  func(m *v1.IndexManifest)
		want string
	}{
		{"not a release", func(m *v1.IndexManifest) { m.ArtifactType = "application/vnd.other" }, "not a DebVisor release"},
		{"docker list", func(m *v1.IndexManifest) { m.MediaType = types.DockerManifestList }, "media type"},
		{"schema 1", func(m *v1.IndexManifest) { m.SchemaVersion = 1 }, "schemaVersion"},
		{"no version", func(m *v1.IndexManifest) { delete(m.Annotations, artifact.AnnotationVersion) }, "org.opencontainers.image.version missing"},
		{"bad epoch", func(m *v1.IndexManifest) { m.Annotations[artifact.AnnotationSourceDateEpoch] = "soon" }, "source-date-epoch"},
		{"bad arch", func(m *v1.IndexManifest) { m.Annotations[artifact.AnnotationArchitecture] = "x86 64" }, "architecture"},
		{"no platform", func(m *v1.IndexManifest) { m.Manifests[0].Platform = nil }, "no platform"},
		{"two slots", func(m *v1.IndexManifest) { m.Manifests[1] = m.Manifests[0] }, "two slot artifacts"},
		{"nested index", func(m *v1.IndexManifest) { m.Manifests[0].MediaType = types.OCIImageIndex }, "media type"},
		{"huge manifest", func(m *v1.IndexManifest) { m.Manifests[0].Size = 1 << 30 }, "bad digest or size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			im, _, _ := release(t)
			tt.mut(im)
			b, _ := json.Marshal(im)
			if _, err := artifact.ParseIndex(b); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := artifact.ParseIndex(bytes.Repeat([]byte(" "), artifact.MaxIndexSize+1)); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversized index: %v", err)
	}
}

func TestFind(t *testing.T) {
	im, _, _ := release(t)
	b, _ := json.Marshal(im)
	x, err := artifact.ParseIndex(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Find(artifact.Slot, artifact.Platform("arm64")); err == nil ||
		!strings.Contains(err.Error(), "no slot artifact for linux/arm64 (it has slot for linux/amd64, disk for linux/amd64)") {
		t.Fatalf("arm64: %v", err)
	}
	// A copy tool older than OCI 1.1 (skopeo 1.9) rewrites the index
	// without artifactType fields: the annotations still say which is which.
	old := *im
	old.ArtifactType = ""
	old.Manifests = append([]v1.Descriptor(nil), im.Manifests...)
	for i := range old.Manifests {
		old.Manifests[i].ArtifactType = ""
	}
	b, _ = json.Marshal(&old)
	if x, err := artifact.ParseIndex(b); err != nil {
		t.Fatalf("index without artifactType: %v", err)
	} else if d, err := x.Find(artifact.Disk, artifact.Platform("amd64")); err != nil || d.Digest != im.Manifests[1].Digest {
		t.Fatalf("find disk without artifactType: %v", err)
	}
	// An artifact a later builder adds is skipped, not an error.
	im.Manifests[1].ArtifactType = "application/vnd.debvisor.future.v1"
	b, _ = json.Marshal(im)
	x, err = artifact.ParseIndex(b)
	if err != nil {
		t.Fatalf("unknown artifact type refused: %v", err)
	}
	if _, err := x.Find(artifact.Disk, artifact.Platform("amd64")); err == nil {
		t.Fatal("found a disk artifact the index no longer has")
	}
}

func TestParseArtifactRefuses(t *testing.T) {
	tests := []struct {
		name string
		kind artifact.Kind
		mut  func(m *v1.Manifest)
		want string
	}{
		{"wrong kind", artifact.Disk, func(m *v1.Manifest) {}, "artifactType"},
		{"docker manifest", artifact.Slot, func(m *v1.Manifest) { m.MediaType = types.DockerManifestSchema2 }, "media type"},
		{"image config", artifact.Slot, func(m *v1.Manifest) { m.Config.MediaType = types.OCIConfigJSON }, "config media type"},
		{"two layers", artifact.Slot, func(m *v1.Manifest) { m.Layers = append(m.Layers, m.Layers[0]) }, "2 layers"},
		{"tar layer", artifact.Slot, func(m *v1.Manifest) { m.Layers[0].MediaType = types.OCILayer }, "layer media type"},
		{"foreign layer", artifact.Slot, func(m *v1.Manifest) { m.Layers[0].URLs = []string{"http://x"} }, "foreign"},
		{"huge config", artifact.Slot, func(m *v1.Manifest) { m.Config.Size = 1 << 30 }, "config size"},
		{"no annotations", artifact.Slot, func(m *v1.Manifest) { m.Annotations = nil }, "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, m, _ := release(t)
			tt.mut(m)
			b, _ := json.Marshal(m)
			if _, err := artifact.ParseArtifact(b, tt.kind); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestCheck: the layer must be the build manifest's slot, and every level
// must describe the same release.
func TestCheck(t *testing.T) {
	_, m, build := release(t)
	b, _ := json.Marshal(m)
	a, err := artifact.ParseArtifact(b, artifact.Slot)
	if err != nil {
		t.Fatal(err)
	}
	meta := artifact.MetadataOf(build)
	if err := a.Check(meta, build); err != nil {
		t.Fatal(err)
	}
	other := meta
	other.Version = "9.9.9"
	if err := a.Check(other, build); err == nil || !strings.Contains(err.Error(), "disagree with the index") {
		t.Fatalf("index says another version: %v", err)
	}
	b2 := *build
	b2.Slot.Digest = "sha256:" + strings.Repeat("0", 64)
	if err := a.Check(meta, &b2); err == nil || !strings.Contains(err.Error(), "is not the slot of the build manifest") {
		t.Fatalf("slot digest differs: %v", err)
	}
	b3 := *build
	b3.Version = "0.0.1"
	if err := a.Check(meta, &b3); err == nil || !strings.Contains(err.Error(), "build manifest") {
		t.Fatalf("build manifest of another version: %v", err)
	}
}

func TestVerifyingReader(t *testing.T) {
	data := []byte("the slot bytes")
	d, _ := v1.NewHash(digestOf(data))
	tests := []struct {
		name string
		in   []byte
		size int64
		want string
	}{
		{"exact", data, int64(len(data)), ""},
		{"short", data[:5], int64(len(data)), "5 bytes, its descriptor says 14"},
		{"long", append(append([]byte{}, data...), 'x'), int64(len(data)), "more than the 14 bytes"},
		{"tampered", []byte("the slot bytez"), int64(len(data)), "tampered or corrupted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vr, err := artifact.NewVerifyingReader(bytes.NewReader(tt.in), d, tt.size, "slot")
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(io.Discard, vr)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, artifact.ErrContentMismatch) {
				t.Fatalf("got %v, want ErrContentMismatch containing %q", err, tt.want)
			}
		})
	}
}

func TestParseKind(t *testing.T) {
	for _, s := range []string{"slot", "DISK", " slot "} {
		if _, err := artifact.ParseKind(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	if _, err := artifact.ParseKind("iso"); err == nil {
		t.Error("iso accepted")
	}
}

func FuzzParseAnnotations(f *testing.F) {
	m := artifact.Metadata{Version: "1.2.3", Kernel: "6.1.0-40-amd64", SpecDigest: "sha256:" + strings.Repeat("ab", 32), SourceDateEpoch: 1700000000, Architecture: "amd64"}
	a := m.Annotations()
	f.Add(a[artifact.AnnotationVersion], a[artifact.AnnotationKernel], a[artifact.AnnotationSpecDigest], a[artifact.AnnotationSourceDateEpoch], a[artifact.AnnotationArchitecture])
	f.Add("", "", "", "", "")
	f.Add("1", "a b", "sha256:", "-1", "AMD64")
	f.Fuzz(func(t *testing.T, version, kernel, spec, epoch, arch string) {
		in := map[string]string{
			artifact.AnnotationVersion: version, artifact.AnnotationKernel: kernel, artifact.AnnotationSpecDigest: spec,
			artifact.AnnotationSourceDateEpoch: epoch, artifact.AnnotationArchitecture: arch,
		}
		got, err := artifact.ParseAnnotations(in)
		if err != nil {
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("ParseAnnotations accepted what Validate refuses: %v", err)
		}
		back, err := artifact.ParseAnnotations(got.Annotations())
		if err != nil || back != got {
			t.Fatalf("round trip of %+v: %+v, %v", got, back, err)
		}
	})
}

// fuzzSeeds builds a valid index and slot and disk manifests in memory
// (no files: heavy setup stalls the fuzzing workers).
func fuzzSeeds() [][]byte {
	meta := artifact.Metadata{Version: "1.0.0", SpecDigest: "sha256:" + strings.Repeat("1", 64), SourceDateEpoch: 1, Architecture: "amd64"}
	h := func(c string) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(c, 64)} }
	p := artifact.Platform("amd64")
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, ArtifactType: artifact.ArtifactTypeRelease, Annotations: meta.Annotations(),
		Manifests: []v1.Descriptor{
			{MediaType: types.OCIManifestSchema1, Size: 500, Digest: h("a"), ArtifactType: artifact.ArtifactTypeSlot, Platform: &p},
			{MediaType: types.OCIManifestSchema1, Size: 500, Digest: h("b"), ArtifactType: artifact.ArtifactTypeDisk, Platform: &p},
		}}
	var seeds [][]byte
	b, _ := json.Marshal(idx)
	seeds = append(seeds, b)
	for _, k := range artifact.Kinds {
		m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, ArtifactType: k.ArtifactType(), Annotations: meta.Annotations(),
			Config: v1.Descriptor{MediaType: artifact.MediaTypeBuildManifest, Size: 100, Digest: h("c")},
			Layers: []v1.Descriptor{{MediaType: types.MediaType(k.LayerMediaType()), Size: 1000, Digest: h("d"),
				Annotations: map[string]string{artifact.AnnotationDiskSize: "5000", artifact.AnnotationDiskDigest: "sha256:" + strings.Repeat("e", 64)}}}}
		b, _ := json.Marshal(m)
		seeds = append(seeds, b)
	}
	return seeds
}

func TestFuzzSeedsAreValid(t *testing.T) {
	s := fuzzSeeds()
	if _, err := artifact.ParseIndex(s[0]); err != nil {
		t.Fatal(err)
	}
	for i, k := range artifact.Kinds {
		if _, err := artifact.ParseArtifact(s[i+1], k); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzParseIndex(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if x, err := artifact.ParseIndex(b); err == nil {
			for _, k := range artifact.Kinds {
				x.Find(k, artifact.Platform("amd64")) // must not panic; the error is beside the point
			}
		}
		for _, k := range artifact.Kinds {
			a, err := artifact.ParseArtifact(b, k)
			if err != nil {
				continue
			}
			if a.Kind != k || a.Layer.Size <= 0 || (k == artifact.Disk && a.DiskSize <= 0) {
				t.Fatalf("accepted an inconsistent %s manifest: %+v", k, a)
			}
			a.Check(a.Metadata, &osimage.Manifest{}) // must not panic; the error is beside the point
		}
	})
}
