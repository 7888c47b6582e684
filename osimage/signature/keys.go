package signature

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// PEM block types.
const (
	// PEMPrivateKey is DebVisor's private key: PKCS #8, unencrypted (keep
	// the file 0600, or in a secret store). `openssl genpkey -algorithm EC
	// -pkeyopt ec_paramgen_curve:P-256` writes the same format.
	PEMPrivateKey = "PRIVATE KEY"
	// PEMECPrivateKey is SEC 1 (`openssl ecparam -genkey`), also accepted.
	PEMECPrivateKey = "EC PRIVATE KEY"
	// PEMPublicKey is PKIX, as `cosign generate-key-pair` writes cosign.pub
	// and as DebVisor writes its public keys.
	PEMPublicKey = "PUBLIC KEY"
	// cosign's password-protected private keys (`cosign generate-key-pair`).
	pemSigstorePrivateKey = "ENCRYPTED SIGSTORE PRIVATE KEY"
	pemCosignPrivateKey   = "ENCRYPTED COSIGN PRIVATE KEY"
)

// ErrPasswordRequired is returned for an encrypted key without a password.
var ErrPasswordRequired = errors.New("the private key is encrypted: a password is required")

// GenerateKey makes an ECDSA P-256 key, the only kind DebVisor signs with
// (cosign's default too).
func GenerateKey(r io.Reader) (*ecdsa.PrivateKey, error) {
	if r == nil {
		r = rand.Reader
	}
	return ecdsa.GenerateKey(elliptic.P256(), r)
}

// MarshalPrivateKey renders k as a PKCS #8 PEM block.
func MarshalPrivateKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: PEMPrivateKey, Bytes: der}), nil
}

// MarshalPublicKey renders k as a PKIX PEM block (what cosign reads with
// --key).
func MarshalPublicKey(k *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: PEMPublicKey, Bytes: der}), nil
}

// ParsePublicKey reads a PKIX PEM public key; it must be ECDSA P-256.
func ParsePublicKey(b []byte) (*ecdsa.PublicKey, error) {
	blk, rest := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("public key: no PEM block")
	}
	if blk.Type != PEMPublicKey {
		return nil, fmt.Errorf("public key: PEM block %q, want %q", blk.Type, PEMPublicKey)
	}
	if len(rest) > 0 {
		if more, _ := pem.Decode(rest); more != nil {
			return nil, errors.New("public key: more than one PEM block (give each key on its own)")
		}
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return p256Public(k)
}

func p256Public(k any) (*ecdsa.PublicKey, error) {
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key: %T is not ECDSA (DebVisor verifies ECDSA P-256 signatures)", k)
	}
	if ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("public key: curve %s, want P-256", ek.Curve.Params().Name)
	}
	return ek, nil
}

// ParsePrivateKey reads a private key: DebVisor's PKCS #8 PEM, SEC 1 PEM,
// or cosign's encrypted format (`cosign generate-key-pair`'s cosign.key),
// for which password is called (it may be nil for unencrypted keys).
func ParsePrivateKey(b []byte, password func() ([]byte, error)) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("private key: no PEM block")
	}
	var k any
	var err error
	switch blk.Type {
	case PEMPrivateKey:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case PEMECPrivateKey:
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case pemSigstorePrivateKey, pemCosignPrivateKey:
		if password == nil {
			return nil, ErrPasswordRequired
		}
		pw, perr := password()
		if perr != nil {
			return nil, fmt.Errorf("private key password: %w", perr)
		}
		der, derr := decryptSigstore(blk.Bytes, pw)
		if derr != nil {
			return nil, fmt.Errorf("private key: %w", derr)
		}
		k, err = x509.ParsePKCS8PrivateKey(der)
	default:
		return nil, fmt.Errorf("private key: PEM block %q is not a private key DebVisor reads (%q, %q or cosign's encrypted key)", blk.Type, PEMPrivateKey, PEMECPrivateKey)
	}
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key: %T is not ECDSA (DebVisor signs with ECDSA P-256)", k)
	}
	if _, err := p256Public(&ek.PublicKey); err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	return ek, nil
}

// sigstoreBox is cosign's encrypted key body: scrypt derives a
// nacl/secretbox key from the password; the plaintext is PKCS #8 DER.
type sigstoreBox struct {
	KDF struct {
		Name   string `json:"name"`
		Params struct {
			N int `json:"N"`
			R int `json:"r"`
			P int `json:"p"`
		} `json:"params"`
		Salt []byte `json:"salt"`
	} `json:"kdf"`
	Cipher struct {
		Name  string `json:"name"`
		Nonce []byte `json:"nonce"`
	} `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

func decryptSigstore(body, password []byte) ([]byte, error) {
	var box sigstoreBox
	if err := json.Unmarshal(body, &box); err != nil {
		return nil, fmt.Errorf("encrypted key: %w", err)
	}
	if box.KDF.Name != "scrypt" || box.Cipher.Name != "nacl/secretbox" {
		return nil, fmt.Errorf("encrypted key: kdf %q, cipher %q: want scrypt and nacl/secretbox", box.KDF.Name, box.Cipher.Name)
	}
	p := box.KDF.Params
	// The three parameter sets cosign's library writes; anything else
	// could make scrypt take unbounded memory.
	switch {
	case p.R == 8 && p.P == 1 && (p.N == 1<<15 || p.N == 1<<16 || p.N == 1<<17):
	default:
		return nil, fmt.Errorf("encrypted key: unsupported scrypt parameters N=%d r=%d p=%d", p.N, p.R, p.P)
	}
	if len(box.Cipher.Nonce) != 24 {
		return nil, fmt.Errorf("encrypted key: nonce is %d bytes, want 24", len(box.Cipher.Nonce))
	}
	key, err := scrypt.Key(password, box.KDF.Salt, p.N, p.R, p.P, 32)
	if err != nil {
		return nil, fmt.Errorf("encrypted key: %w", err)
	}
	var k [32]byte
	var n [24]byte
	copy(k[:], key)
	copy(n[:], box.Cipher.Nonce)
	out, ok := secretbox.Open(nil, box.Ciphertext, &n, &k)
	if !ok {
		return nil, errors.New("encrypted key: wrong password (or a damaged key file)")
	}
	return out, nil
}

// KeyID names a public key: sha256 of its PKIX DER, hex. It is what
// errors and results show, and what DebVisor records next to each
// signature it makes.
func KeyID(k crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "unknown"
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func shortID(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}

// LoadVerifier reads PEM public keys (cosign.pub format) from files and
// trusts them all.
func LoadVerifier(files ...string) (*Verifier, error) {
	keys := make([]*ecdsa.PublicKey, 0, len(files))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		k, err := ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		keys = append(keys, k)
	}
	return NewVerifier(keys...)
}
