package signature

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The signature image's layout, as cosign writes it.
const (
	// MediaTypePayload is the media type of a signature layer.
	MediaTypePayload = "application/vnd.dev.cosign.simplesigning.v1+json"
	// AnnotationSignature holds the base64 signature on the layer.
	AnnotationSignature = "dev.cosignproject.cosign/signature"
	// AnnotationKeyID is DebVisor's hint of which key signed (KeyID of
	// the public key). It is never trusted, only used to say "signed by
	// a key you did not give" instead of "does not verify".
	AnnotationKeyID = "dev.debvisor.signature.key-id"
	// MaxSignatures bounds the layers of a signature image read (as
	// cosign does).
	MaxSignatures = 1000
)

// Errors a verification can end with; each error returned wraps one.
var (
	// ErrNoSignature: there is no signature for the digest at all.
	ErrNoSignature = errors.New("no signature")
	// ErrUnknownKey: there are signatures, but made by keys the caller
	// did not trust (known only from DebVisor's key hint).
	ErrUnknownKey = errors.New("signed only by untrusted keys")
	// ErrInvalidSignature: there are signatures, and none verifies with a
	// trusted key for this digest (tampered, or made by another key).
	ErrInvalidSignature = errors.New("no valid signature")
)

// Tag is the tag the signatures of digest d live under: sha256-<hex>.sig.
func Tag(d v1.Hash) string {
	return d.Algorithm + "-" + d.Hex + ".sig"
}

// Signer signs payloads with one private key.
type Signer struct {
	key  *ecdsa.PrivateKey
	id   string
	rand io.Reader
}

// NewSigner returns a signer for k (ECDSA P-256).
func NewSigner(k *ecdsa.PrivateKey) (*Signer, error) {
	if _, err := p256Public(&k.PublicKey); err != nil {
		return nil, err
	}
	return &Signer{key: k, id: KeyID(&k.PublicKey), rand: rand.Reader}, nil
}

// KeyID is the KeyID of the signer's public key.
func (s *Signer) KeyID() string { return s.id }

// Public returns the signer's public key.
func (s *Signer) Public() *ecdsa.PublicKey { return &s.key.PublicKey }

// Sign returns the ASN.1 ECDSA signature of sha256(payload).
func (s *Signer) Sign(payload []byte) ([]byte, error) {
	sum := sha256.Sum256(payload)
	return ecdsa.SignASN1(s.rand, s.key, sum[:])
}

// Empty is the signature image before any signature: an OCI manifest
// with an OCI image config, as cosign starts one.
func Empty() v1.Image {
	return mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
}

// Add returns base (the existing signature image, or Empty()) with a
// signature of digest d of repository repo by s appended, and true; or
// base and false when base already holds a signature of d that verifies
// with s's key (signing twice adds nothing).
func Add(base v1.Image, s *Signer, repo string, d v1.Hash) (v1.Image, bool, error) {
	if base == nil {
		base = Empty()
	}
	if v, err := NewVerifier(s.Public()); err == nil {
		if _, err := v.Verify(base, d); err == nil {
			return base, false, nil
		}
	}
	payload, err := NewPayload(repo, d)
	if err != nil {
		return nil, false, err
	}
	sig, err := s.Sign(payload)
	if err != nil {
		return nil, false, fmt.Errorf("sign: %w", err)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: static.NewLayer(payload, MediaTypePayload),
		Annotations: map[string]string{
			AnnotationSignature: base64.StdEncoding.EncodeToString(sig),
			AnnotationKeyID:     s.id,
		},
	})
	if err != nil {
		return nil, false, fmt.Errorf("signature image: %w", err)
	}
	return img, true, nil
}

// Verifier checks signatures against a set of trusted public keys.
type Verifier struct {
	keys []*ecdsa.PublicKey
	ids  []string
}

// NewVerifier trusts keys (at least one; ECDSA P-256).
func NewVerifier(keys ...*ecdsa.PublicKey) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("no public key to verify with")
	}
	v := &Verifier{}
	for _, k := range keys {
		if _, err := p256Public(k); err != nil {
			return nil, err
		}
		v.keys = append(v.keys, k)
		v.ids = append(v.ids, KeyID(k))
	}
	return v, nil
}

// KeyIDs lists the trusted keys' ids.
func (v *Verifier) KeyIDs() []string { return slices.Clone(v.ids) }

// Verified is an accepted signature.
type Verified struct {
	// KeyID is the trusted key that verified it.
	KeyID string
	// Payload is the signed document.
	Payload *Payload
	// Layer is the signature layer's digest in the signature image.
	Layer v1.Hash
}

// Verify looks through sigs (the image under Tag(d); nil when the tag does
// not exist) for a signature of d made by a trusted key. The first one
// found is returned; with none, the error wraps ErrNoSignature,
// ErrUnknownKey or ErrInvalidSignature and says why each candidate failed.
func (v *Verifier) Verify(sigs v1.Image, d v1.Hash) (*Verified, error) {
	if sigs == nil {
		return nil, fmt.Errorf("%w (no %s tag)", ErrNoSignature, Tag(d))
	}
	m, err := sigs.Manifest()
	if err != nil {
		return nil, fmt.Errorf("signature image: %w", err)
	}
	if len(m.Layers) > MaxSignatures {
		return nil, fmt.Errorf("signature image has %d layers, more than the %d read", len(m.Layers), MaxSignatures)
	}
	var reasons []string
	var hints []string
	candidates := 0
	for i, desc := range m.Layers {
		if desc.MediaType != MediaTypePayload {
			continue
		}
		candidates++
		ok, reason, err := v.check(sigs, desc, d)
		if err != nil {
			return nil, err
		}
		if ok != nil {
			return ok, nil
		}
		if id := desc.Annotations[AnnotationKeyID]; id != "" && !slices.Contains(v.ids, id) {
			hints = append(hints, shortID(id))
		}
		reasons = append(reasons, fmt.Sprintf("signature %d: %s", i+1, reason))
	}
	if candidates == 0 {
		return nil, fmt.Errorf("%w (%s holds no %s layer)", ErrNoSignature, Tag(d), MediaTypePayload)
	}
	trusted := make([]string, len(v.ids))
	for i, id := range v.ids {
		trusted[i] = shortID(id)
	}
	if len(hints) == candidates {
		return nil, fmt.Errorf("%w: signed by key %s, trusted: %s", ErrUnknownKey, strings.Join(hints, ", "), strings.Join(trusted, ", "))
	}
	return nil, fmt.Errorf("%w for key %s among %d signature(s): %s", ErrInvalidSignature, strings.Join(trusted, ", "), candidates, strings.Join(reasons, "; "))
}

// check verifies one signature layer. A non-nil error is a failure to
// read the signature image (network, registry), not a bad signature.
func (v *Verifier) check(sigs v1.Image, desc v1.Descriptor, d v1.Hash) (*Verified, string, error) {
	if desc.Size > MaxPayloadSize {
		return nil, fmt.Sprintf("payload of %d bytes is over the %d-byte limit", desc.Size, MaxPayloadSize), nil
	}
	b64, ok := desc.Annotations[AnnotationSignature]
	if !ok {
		return nil, "no " + AnnotationSignature + " annotation", nil
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, "signature annotation is not base64", nil
	}
	l, err := sigs.LayerByDigest(desc.Digest)
	if err != nil {
		return nil, "", fmt.Errorf("signature layer %s: %w", desc.Digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, "", fmt.Errorf("signature layer %s: %w", desc.Digest, err)
	}
	defer rc.Close()
	payload, err := io.ReadAll(io.LimitReader(rc, MaxPayloadSize+1))
	if err != nil {
		// go-containerregistry checks the digest as it reads: a damaged
		// payload fails here.
		return nil, "", fmt.Errorf("signature layer %s unreadable or damaged: %w", desc.Digest, err)
	}
	if sum := sha256.Sum256(payload); desc.Digest.Algorithm != "sha256" || fmt.Sprintf("%x", sum) != desc.Digest.Hex {
		return nil, "payload does not match its layer digest (tampered)", nil
	}
	sum := sha256.Sum256(payload)
	for i, k := range v.keys {
		if !ecdsa.VerifyASN1(k, sum[:], sig) {
			continue
		}
		p, err := ParsePayload(payload)
		if err != nil {
			return nil, err.Error(), nil
		}
		if p.Digest() != d {
			return nil, fmt.Sprintf("valid signature of another manifest (%s)", p.Digest()), nil
		}
		return &Verified{KeyID: v.ids[i], Payload: p, Layer: desc.Digest}, "", nil
	}
	return nil, "does not verify with a trusted key (tampered, or made by another key)", nil
}
