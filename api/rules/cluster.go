package rules

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Join tokens have kubeadm's shape: a public id and a secret, both
// lower-case letters and digits, "abcdef.0123456789abcdef". The id names the
// token in listings and logs; only the agent's hash of the secret is stored.
const (
	JoinTokenIDLen     = 6
	JoinTokenSecretLen = 16
	// JoinTokenForm is the shape in words, for error messages.
	JoinTokenForm = "abcdef.0123456789abcdef: 6 and 16 characters of a-z 0-9 joined by a dot"
	// CACertHashPrefix starts a CA certificate hash; the rest is the hex
	// SHA-256 of the CA's DER SubjectPublicKeyInfo (kubeadm's
	// --discovery-token-ca-cert-hash).
	CACertHashPrefix = "sha256:"
	// DefaultJoinTokenTTL and MaxJoinTokenTTL bound how long a token is valid.
	DefaultJoinTokenTTL = 24 * time.Hour
	MaxJoinTokenTTL     = 30 * 24 * time.Hour
)

// ParseJoinToken splits a join token into its id and secret. The error never
// repeats the secret.
func ParseJoinToken(tok string) (id, secret string, err error) {
	id, secret, ok := strings.Cut(tok, ".")
	if !ok || len(id) != JoinTokenIDLen || len(secret) != JoinTokenSecretLen || !lowerAlnum(id) || !lowerAlnum(secret) {
		return "", "", fmt.Errorf("not a join token (want %s)", JoinTokenForm)
	}
	return id, secret, nil
}

// CheckJoinTokenID validates the public part of a token on its own.
func CheckJoinTokenID(id string) error {
	if len(id) != JoinTokenIDLen || !lowerAlnum(id) {
		return fmt.Errorf("%q is not a join token id (6 characters of a-z 0-9)", id)
	}
	return nil
}

func lowerAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// ParseCACertHash parses "sha256:<64 hex digits>" and returns the digest.
// Upper-case hex is accepted (and normalised by FormatCACertHash).
func ParseCACertHash(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("must not be empty")
	}
	hexPart, ok := strings.CutPrefix(strings.ToLower(s), CACertHashPrefix)
	if !ok {
		return nil, fmt.Errorf("%q does not start with %q (only SHA-256 pins are supported)", s, CACertHashPrefix)
	}
	if len(hexPart) != 64 {
		return nil, fmt.Errorf("%q: want 64 hex digits after %q, got %d characters", s, CACertHashPrefix, len(hexPart))
	}
	d, err := hex.DecodeString(hexPart)
	if err != nil {
		return nil, fmt.Errorf("%q: not hex", s)
	}
	return d, nil
}

// FormatCACertHash is the canonical text of a SHA-256 pin.
func FormatCACertHash(digest []byte) string {
	return CACertHashPrefix + hex.EncodeToString(digest)
}

// CheckJoinTokenTTL validates a token lifetime (0 means the default).
func CheckJoinTokenTTL(d time.Duration) error {
	if d < 0 || d > MaxJoinTokenTTL {
		return fmt.Errorf("%s is outside (0, %s]", d, MaxJoinTokenTTL)
	}
	return nil
}
