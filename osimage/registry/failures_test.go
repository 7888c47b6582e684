package registry_test

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"

	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
	"github.com/debvisor/debvisor/osimage/registry"
	"github.com/debvisor/debvisor/osimage/registry/registrytest"
	"github.com/debvisor/debvisor/osimage/signature"
)

// writeSignatures replaces d's signature image with one layer holding
// payload and the base64 signature sig.
func writeSignatures(t *testing.T, d name.Digest, payload []byte, sig string) {
	t.Helper()
	img, err := mutate.Append(signature.Empty(), mutate.Addendum{
		Layer:       static.NewLayer(payload, signature.MediaTypePayload),
		Annotations: map[string]string{signature.AnnotationSignature: sig},
	})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := v1.NewHash(d.DigestStr())
	if err := remote.Write(d.Context().Tag(signature.Tag(h)), img); err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestFailuresWriteNothing: each way a pull can be wrong fails with an
// error that says which, and the target directory (which already holds
// an older image) is left exactly as it was. Against Debian's
// docker-registry, whose storage the test can tamper with.
func TestFailuresWriteNothing(t *testing.T) {
	reg := registryDistribution(t)
	c := client(t)
	s, v := key(t)
	other, _ := key(t)
	tests := []struct {
		name string
		// setup pushes l (and l2) to repo and breaks something. Each case
		// has its own releases: the registry stores blobs once for all
		// repositories, so a blob tampered in one case would leak into
		// the next.
		setup func(t *testing.T, repo string, l, l2 *artifact.Local)
		v     *signature.Verifier
		is    error
		want  string
	}{
		{"tampered slot blob", func(t *testing.T, repo string, l, l2 *artifact.Local) {
			pushSigned(t, c, repo+":1", l, s)
			flipByte(t, reg.BlobPath(l.Build.Slot.Digest), l.Build.Slot.Size/2)
		}, v, artifact.ErrContentMismatch, "tampered or corrupted"},
		{"tampered disk blob", func(t *testing.T, repo string, l, l2 *artifact.Local) {
			d := pushSigned(t, c, repo+":1", l, s)
			rel, err := c.Open(ctx(t), d, v)
			if err != nil {
				t.Fatal(err)
			}
			a, err := rel.Artifact(ctx(t), artifact.Disk)
			if err != nil {
				t.Fatal(err)
			}
			flipByte(t, reg.BlobPath(a.Layer.Digest.String()), a.Layer.Size-10)
		}, v, nil, "disk of"},
		{"missing signature", func(t *testing.T, repo string, l, l2 *artifact.Local) {
			pushSigned(t, c, repo+":1", l, nil)
		}, v, signature.ErrNoSignature, "no signature"},
		{"signed by an unknown key", func(t *testing.T, repo string, l, l2 *artifact.Local) {
			pushSigned(t, c, repo+":1", l, other)
		}, v, signature.ErrUnknownKey, "signed by key " + other.KeyID()[:16]},
		{"signature over other bytes", func(t *testing.T, repo string, l, l2 *artifact.Local) {
			d := pushSigned(t, c, repo+":1", l, nil)
			h, _ := v1.NewHash(d.DigestStr())
			p, _ := signature.NewPayload(d.Context().Name(), h)
			sig, _ := s.Sign(append(p, ' '))
			writeSignatures(t, d, p, base64.StdEncoding.EncodeToString(sig))
		}, v, signature.ErrInvalidSignature, "does not verify with a trusted key"},
		{"signature of another release", func(t *testing.T, repo string, l, l2 *artifact.Local) {
			d := pushSigned(t, c, repo+":1", l, nil)
			d2 := pushSigned(t, c, repo+":2", l2, nil)
			h2, _ := v1.NewHash(d2.DigestStr())
			p, _ := signature.NewPayload(d.Context().Name(), h2)
			sig, _ := s.Sign(p)
			writeSignatures(t, d, p, base64.StdEncoding.EncodeToString(sig))
		}, v, signature.ErrInvalidSignature, "valid signature of another manifest"},
		{"garbled signature", func(t *testing.T, repo string, l, l2 *artifact.Local) {
			d := pushSigned(t, c, repo+":1", l, nil)
			h, _ := v1.NewHash(d.DigestStr())
			p, _ := signature.NewPayload(d.Context().Name(), h)
			writeSignatures(t, d, p, "not base64!")
		}, v, signature.ErrInvalidSignature, "not base64"},
		{"tampered signature payload", func(t *testing.T, repo string, l, l2 *artifact.Local) {
			d := pushSigned(t, c, repo+":1", l, s)
			h, _ := v1.NewHash(d.DigestStr())
			img, err := remote.Image(d.Context().Tag(signature.Tag(h)))
			if err != nil {
				t.Fatal(err)
			}
			m, _ := img.Manifest()
			flipByte(t, reg.BlobPath(m.Layers[0].Digest.String()), 20)
		}, v, nil, "signature layer"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := reg.Host + "/case" + string(rune('a'+i))
			_, l := release(t, artifacttest.Spec{Version: "5.0.0", SlotSize: 1 << 20, Seed: uint64(100 + 2*i)})
			_, l2 := release(t, artifacttest.Spec{Version: "5.0.1", SlotSize: 1 << 20, Seed: uint64(101 + 2*i)})
			tt.setup(t, repo, l, l2)
			target := t.TempDir()
			old := filepath.Join(target, "debvisor.raw")
			if err := os.WriteFile(old, []byte("the image installed before"), 0o644); err != nil {
				t.Fatal(err)
			}
			before := listing(t, target)
			err := pull(t, c, repo+":1", tt.v, target)
			t.Logf("error: %v", err)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("got %v, want an error wrapping %v containing %q", err, tt.is, tt.want)
			}
			if after := listing(t, target); !slices.Equal(before, after) {
				t.Fatalf("a failed pull changed the target:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// pull is what `debvisor-image pull` does: open (verify), then pull all.
func pull(t *testing.T, c *registry.Client, r string, v *signature.Verifier, dir string) error {
	t.Helper()
	rel, err := c.Open(ctx(t), ref(t, c, r), v)
	if err != nil {
		return err
	}
	_, err = rel.PullToDir(ctx(t), dir, artifact.Slot, artifact.Disk)
	return err
}

// TestUnreachableRegistry: nothing listens; the error names the registry
// and comes at once (a refused connection is not retried).
func TestUnreachableRegistry(t *testing.T) {
	addr := registrytest.FreeAddr(t)
	c := client(t, registry.WithRetry(4, time.Second))
	_, v := key(t)
	target := t.TempDir()
	start := time.Now()
	err := pull(t, c, addr+"/debvisor/os:1", v, target)
	t.Logf("error: %v", err)
	if err == nil || !strings.Contains(err.Error(), "registry "+addr+" unreachable") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("failing took %s: refused connections were retried", d)
	}
	if got := listing(t, target); len(got) != 0 {
		t.Fatalf("target has %v", got)
	}
	_, l := release(t, artifacttest.Spec{SlotSize: 4096})
	if _, err := c.Push(ctx(t), ref(t, c, addr+"/debvisor/os:1"), l.Index()); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("push: %v", err)
	}
}
