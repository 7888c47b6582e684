// Package signature signs and verifies DebVisor releases the way cosign
// stores key-based signatures, so `cosign verify --key` accepts
// DebVisor's signatures and DebVisor accepts cosign's:
//
//   - the signed object is the release's manifest digest (the image index);
//   - the signed bytes are a "simple signing" payload (the JSON format of
//     containers/image's signatures) naming that digest;
//   - the signature is ECDSA P-256 over the payload's SHA-256, ASN.1 DER,
//     base64 in the layer annotation dev.cosignproject.cosign/signature;
//   - the payload is a layer of an OCI image tagged sha256-<hex>.sig in the
//     release's repository; every signature is one more layer.
//
// The package does no network I/O: it reads and produces
// go-containerregistry images, which osimage/registry fetches and pushes.
package signature

import (
	"encoding/json"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// PayloadType is critical.type of a cosign image signature payload.
const PayloadType = "cosign container image signature"

// MaxPayloadSize bounds what is read of a signature layer. A payload is a
// few hundred bytes; cosign's optional annotations make it larger, never
// this large.
const MaxPayloadSize = 64 << 10

// Payload is the simple-signing document a signature covers.
type Payload struct {
	Critical Critical       `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// Critical is the part of a payload a verifier must check.
type Critical struct {
	Identity Identity `json:"identity"`
	Image    Image    `json:"image"`
	Type     string   `json:"type"`
}

// Identity is the repository the signer meant (informational: a release
// copied to a mirror keeps its signature, as with cosign).
type Identity struct {
	DockerReference string `json:"docker-reference"`
}

// Image names the signed manifest.
type Image struct {
	DockerManifestDigest string `json:"docker-manifest-digest"`
}

// NewPayload renders the payload that signs digest d of repository repo
// (e.g. "registry.example/debvisor/os"), as cosign does.
func NewPayload(repo string, d v1.Hash) ([]byte, error) {
	p := Payload{Critical: Critical{
		Identity: Identity{DockerReference: repo},
		Image:    Image{DockerManifestDigest: d.String()},
		Type:     PayloadType,
	}}
	return json.Marshal(p)
}

// ParsePayload decodes a payload and checks its type and digest syntax.
func ParsePayload(b []byte) (*Payload, error) {
	if len(b) > MaxPayloadSize {
		return nil, fmt.Errorf("signature payload: %d bytes is over the %d-byte limit", len(b), MaxPayloadSize)
	}
	var p Payload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("signature payload: %w", err)
	}
	if p.Critical.Type != PayloadType {
		return nil, fmt.Errorf("signature payload: type %q, want %q", p.Critical.Type, PayloadType)
	}
	d := p.Critical.Image.DockerManifestDigest
	if _, err := v1.NewHash(d); err != nil || !strings.HasPrefix(d, "sha256:") {
		return nil, fmt.Errorf("signature payload: docker-manifest-digest %q is not a sha256 digest", d)
	}
	return &p, nil
}

// Digest returns the signed manifest digest.
func (p *Payload) Digest() v1.Hash {
	h, _ := v1.NewHash(p.Critical.Image.DockerManifestDigest) // checked by ParsePayload
	return h
}
