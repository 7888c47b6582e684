package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/internal/pki"
)

// pinCheck verifies a server against a pinned CA hash, kubeadm-style: the
// server's chain must contain a CA certificate whose SubjectPublicKeyInfo
// hashes to the pin, and the leaf must be a DebVisor node certificate that
// CA signed for server use. It records what it saw so the caller can tell
// a wrong cluster from an unreachable one.
type pinCheck struct {
	pin []byte
	now func() time.Time

	mu       sync.Mutex
	mismatch string // set when a server answered with another CA
}

func (p *pinCheck) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Not trusting the system roots nor skipping verification:
		// VerifyConnection below is the whole check, against the pin.
		InsecureSkipVerify: true, //nolint:gosec // verified by VerifyConnection
		VerifyConnection:   p.verify,
	}
}

// credentialsFor wraps the pin check as gRPC transport credentials.
func credentialsFor(p *pinCheck) credentials.TransportCredentials {
	return credentials.NewTLS(p.tlsConfig())
}

func (p *pinCheck) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	var seen []string
	for _, c := range cs.PeerCertificates[1:] {
		sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		if !c.IsCA || !bytes.Equal(sum[:], p.pin) {
			seen = append(seen, pki.CAHash(c))
			continue
		}
		roots := x509.NewCertPool()
		roots.AddCert(c)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: p.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			p.setMismatch(fmt.Sprintf("its certificate %q does not verify against the pinned CA: %v", leaf.Subject.CommonName, err))
			return fmt.Errorf("server certificate: %w", err)
		}
		if !pki.IsNode(leaf) {
			p.setMismatch(fmt.Sprintf("its certificate %q is not a DebVisor node certificate", leaf.Subject.CommonName))
			return errors.New("server certificate is not a node certificate")
		}
		return nil
	}
	if len(seen) == 0 {
		seen = append(seen, "none")
	}
	p.setMismatch(fmt.Sprintf("it presented CA %s, not the pinned %s", strings.Join(seen, ", "), rules.FormatCACertHash(p.pin)))
	return errors.New("the server's CA does not match the pinned CA hash")
}

func (p *pinCheck) setMismatch(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mismatch = s
}

func (p *pinCheck) Mismatch() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mismatch
}

// dialNode opens an mTLS connection to another member's API as this node:
// its node certificate as the client certificate, the cluster CA bundle as
// roots, and the member's name as the name its certificate must carry.
func dialNode(cfg Config, name, addr string) (*grpc.ClientConn, error) {
	tc := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: name,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			kp, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			return &kp, err
		},
	}
	caPEM, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	tc.RootCAs = x509.NewCertPool()
	if !tc.RootCAs.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s: no CA certificate", cfg.CAFile)
	}
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
}

// callTimeout bounds one enrollment or relay call.
const callTimeout = 15 * time.Second

func withCallTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, callTimeout)
}
