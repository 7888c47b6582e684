package cluster

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

// tokenAlphabet is what token ids and secrets are made of.
const tokenAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// maxDescription bounds a token's free-text description.
const maxDescription = 200

// pruneAfter is how long an expired token stays listed before it is dropped.
const pruneAfter = 24 * time.Hour

// Token describes a join token; the secret itself is never kept.
type Token struct {
	ID          string
	Description string
	Created     time.Time
	Expires     time.Time
	Uses        int
}

// Expired reports whether the token is past its expiry at now.
func (t Token) Expired(now time.Time) bool { return !now.Before(t.Expires) }

type tokenRecord struct {
	ID string `json:"id"`
	// SecretSHA256 is the hex SHA-256 of the secret part. The secret has
	// about 82 bits of entropy, so a plain hash is enough: there is nothing
	// to guess it from.
	SecretSHA256 string    `json:"secret_sha256"`
	Description  string    `json:"description,omitempty"`
	Created      time.Time `json:"created"`
	Expires      time.Time `json:"expires"`
	Uses         int       `json:"uses"`
}

type tokenFile struct {
	Tokens []tokenRecord `json:"tokens"`
}

// TokenStore keeps join tokens, hashed, in one file on a node that holds
// the CA key. Every change is written before it is reported done.
type TokenStore struct {
	path string
	now  func() time.Time

	mu     sync.Mutex
	tokens map[string]tokenRecord
}

// OpenTokenStore loads the tokens at path (none when the file is missing).
func OpenTokenStore(path string, now func() time.Time) (*TokenStore, error) {
	if now == nil {
		now = time.Now
	}
	s := &TokenStore{path: path, now: now, tokens: map[string]tokenRecord{}}
	var f tokenFile
	if err := readJSON(path, &f); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("join tokens: %w", err)
	}
	for _, r := range f.Tokens {
		if rules.CheckJoinTokenID(r.ID) != nil || len(r.SecretSHA256) != 64 {
			return nil, fmt.Errorf("join tokens: %s: malformed entry %q", path, r.ID)
		}
		s.tokens[r.ID] = r
	}
	return s, nil
}

// Create makes a random token valid for ttl (0: the default) and returns
// it whole; only its hash is stored.
func (s *TokenStore) Create(ttl time.Duration, description string) (string, Token, error) {
	tok := randomToken(rules.JoinTokenIDLen) + "." + randomToken(rules.JoinTokenSecretLen)
	t, err := s.Add(tok, ttl, description)
	return tok, t, err
}

// Add registers a given token (a preseeded one) valid for ttl.
func (s *TokenStore) Add(token string, ttl time.Duration, description string) (Token, error) {
	id, secret, err := rules.ParseJoinToken(token)
	if err != nil {
		return Token{}, fault.Invalidf("token", "%w", err)
	}
	if err := rules.CheckJoinTokenTTL(ttl); err != nil {
		return Token{}, fault.Invalidf("ttl", "%w", err)
	}
	if ttl == 0 {
		ttl = rules.DefaultJoinTokenTTL
	}
	if len(description) > maxDescription || strings.ContainsFunc(description, func(r rune) bool { return r < 0x20 }) {
		return Token{}, fault.Invalidf("description", "at most %d characters, no control characters", maxDescription)
	}
	now := s.now()
	r := tokenRecord{ID: id, SecretSHA256: hashSecret(secret), Description: description, Created: now, Expires: now.Add(ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tokens[id]; ok {
		return Token{}, fault.Errorf(fault.AlreadyExists, "a join token with id %q exists", id)
	}
	next := s.copyLocked()
	next[id] = r
	if err := s.saveLocked(next); err != nil {
		return Token{}, err
	}
	return r.public(), nil
}

// Check authenticates a token without changing anything. A wrong id or
// secret get the same answer, so a caller learns nothing about which
// tokens exist; an expired token says so only to someone holding it.
func (s *TokenStore) Check(token string) (Token, error) {
	id, secret, err := rules.ParseJoinToken(token)
	if err != nil {
		return Token{}, fault.Invalidf("token", "%w", err)
	}
	s.mu.Lock()
	r, ok := s.tokens[id]
	s.mu.Unlock()
	want := r.SecretSHA256
	if !ok {
		want = strings.Repeat("0", 64) // compare anyway: same work either way
	}
	got := hashSecret(secret)
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 || !ok {
		return Token{}, fault.Errorf(fault.Unauthenticated, "join token is not valid (ask an admin for a new one: dvctl cluster token create)")
	}
	if now := s.now(); r.public().Expired(now) {
		return Token{}, fault.Errorf(fault.Unauthenticated, "join token %s expired at %s", id, r.Expires.UTC().Format(time.RFC3339))
	}
	return r.public(), nil
}

// Used counts a successful join with the token id.
func (s *TokenStore) Used(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.tokens[id]
	if !ok {
		return fault.Errorf(fault.NotFound, "join token %q was deleted", id)
	}
	r.Uses++
	next := s.copyLocked()
	next[id] = r
	return s.saveLocked(next)
}

// List returns the tokens, newest first.
func (s *TokenStore) List() []Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Token, 0, len(s.tokens))
	for _, r := range s.tokens {
		out = append(out, r.public())
	}
	slices.SortFunc(out, func(a, b Token) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Delete removes a token by id.
func (s *TokenStore) Delete(id string) error {
	if err := rules.CheckJoinTokenID(id); err != nil {
		return fault.Invalidf("id", "%w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tokens[id]; !ok {
		return fault.Errorf(fault.NotFound, "no join token with id %q", id)
	}
	next := s.copyLocked()
	delete(next, id)
	return s.saveLocked(next)
}

func (s *TokenStore) copyLocked() map[string]tokenRecord {
	m := make(map[string]tokenRecord, len(s.tokens)+1)
	now := s.now()
	for k, v := range s.tokens {
		if now.Sub(v.Expires) > pruneAfter {
			continue
		}
		m[k] = v
	}
	return m
}

// saveLocked writes next and, only once it is on disk, makes it current.
func (s *TokenStore) saveLocked(next map[string]tokenRecord) error {
	f := tokenFile{Tokens: make([]tokenRecord, 0, len(next))}
	for _, r := range next {
		f.Tokens = append(f.Tokens, r)
	}
	slices.SortFunc(f.Tokens, func(a, b tokenRecord) int { return strings.Compare(a.ID, b.ID) })
	if err := writeJSON(s.path, f); err != nil {
		return fault.Errorf(fault.Internal, "save join tokens: %w", err)
	}
	s.tokens = next
	return nil
}

func (r tokenRecord) public() Token {
	return Token{ID: r.ID, Description: r.Description, Created: r.Created, Expires: r.Expires, Uses: r.Uses}
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// randomToken draws n characters uniformly from tokenAlphabet.
func randomToken(n int) string {
	out := make([]byte, n)
	buf := make([]byte, 1)
	for i := 0; i < n; {
		_, _ = rand.Read(buf)
		// 252 = 7*36: reject the tail so every character is equally likely.
		if buf[0] >= 252 {
			continue
		}
		out[i] = tokenAlphabet[int(buf[0])%len(tokenAlphabet)]
		i++
	}
	return string(out)
}
