package registry_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
	"github.com/debvisor/debvisor/osimage/registry/registrytest"
	"github.com/debvisor/debvisor/osimage/signature"
)

// cosignFlags: the loopback registry speaks plain HTTP, and these tests
// run offline, so cosign neither writes to nor checks a transparency log
// (`cosign verify --key` on a key-signed image in a private setting).
var cosignVerifyFlags = []string{"verify", "--allow-http-registry", "--insecure-ignore-tlog=true", "--output", "json"}

func cosignSignFlags(key string) []string {
	return []string{"sign", "--key", key, "--allow-http-registry", "--tlog-upload=false",
		"--new-bundle-format=false", "--use-signing-config=false", "--yes"}
}

// TestInteropDistribution runs the whole cycle against Debian's
// docker-registry with independent clients: skopeo reads what DebVisor
// pushed, cosign accepts DebVisor's signature, DebVisor accepts cosign's
// (made with cosign's own password-protected key), and DebVisor signs
// with that cosign key too.
func TestInteropDistribution(t *testing.T) {
	reg := registryDistribution(t)
	skopeo := registrytest.Tool(t, "skopeo", "skopeo")
	cosign := registrytest.Cosign(t)
	c := client(t)
	s, _ := key(t)
	dir, l := release(t, artifacttest.Spec{Version: "4.2.0"})
	repo := reg.Host + "/debvisor/os"
	d := pushSigned(t, c, repo+":4.2.0", l, s)

	// skopeo: the index by tag, each artifact manifest, the signature tag.
	raw := registrytest.Run(t, ctx(t), nil, skopeo, "inspect", "--tls-verify=false", "--raw", "docker://"+repo+":4.2.0")
	var idx v1.IndexManifest
	if err := json.Unmarshal([]byte(raw), &idx); err != nil {
		t.Fatalf("skopeo inspect --raw: %v\n%s", err, raw)
	}
	if idx.ArtifactType != artifact.ArtifactTypeRelease || idx.Annotations[artifact.AnnotationVersion] != "4.2.0" || len(idx.Manifests) != 2 {
		t.Fatalf("skopeo sees index %s", raw)
	}
	for _, desc := range idx.Manifests {
		mraw := registrytest.Run(t, ctx(t), nil, skopeo, "inspect", "--tls-verify=false", "--raw", "docker://"+repo+"@"+desc.Digest.String())
		var m v1.Manifest
		if err := json.Unmarshal([]byte(mraw), &m); err != nil {
			t.Fatal(err)
		}
		if m.ArtifactType != desc.ArtifactType || len(m.Layers) != 1 || m.Annotations[artifact.AnnotationKernel] != "6.1.0-40-amd64" {
			t.Fatalf("skopeo sees %s manifest %s", desc.ArtifactType, mraw)
		}
	}
	h, _ := v1.NewHash(d.DigestStr())
	sraw := registrytest.Run(t, ctx(t), nil, skopeo, "inspect", "--tls-verify=false", "--raw", "docker://"+repo+":"+signature.Tag(h))
	if !strings.Contains(sraw, signature.MediaTypePayload) || !strings.Contains(sraw, signature.AnnotationSignature) {
		t.Fatalf("skopeo sees signature image %s", sraw)
	}
	// skopeo copies the release (index and both manifests) to a mirror
	// repository. skopeo 1.9 predates OCI 1.1 and rewrites the index
	// without its artifactType fields, so the mirror's digest differs and
	// the signature does not carry over (with --preserve-digests it
	// refuses to copy at all); DebVisor still reads the rewritten index
	// once it is signed again. A skopeo that keeps the index byte for byte
	// keeps the signature valid.
	registrytest.Run(t, ctx(t), nil, skopeo, "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
		"docker://"+repo+"@"+d.DigestStr(), "docker://"+reg.Host+"/mirror/os:4.2.0")
	mirror := ref(t, c, reg.Host+"/mirror/os:4.2.0")
	md, err := c.Resolve(ctx(t), mirror)
	if err != nil {
		t.Fatal(err)
	}
	if md.DigestStr() != d.DigestStr() {
		t.Logf("skopeo rewrote the index: %s -> %s", d.DigestStr(), md.DigestStr())
		if _, err := c.Open(ctx(t), mirror, verifier(t, s.Public())); err == nil || !strings.Contains(err.Error(), "no signature") {
			t.Fatalf("rewritten index opened with the old signature: %v", err)
		}
		if _, err := c.Sign(ctx(t), md, s); err != nil {
			t.Fatal(err)
		}
	}
	mrel, err := c.Open(ctx(t), mirror, verifier(t, s.Public()))
	if err != nil {
		t.Fatalf("open the mirror: %v", err)
	}
	if _, err := mrel.PullToDir(ctx(t), t.TempDir(), artifact.Slot, artifact.Disk); err != nil {
		t.Fatalf("pull from the mirror: %v", err)
	}

	// cosign verifies DebVisor's signature with DebVisor's public key.
	work := t.TempDir()
	pub, err := signature.MarshalPublicKey(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(work, "debvisor.pub")
	if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	out := registrytest.Run(t, ctx(t), nil, cosign, append(cosignVerifyFlags, "--key", pubPath, d.String())...)
	t.Logf("cosign verify: %s", out)
	if !strings.Contains(out, d.DigestStr()) {
		t.Fatalf("cosign verify printed %s", out)
	}

	// cosign's key pair, password protected, as `cosign generate-key-pair` makes it.
	env := []string{"COSIGN_PASSWORD=correct horse"}
	registrytest.Run(t, ctx(t), env, "sh", "-c", "cd "+work+" && "+cosign+" generate-key-pair")
	cosignPub, err := os.ReadFile(filepath.Join(work, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	cpk, err := signature.ParsePublicKey(cosignPub)
	if err != nil {
		t.Fatalf("DebVisor reads cosign.pub: %v", err)
	}
	// Before cosign signs, the release is not signed by that key.
	if _, err := c.Verify(ctx(t), d, verifier(t, cpk)); err == nil {
		t.Fatal("verified with cosign's key before cosign signed")
	}
	registrytest.Run(t, ctx(t), env, cosign, append(cosignSignFlags(filepath.Join(work, "cosign.key")), d.String())...)
	got, err := c.Verify(ctx(t), d, verifier(t, cpk))
	if err != nil {
		t.Fatalf("DebVisor does not accept cosign's signature: %v", err)
	}
	if got.KeyID != signature.KeyID(cpk) || got.Payload.Digest() != h {
		t.Fatalf("verified %+v", got)
	}
	// DebVisor's signature is still there beside cosign's.
	if _, err := c.Verify(ctx(t), d, verifier(t, s.Public())); err != nil {
		t.Fatalf("cosign's signing dropped DebVisor's signature: %v", err)
	}
	// Open and pull through the cosign signature alone.
	rel, err := c.Open(ctx(t), ref(t, c, repo+":4.2.0"), verifier(t, cpk))
	if err != nil {
		t.Fatal(err)
	}
	pulled := t.TempDir()
	if _, err := rel.PullToDir(ctx(t), pulled, artifact.Slot); err != nil {
		t.Fatal(err)
	}
	raw2, _ := os.ReadFile(filepath.Join(dir, "debvisor.raw"))
	slot, _ := os.ReadFile(filepath.Join(pulled, artifact.SlotFile))
	a := l.Build.Partitions[1]
	if string(raw2[a.Start:a.Start+l.Build.Slot.Size]) != string(slot) {
		t.Fatal("pulled slot differs from slot A of the build")
	}

	// DebVisor signs a second release with cosign's encrypted key; cosign
	// verifies it.
	ck, err := os.ReadFile(filepath.Join(work, "cosign.key"))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := signature.ParsePrivateKey(ck, func() ([]byte, error) { return []byte("correct horse"), nil })
	if err != nil {
		t.Fatalf("DebVisor reads cosign.key: %v", err)
	}
	if _, err := signature.ParsePrivateKey(ck, func() ([]byte, error) { return []byte("wrong"), nil }); err == nil || !strings.Contains(err.Error(), "wrong password") {
		t.Fatalf("wrong password: %v", err)
	}
	cs, err := signature.NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	_, l2 := release(t, artifacttest.Spec{Version: "4.2.1", Seed: 7})
	d2 := pushSigned(t, c, repo+":4.2.1", l2, cs)
	registrytest.Run(t, ctx(t), nil, cosign, append(cosignVerifyFlags, "--key", filepath.Join(work, "cosign.pub"), d2.String())...)
	// ... and refuses it with DebVisor's key.
	if _, err := registrytest.RunErr(ctx(t), nil, cosign, append(cosignVerifyFlags, "--key", pubPath, d2.String())...); err == nil {
		t.Fatal("cosign verified a release with a key that did not sign it")
	}
}
