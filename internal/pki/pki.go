// Package pki owns the cluster's certificate authority: creating a CA,
// issuing node and client certificates, and reading back the role a
// certificate grants.
//
// Roles are carried in the certificate subject's Organization as
// "debvisor:<role>", so any TLS stack can inspect them (openssl x509 -subject)
// and a role can be revoked only by letting the certificate expire or by
// rotating the CA; keep client certificates short-lived.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/debvisor/debvisor/internal/atomicfile"
)

// Role is what a client certificate allows. Roles are ordered: a higher role
// may do everything a lower one may.
type Role int

const (
	RoleNone Role = iota
	RoleReader
	RoleOperator
	RoleAdmin
)

const orgPrefix = "debvisor:"

// nodeOrg marks node (server) certificates; it grants no client role.
const nodeOrg = orgPrefix + "node"

func (r Role) String() string {
	switch r {
	case RoleReader:
		return "reader"
	case RoleOperator:
		return "operator"
	case RoleAdmin:
		return "admin"
	default:
		return "none"
	}
}

// ParseRole parses "reader", "operator" or "admin".
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "reader":
		return RoleReader, nil
	case "operator":
		return RoleOperator, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("unknown role %q (want reader, operator or admin)", s)
}

// RoleOf returns the highest role a certificate grants, RoleNone if none.
func RoleOf(cert *x509.Certificate) Role {
	best := RoleNone
	for _, o := range cert.Subject.Organization {
		if !strings.HasPrefix(o, orgPrefix) {
			continue
		}
		if r, err := ParseRole(strings.TrimPrefix(o, orgPrefix)); err == nil && r > best {
			best = r
		}
	}
	return best
}

// IsNode reports whether cert was issued as a node certificate.
func IsNode(cert *x509.Certificate) bool {
	for _, o := range cert.Subject.Organization {
		if o == nodeOrg {
			return true
		}
	}
	return false
}

// CA is a certificate authority able to sign certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Options control certificate lifetimes. The zero value uses the defaults.
type Options struct {
	// Now is the clock used for NotBefore; time.Now when nil.
	Now func() time.Time
	// Validity of the certificate; defaults: CA 10 years, node 1 year, client 90 days.
	Validity time.Duration
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o Options) validity(def time.Duration) time.Duration {
	if o.Validity != 0 {
		return o.Validity
	}
	return def
}

// NewCA creates a self-signed cluster CA.
func NewCA(cluster string, o Options) (*CA, error) {
	if cluster == "" {
		return nil, errors.New("cluster name must not be empty")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := o.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "DebVisor cluster CA " + cluster, Organization: []string{orgPrefix + "ca"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(o.validity(10 * 365 * 24 * time.Hour)),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issued is a certificate and its private key.
type Issued struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// IssueNode issues a server+client certificate for a node. hosts are DNS
// names or IP addresses it answers on.
func (ca *CA) IssueNode(name string, hosts []string, o Options) (*Issued, error) {
	if name == "" {
		return nil, errors.New("node name must not be empty")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{nodeOrg}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	tmpl.DNSNames = append(tmpl.DNSNames, name)
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" && h != name {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl, o.validity(365*24*time.Hour), o)
}

// IssueClient issues a client certificate granting role to name.
func (ca *CA) IssueClient(name string, role Role, o Options) (*Issued, error) {
	if name == "" {
		return nil, errors.New("client name must not be empty")
	}
	if role <= RoleNone || role > RoleAdmin {
		return nil, fmt.Errorf("invalid role %v", role)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{orgPrefix + role.String()}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(tmpl, o.validity(90*24*time.Hour), o)
}

func (ca *CA) issue(tmpl *x509.Certificate, validity time.Duration, o Options) (*Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	cert, err := ca.sign(tmpl, key.Public(), validity, o)
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: cert, Key: key}, nil
}

// sign completes tmpl (serial, validity capped at the CA's, key usage) and
// signs pub into a certificate.
func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, validity time.Duration, o Options) (*x509.Certificate, error) {
	now := o.now()
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = now.Add(-5 * time.Minute)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

// Verify checks that cert chains to one of the CAs in roots at time now and
// is meant for client authentication. Its errors are written for the person
// holding the certificate.
func Verify(cert *x509.Certificate, intermediates []*x509.Certificate, roots *x509.CertPool, now time.Time) error {
	if now.After(cert.NotAfter) {
		return fmt.Errorf("certificate %q expired at %s", cert.Subject.CommonName, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("certificate %q is not valid before %s", cert.Subject.CommonName, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return fmt.Errorf("certificate %q was not issued by this cluster's CA (issuer %q)", cert.Subject.CommonName, cert.Issuer.CommonName)
		}
		return fmt.Errorf("certificate %q: %w", cert.Subject.CommonName, err)
	}
	return nil
}

// EncodeCert returns the PEM encoding of cert.
func EncodeCert(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// EncodeKey returns the PKCS#8 PEM encoding of key.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCerts parses every CERTIFICATE block in PEM data.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// ParseKey parses a PEM private key (PKCS#8, EC or PKCS#1).
func ParseKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse private key: %w", err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, errors.New("private key cannot sign")
			}
			return s, nil
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(b.Bytes)
		}
	}
}

// Files names the PEM files of a CA or an issued certificate.
type Files struct {
	Cert string
	Key  string
}

// Save writes cert and key PEM files; the key is written 0600 and never
// overwritten unless force is set.
func Save(f Files, cert *x509.Certificate, key crypto.Signer, force bool) error {
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return err
	}
	for _, p := range []string{f.Cert, f.Key} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if !force {
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("%s already exists (use --force to overwrite)", p)
			}
		}
	}
	if err := writeFileAtomic(f.Key, keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(f.Cert, EncodeCert(cert), 0o644)
}

// LoadCA reads a CA certificate and key.
func LoadCA(f Files) (*CA, error) {
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Cert, err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Key, err)
	}
	if !certs[0].IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", f.Cert)
	}
	return &CA{Cert: certs[0], Key: key}, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	return atomicfile.WriteFile(path, data, mode)
}
