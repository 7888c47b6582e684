package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"

	"github.com/debvisor/debvisor/internal/pki"
	"github.com/debvisor/debvisor/nodeagent/config"
)

// pkiStore serves the node certificate and the trusted CA bundle, reloading
// the files when they change so that certificates and CAs can be rotated
// without restarting the agent.
type pkiStore struct {
	files config.TLS
	now   func() time.Time

	mu      sync.Mutex
	checked time.Time
	stamp   string
	cert    *tls.Certificate
	leaf    *x509.Certificate
	roots   *x509.CertPool
}

func newPKIStore(files config.TLS, now func() time.Time) (*pkiStore, error) {
	p := &pkiStore{files: files, now: now}
	if err := p.reload(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *pkiStore) fileStamp() string {
	var s string
	for _, f := range []string{p.files.CA, p.files.Cert, p.files.Key} {
		if fi, err := os.Stat(f); err == nil {
			s += fmt.Sprintf("%s:%d:%d;", f, fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return s
}

func (p *pkiStore) reload() error {
	caPEM, err := os.ReadFile(p.files.CA)
	if err != nil {
		return fmt.Errorf("read CA bundle: %w", err)
	}
	cas, err := pki.ParseCerts(caPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", p.files.CA, err)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	kp, err := tls.LoadX509KeyPair(p.files.Cert, p.files.Key)
	if err != nil {
		return fmt.Errorf("load node certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		return err
	}
	// Serve the CA bundle behind the node certificate: a node joining the
	// cluster has no CA yet, only its hash, and finds the CA to check the
	// pin against in this chain (kubeadm's discovery does the same with a
	// signed config map). CA certificates are public.
	for _, ca := range cas {
		if !slices.ContainsFunc(kp.Certificate[1:], func(der []byte) bool { return bytes.Equal(der, ca.Raw) }) {
			kp.Certificate = append(kp.Certificate, ca.Raw)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.roots, p.cert, p.leaf = roots, &kp, leaf
	p.stamp = p.fileStamp()
	p.checked = p.now()
	return nil
}

// maybeReload re-reads the files at most every 5 s, and only if they changed.
// A broken rotation (half-written files) keeps the previous material.
func (p *pkiStore) maybeReload() {
	p.mu.Lock()
	due := p.now().Sub(p.checked) > 5*time.Second
	if due {
		p.checked = p.now()
	}
	stale := due && p.fileStamp() != p.stamp
	p.mu.Unlock()
	if stale {
		_ = p.reload()
	}
}

func (p *pkiStore) Roots() *x509.CertPool {
	p.maybeReload()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.roots
}

func (p *pkiStore) Leaf() *x509.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leaf
}

// serverTLS returns the listener config. Client certificates are requested
// but verified by the interceptors, not the handshake, so that a missing,
// foreign or expired certificate gets a gRPC Unauthenticated status with the
// reason instead of an opaque handshake failure.
func (p *pkiStore) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			p.maybeReload()
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.cert, nil
		},
		NextProtos: []string{"h2", "http/1.1"},
	}
}

// peerCredInfo is the AuthInfo of a unix-socket connection.
type peerCredInfo struct {
	credentials.CommonAuthInfo
	UID, GID uint32
	PID      int32
}

func (peerCredInfo) AuthType() string { return "peercred" }

// peerCreds reads SO_PEERCRED on unix connections. It adds no encryption:
// the socket never leaves the host.
type peerCreds struct{}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peerCreds is server-side only")
}

func (peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, errors.New("peer credentials need a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, nil, err
	}
	if serr != nil {
		return nil, nil, fmt.Errorf("SO_PEERCRED: %w", serr)
	}
	return c, peerCredInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		UID:            cred.Uid, GID: cred.Gid, PID: cred.Pid,
	}, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}
func (p peerCreds) Clone() credentials.TransportCredentials { return p }
func (peerCreds) OverrideServerName(string) error           { return nil }
