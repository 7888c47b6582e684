package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/debvisor/debvisor/api/rules"
)

// Limits on what a node certificate request may ask for.
const (
	maxCSRNames = 16
	maxCSRIPs   = 16
	maxCSRBytes = 16 << 10
)

// CAHash is the pin of a CA certificate that joining nodes check before they
// trust a cluster: "sha256:" and the hex SHA-256 of the CA's DER
// SubjectPublicKeyInfo, the same value kubeadm's
// --discovery-token-ca-cert-hash uses (so `openssl x509 -pubkey | openssl
// pkey -pubin -outform der | sha256sum` computes it too).
func CAHash(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return rules.FormatCACertHash(sum[:])
}

// Fingerprint is the SHA-256 of a certificate's DER, as "sha256:<hex>";
// nodes advertise their own over mDNS so a client can pin one node.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// NewNodeCSR makes a P-256 key and a certificate request for a node named
// name, answering on hosts (DNS names or IP addresses).
func NewNodeCSR(name string, hosts []string) (csrPEM []byte, key crypto.Signer, err error) {
	if err := rules.CheckHostname(name); err != nil {
		return nil, nil, fmt.Errorf("node name: %w", err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" && h != name {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, k)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), k, nil
}

// ParseCSR parses one PEM CERTIFICATE REQUEST and checks its self-signature.
// Its errors describe the input, never echo it.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) == 0 {
		return nil, errors.New("empty: want a PEM CERTIFICATE REQUEST")
	}
	if len(data) > maxCSRBytes {
		return nil, fmt.Errorf("%d bytes is larger than a certificate request can be (%d)", len(data), maxCSRBytes)
	}
	b, rest := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("not a PEM CERTIFICATE REQUEST")
	}
	if len(trimSpace(rest)) != 0 {
		return nil, errors.New("trailing data after the certificate request")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	return csr, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// SignNodeCSR issues a node certificate for name from a request made by the
// node itself, so the node's private key never travels. Only the request's
// public key and host names are used: the subject, the role
// (Organization "debvisor:node") and the key usages come from the CA, so a
// request asking for, say, "debvisor:admin" gets a plain node certificate.
func (ca *CA) SignNodeCSR(csr *x509.CertificateRequest, name string, o Options) (*x509.Certificate, error) {
	if err := rules.CheckHostname(name); err != nil {
		return nil, fmt.Errorf("node name: %w", err)
	}
	if csr.Subject.CommonName != name {
		return nil, fmt.Errorf("the request is for %q, not for node %q", csr.Subject.CommonName, name)
	}
	if err := checkNodeKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if len(csr.URIs) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, errors.New("the request names URIs or e-mail addresses; node certificates carry host names and IP addresses only")
	}
	if len(csr.DNSNames) > maxCSRNames || len(csr.IPAddresses) > maxCSRIPs {
		return nil, fmt.Errorf("the request names %d host names and %d addresses; at most %d and %d", len(csr.DNSNames), len(csr.IPAddresses), maxCSRNames, maxCSRIPs)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{nodeOrg}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{name},
	}
	for _, d := range csr.DNSNames {
		if d == name {
			continue
		}
		if err := checkDNSName(d); err != nil {
			return nil, fmt.Errorf("host name %q: %w", d, err)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, d)
	}
	for _, ip := range csr.IPAddresses {
		if ip.IsUnspecified() || ip.IsMulticast() {
			return nil, fmt.Errorf("address %s cannot name a node", ip)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	return ca.sign(tmpl, csr.PublicKey, o.validity(365*24*time.Hour), o)
}

func checkNodeKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s is not accepted (P-256 or P-384)", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too small (at least 2048)", k.N.BitLen())
		}
	default:
		return fmt.Errorf("key type %T is not accepted (ECDSA, Ed25519 or RSA)", pub)
	}
	return nil
}

// checkDNSName accepts dotted host names whose labels follow RFC 1123.
func checkDNSName(d string) error {
	if len(d) > 253 || d == "" {
		return errors.New("not a host name")
	}
	start := 0
	for i := 0; i <= len(d); i++ {
		if i == len(d) || d[i] == '.' {
			if err := rules.CheckHostname(d[start:i]); err != nil {
				return err
			}
			start = i + 1
		}
	}
	return nil
}
