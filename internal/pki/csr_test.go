package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/debvisor/debvisor/api/rules"
)

func TestSignNodeCSR(t *testing.T) {
	ca, err := NewCA("t", Options{})
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, key, err := NewNodeCSR("n2", []string{"10.0.0.2", "n2.lab", "n2"})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignNodeCSR(csr, "n2", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !IsNode(cert) || RoleOf(cert) != RoleNone || cert.Subject.CommonName != "n2" {
		t.Errorf("subject %v: want a node certificate for n2 without a role", cert.Subject)
	}
	if got := strings.Join(cert.DNSNames, ","); got != "n2,n2.lab" {
		t.Errorf("DNS names %q", got)
	}
	if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("10.0.0.2")) {
		t.Errorf("IPs %v", cert.IPAddresses)
	}
	if !cert.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Error("certificate does not carry the requested key")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.pool(), DNSName: "n2", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("server auth as n2: %v", err)
	}
	if err := Verify(cert, nil, ca.pool(), time.Now()); err != nil {
		t.Errorf("client auth: %v", err)
	}
}

// csrWith builds a request by hand for the refusal cases.
func csrWith(t *testing.T, tmpl *x509.CertificateRequest, key any) *x509.CertificateRequest {
	t.Helper()
	if key == nil {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		key = k
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestSignNodeCSRRefuses(t *testing.T) {
	ca, _ := NewCA("t", Options{})
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	u, _ := url.Parse("spiffe://x/y")
	tests := []struct {
		name string
		node string
		csr  *x509.CertificateRequest
		want string
	}{
		{"other name", "n2", csrWith(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n1"}}, nil), `for "n1", not for node "n2"`},
		{"bad node name", "n_2", csrWith(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n_2"}}, nil), "node name"},
		{"small RSA", "n2", csrWith(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n2"}}, small), "too small"},
		{"P-224", "n2", csrWith(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n2"}}, p224), "not accepted"},
		{"URI", "n2", csrWith(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n2"}, URIs: []*url.URL{u}}, nil), "URIs"},
		{"bad DNS", "n2", csrWith(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n2"}, DNSNames: []string{"*.lab"}}, nil), "host name"},
		{"multicast IP", "n2", csrWith(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n2"}, IPAddresses: []net.IP{net.ParseIP("224.0.0.1")}}, nil), "cannot name a node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ca.SignNodeCSR(tt.csr, tt.node, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("SignNodeCSR = %v, %v; want error containing %q", c, err, tt.want)
			}
		})
	}
	// A request asking for a role in its subject gets a plain node certificate.
	csr := csrWith(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n2", Organization: []string{"debvisor:admin"}}}, nil)
	c, err := ca.SignNodeCSR(csr, "n2", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if RoleOf(c) != RoleNone || !IsNode(c) {
		t.Errorf("request for debvisor:admin got role %v", RoleOf(c))
	}
}

func TestParseCSRRefuses(t *testing.T) {
	good, _, _ := NewNodeCSR("n2", nil)
	b, _ := pem.Decode(good)
	tampered := append([]byte(nil), b.Bytes...)
	tampered[len(tampered)-5] ^= 0xff
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"garbage", []byte("hello"), "not a PEM CERTIFICATE REQUEST"},
		{"certificate", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "not a PEM CERTIFICATE REQUEST"},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}), "parse certificate request"},
		{"bad signature", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}), "signature"},
		{"trailing", append(append([]byte(nil), good...), good...), "trailing data"},
		{"huge", make([]byte, 20<<10), "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseCSR(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseCSR = %v; want error containing %q", err, tt.want)
			}
		})
	}
}

func TestCAHash(t *testing.T) {
	ca, _ := NewCA("t", Options{})
	h := CAHash(ca.Cert)
	d, err := rules.ParseCACertHash(h)
	if err != nil || len(d) != 32 {
		t.Fatalf("CAHash %q does not parse: %v", h, err)
	}
	other, _ := NewCA("t", Options{})
	if CAHash(other.Cert) == h {
		t.Error("two CAs with different keys share a hash")
	}
	if !strings.HasPrefix(Fingerprint(ca.Cert), "sha256:") || Fingerprint(ca.Cert) == h {
		t.Errorf("Fingerprint %q", Fingerprint(ca.Cert))
	}
}

func FuzzParseCSR(f *testing.F) {
	good, _, _ := NewNodeCSR("n2", []string{"10.0.0.2"})
	f.Add(good)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	ca, _ := NewCA("t", Options{})
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := ParseCSR(data)
		if err != nil {
			return
		}
		// Whatever parsed, signing either refuses or yields a node certificate
		// that grants no role.
		c, err := ca.SignNodeCSR(csr, csr.Subject.CommonName, Options{})
		if err == nil && (RoleOf(c) != RoleNone || !IsNode(c)) {
			t.Fatalf("signed %v with role %v", c.Subject, RoleOf(c))
		}
	})
}
