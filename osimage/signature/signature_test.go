package signature_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/debvisor/debvisor/osimage/signature"
)

func hash(s string) v1.Hash {
	sum := sha256.Sum256([]byte(s))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func newSigner(t *testing.T) *signature.Signer {
	t.Helper()
	k, err := signature.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signature.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func verifier(t *testing.T, s ...*signature.Signer) *signature.Verifier {
	t.Helper()
	var keys []*ecdsa.PublicKey
	for _, x := range s {
		keys = append(keys, x.Public())
	}
	v, err := signature.NewVerifier(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestKeyFormats(t *testing.T) {
	k, err := signature.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := signature.MarshalPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(priv), "-----BEGIN PRIVATE KEY-----\n") {
		t.Fatalf("private key is not PKCS #8 PEM:\n%s", priv)
	}
	back, err := signature.ParsePrivateKey(priv, nil)
	if err != nil || !back.Equal(k) {
		t.Fatalf("PKCS #8 round trip: %v", err)
	}
	sec1, _ := x509.MarshalECPrivateKey(k)
	if back, err := signature.ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), nil); err != nil || !back.Equal(k) {
		t.Fatalf("SEC 1: %v", err)
	}
	pub, err := signature.MarshalPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(pub), "-----BEGIN PUBLIC KEY-----\n") {
		t.Fatalf("public key is not PKIX PEM:\n%s", pub)
	}
	if p, err := signature.ParsePublicKey(pub); err != nil || !p.Equal(&k.PublicKey) {
		t.Fatalf("public round trip: %v", err)
	}
	if id := signature.KeyID(&k.PublicKey); len(id) != 64 {
		t.Fatalf("key id %q", id)
	}
}

func TestKeyRefusals(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	der := func(k any) []byte { b, _ := x509.MarshalPKCS8PrivateKey(k); return b }
	pubDer := func(k any) []byte { b, _ := x509.MarshalPKIXPublicKey(k); return b }
	block := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }
	good, _ := signature.GenerateKey(nil)
	goodPub, _ := signature.MarshalPublicKey(&good.PublicKey)

	privs := []struct {
		name string
		in   []byte
		want string
	}{
		{"RSA", block("PRIVATE KEY", der(rsaKey)), "not ECDSA"},
		{"Ed25519", block("PRIVATE KEY", der(edKey)), "not ECDSA"},
		{"P-384", block("PRIVATE KEY", der(p384)), "want P-256"},
		{"not PEM", []byte("hello"), "no PEM block"},
		{"certificate", block("CERTIFICATE", []byte{1}), "not a private key"},
		{"encrypted without password", block("ENCRYPTED SIGSTORE PRIVATE KEY", []byte("{}")), "password is required"},
		{"garbage DER", block("PRIVATE KEY", []byte{1, 2, 3}), "private key"},
	}
	for _, tt := range privs {
		t.Run("private "+tt.name, func(t *testing.T) {
			if _, err := signature.ParsePrivateKey(tt.in, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
	pubs := []struct {
		name string
		in   []byte
		want string
	}{
		{"RSA", block("PUBLIC KEY", pubDer(&rsaKey.PublicKey)), "not ECDSA"},
		{"P-384", block("PUBLIC KEY", pubDer(&p384.PublicKey)), "want P-256"},
		{"private key given", block("PRIVATE KEY", der(good)), "want \"PUBLIC KEY\""},
		{"two keys", append(append([]byte{}, goodPub...), goodPub...), "more than one PEM block"},
		{"empty", nil, "no PEM block"},
	}
	for _, tt := range pubs {
		t.Run("public "+tt.name, func(t *testing.T) {
			if _, err := signature.ParsePublicKey(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := signature.NewVerifier(); err == nil {
		t.Fatal("verifier without keys")
	}
}

// TestSignatureImageLayout: what Add makes is what cosign makes: an OCI
// manifest with an OCI config, one simple-signing layer per signature
// with the base64 signature annotation, and the payload naming the digest.
func TestSignatureImageLayout(t *testing.T) {
	s := newSigner(t)
	d := hash("release")
	img, added, err := signature.Add(nil, s, "registry.example/debvisor/os", d)
	if err != nil || !added {
		t.Fatal(err, added)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 {
		t.Fatalf("manifest %+v", m)
	}
	l := m.Layers[0]
	if l.MediaType != signature.MediaTypePayload || l.Annotations[signature.AnnotationKeyID] != s.KeyID() {
		t.Fatalf("layer %+v", l)
	}
	layer, _ := img.LayerByDigest(l.Digest)
	rc, _ := layer.Compressed()
	var p signature.Payload
	if err := json.NewDecoder(rc).Decode(&p); err != nil {
		t.Fatal(err)
	}
	if p.Critical.Type != "cosign container image signature" || p.Critical.Image.DockerManifestDigest != d.String() ||
		p.Critical.Identity.DockerReference != "registry.example/debvisor/os" {
		t.Fatalf("payload %+v", p)
	}
	sig, err := base64.StdEncoding.DecodeString(l.Annotations[signature.AnnotationSignature])
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := signature.NewPayload("registry.example/debvisor/os", d)
	sum := sha256.Sum256(raw)
	if !ecdsa.VerifyASN1(s.Public(), sum[:], sig) {
		t.Fatal("annotation is not an ECDSA signature of sha256(payload)")
	}
	cfg, err := img.ConfigFile()
	if err != nil || len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != l.Digest {
		t.Fatalf("config diff_ids %v (%v): cosign appends to this config", cfg.RootFS.DiffIDs, err)
	}
}

func TestVerify(t *testing.T) {
	a, b, c := newSigner(t), newSigner(t), newSigner(t)
	d := hash("release")
	one, _, err := signature.Add(nil, a, "r/x", d)
	if err != nil {
		t.Fatal(err)
	}
	if again, added, err := signature.Add(one, a, "r/x", d); err != nil || added || again != one {
		t.Fatalf("signing twice with one key: added %v, %v", added, err)
	}
	two, added, err := signature.Add(one, b, "r/x", d)
	if err != nil || !added {
		t.Fatal(err)
	}
	if m, _ := two.Manifest(); len(m.Layers) != 2 {
		t.Fatalf("two signers, %d layers", len(m.Layers))
	}
	for _, s := range []*signature.Signer{a, b} {
		got, err := verifier(t, s).Verify(two, d)
		if err != nil || got.KeyID != s.KeyID() || got.Payload.Digest() != d {
			t.Fatalf("verify with one of two signers: %+v, %v", got, err)
		}
	}
	if got, err := verifier(t, c, b).Verify(two, d); err != nil || got.KeyID != b.KeyID() {
		t.Fatalf("any trusted key verifies: %+v, %v", got, err)
	}

	// A signature made without DebVisor's key hint (as cosign makes them).
	payload, _ := signature.NewPayload("r/x", d)
	sig, _ := c.Sign(payload)
	noHint, _ := mutate.Append(signature.Empty(), mutate.Addendum{
		Layer:       static.NewLayer(payload, signature.MediaTypePayload),
		Annotations: map[string]string{signature.AnnotationSignature: base64.StdEncoding.EncodeToString(sig)},
	})
	if _, err := verifier(t, c).Verify(noHint, d); err != nil {
		t.Fatalf("signature without key hint: %v", err)
	}
	// Only other layer types.
	junk, _ := mutate.Append(signature.Empty(), mutate.Addendum{Layer: static.NewLayer([]byte("x"), types.OCILayer)})

	tests := []struct {
		name string
		img  v1.Image
		v    *signature.Verifier
		d    v1.Hash
		is   error
		want string
	}{
		{"no tag", nil, verifier(t, a), d, signature.ErrNoSignature, "no sha256-"},
		{"no signature layers", junk, verifier(t, a), d, signature.ErrNoSignature, "holds no"},
		{"untrusted key, hinted", two, verifier(t, c), d, signature.ErrUnknownKey, "signed by key " + a.KeyID()[:16] + ", " + b.KeyID()[:16]},
		{"untrusted key, no hint", noHint, verifier(t, a), d, signature.ErrInvalidSignature, "does not verify with a trusted key"},
		{"other digest", one, verifier(t, a), hash("other"), signature.ErrInvalidSignature, "valid signature of another manifest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.v.Verify(tt.img, tt.d)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %v containing %q", err, tt.is, tt.want)
			}
		})
	}
}

func TestParsePayload(t *testing.T) {
	good, _ := signature.NewPayload("r/x", hash("a"))
	if p, err := signature.ParsePayload(good); err != nil || p.Digest() != hash("a") {
		t.Fatalf("%+v %v", p, err)
	}
	tests := []struct {
		name, in, want string
	}{
		{"other type", `{"critical":{"type":"atomic container signature","image":{"docker-manifest-digest":"sha256:` + strings.Repeat("a", 64) + `"}}}`, "type"},
		{"bad digest", `{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":"sha256:abc"}}}`, "not a sha256 digest"},
		{"sha512", `{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":"sha512:` + strings.Repeat("a", 128) + `"}}}`, "not a sha256 digest"},
		{"not json", `{`, "signature payload"},
		{"huge", `"` + strings.Repeat("a", signature.MaxPayloadSize) + `"`, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := signature.ParsePayload([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func FuzzParsePayload(f *testing.F) {
	good, _ := signature.NewPayload("registry.example/debvisor/os", hash("a"))
	f.Add(good)
	f.Add([]byte(`{"critical":{"identity":{"docker-reference":""},"image":{"docker-manifest-digest":"sha256:"},"type":"cosign container image signature"},"optional":{"a":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := signature.ParsePayload(b)
		if err != nil {
			return
		}
		back, err := signature.NewPayload(p.Critical.Identity.DockerReference, p.Digest())
		if err != nil {
			t.Fatal(err)
		}
		q, err := signature.ParsePayload(back)
		if err != nil || q.Digest() != p.Digest() || q.Critical.Identity != p.Critical.Identity {
			t.Fatalf("re-rendered payload %s: %+v, %v", back, q, err)
		}
	})
}

// FuzzVerify: whatever payload and signature annotation a registry
// serves, Verify never panics and accepts only a real signature of the
// requested digest by the trusted key.
func FuzzVerify(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := signature.NewSigner(k)
	d := hash("release")
	good, _ := signature.NewPayload("r/x", d)
	sig, _ := s.Sign(good)
	f.Add(good, base64.StdEncoding.EncodeToString(sig))
	f.Add([]byte("{}"), "")
	v, _ := signature.NewVerifier(&k.PublicKey)
	f.Fuzz(func(t *testing.T, payload []byte, sig64 string) {
		img, err := mutate.Append(signature.Empty(), mutate.Addendum{
			Layer:       static.NewLayer(payload, signature.MediaTypePayload),
			Annotations: map[string]string{signature.AnnotationSignature: sig64},
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.Verify(img, d)
		if err != nil {
			return
		}
		raw, _ := base64.StdEncoding.DecodeString(sig64)
		sum := sha256.Sum256(payload)
		if got.Payload.Digest() != d || !ecdsa.VerifyASN1(&k.PublicKey, sum[:], raw) {
			t.Fatalf("accepted payload %q with signature %q", payload, sig64)
		}
	})
}
