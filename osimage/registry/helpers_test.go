package registry_test

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"

	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
	"github.com/debvisor/debvisor/osimage/registry"
	"github.com/debvisor/debvisor/osimage/registry/registrytest"
	"github.com/debvisor/debvisor/osimage/signature"
)

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return c
}

// inProcess starts go-containerregistry's registry behind a counter and
// optional faults.
func inProcess(t *testing.T, faults ...*registrytest.Fault) (string, *registrytest.Counter) {
	t.Helper()
	c := &registrytest.Counter{}
	h := c.Wrap(ggcrregistry.New(ggcrregistry.WithBlobHandler(ggcrregistry.NewDiskBlobHandler(t.TempDir())),
		ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	if len(faults) > 0 {
		h = registrytest.Faulty(h, faults...)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), c
}

func client(t *testing.T, opts ...registry.Option) *registry.Client {
	t.Helper()
	c, err := registry.New(append([]registry.Option{registry.WithInsecureHTTP(true), registry.WithRetry(4, 10*time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ref(t *testing.T, c *registry.Client, s string) name.Reference {
	t.Helper()
	r, err := c.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func key(t *testing.T) (*signature.Signer, *signature.Verifier) {
	t.Helper()
	k, err := signature.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signature.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	v, err := signature.NewVerifier(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func verifier(t *testing.T, keys ...*ecdsa.PublicKey) *signature.Verifier {
	t.Helper()
	v, err := signature.NewVerifier(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// release writes a synthetic build output directory and reads it.
func release(t *testing.T, s artifacttest.Spec) (string, *artifact.Local) {
	t.Helper()
	dir := t.TempDir()
	artifacttest.Write(t, dir, s)
	l, err := artifact.FromDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, l
}

// pushSigned pushes l to r and signs it.
func pushSigned(t *testing.T, c *registry.Client, r string, l *artifact.Local, s *signature.Signer) name.Digest {
	t.Helper()
	res, err := c.Push(ctx(t), ref(t, c, r), l.Index())
	if err != nil {
		t.Fatal(err)
	}
	d := res.Digest
	if s != nil {
		if _, err := c.Sign(ctx(t), d, s); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// listing returns every path under dir with its size and content digest,
// to prove a failed pull changed nothing.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error { // a missing dir lists as empty
		if err != nil || p == dir {
			return nil
		}
		if info.Mode().IsRegular() {
			out = append(out, p+" "+artifacttest.FileDigest(t, p))
		} else {
			out = append(out, p+"/")
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	if da, db := artifacttest.FileDigest(t, a), artifacttest.FileDigest(t, b); da != db {
		t.Fatalf("%s (%s) and %s (%s) differ", a, da, b, db)
	}
}

func registryDistribution(t *testing.T) *registrytest.Distribution {
	t.Helper()
	return registrytest.StartDistribution(t, registrytest.DistributionConfig{})
}

func rewriteManifest(t *testing.T, dir string, m *osimage.Manifest) {
	t.Helper()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, osimage.ManifestFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
