package registry_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
	"github.com/debvisor/debvisor/osimage/registry"
	"github.com/debvisor/debvisor/osimage/registry/registrytest"
)

// TestRetries: 503s and connections reset in the middle of a request,
// on the way up and on the way down, are retried; a blob download cut
// half-way resumes with a Range request instead of starting over.
func TestRetries(t *testing.T) {
	dir, l := release(t, artifacttest.Spec{SlotSize: 4 << 20, NoDisk: true})
	slot := "/blobs/" + l.Build.Slot.Digest
	manifest503 := &registrytest.Fault{Status: http.StatusServiceUnavailable, Times: 2,
		Match: func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/manifests/") }}
	upload503 := &registrytest.Fault{Status: http.StatusBadGateway, Times: 1,
		Match: func(r *http.Request) bool { return r.Method == http.MethodPatch }}
	uploadReset := &registrytest.Fault{Times: 1,
		Match: func(r *http.Request) bool { return r.Method == http.MethodPatch }}
	var mu sync.Mutex
	var ranges []string
	downloadReset := &registrytest.Fault{ResetAfter: 1 << 20, Times: 1,
		Match: func(r *http.Request) bool {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, slot) {
				mu.Lock()
				ranges = append(ranges, r.Header.Get("Range"))
				mu.Unlock()
				return r.Header.Get("Range") == ""
			}
			return false
		}}
	host, _ := inProcess(t, manifest503, upload503, uploadReset, downloadReset)
	c := client(t)
	s, v := key(t)
	d := pushSigned(t, c, host+"/flaky:1", l, s)
	rel, err := c.Open(ctx(t), d, v)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, err := rel.PullToDir(ctx(t), out, artifact.Slot); err != nil {
		t.Fatal(err)
	}
	sameFile(t, filepath.Join(dir, artifact.SlotFile), filepath.Join(out, artifact.SlotFile))
	for _, f := range []*registrytest.Fault{manifest503, upload503, uploadReset, downloadReset} {
		if f.Hits.Load() != f.Times {
			t.Errorf("fault injected %d times, want %d: the path was not exercised", f.Hits.Load(), f.Times)
		}
	}
	resumed := false
	for _, r := range ranges {
		resumed = resumed || strings.HasPrefix(r, "bytes=") && !strings.HasPrefix(r, "bytes=0-")
	}
	if !resumed {
		t.Fatalf("the cut download started over instead of resuming; Range headers: %q", ranges)
	}
}

// TestRetriesGiveUp: a registry that keeps failing fails the pull after
// the configured attempts, saying why.
func TestRetriesGiveUp(t *testing.T) {
	always := &registrytest.Fault{Status: http.StatusServiceUnavailable, Times: 1 << 30,
		Match: func(r *http.Request) bool {
			return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
		}}
	host, _ := inProcess(t, always)
	c := client(t, registry.WithRetry(3, time.Millisecond))
	s, v := key(t)
	_, l := release(t, artifacttest.Spec{SlotSize: 4096, NoDisk: true})
	d := pushSigned(t, c, host+"/down:1", l, s)
	// Signatures are blobs too: the open fails reading the payload.
	always.Hits.Store(0)
	_, err := c.Open(ctx(t), d, v)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("got %v", err)
	}
	if n := always.Hits.Load(); n < 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
}

// tlsFiles writes a CA and a server certificate for host.
func tlsFiles(t *testing.T, dir, host string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(srvKey)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for f, b := range map[string][]byte{
		caFile:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// dialTo sends connections for name:port to the loopback address addr:
// the registry is reached by a host name, as users have them (and as
// go-containerregistry needs for TLS: it talks plain HTTP to loopback IPs).
func dialTo(name, addr string) *http.Transport {
	var d net.Dialer
	return &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			if h, _, _ := net.SplitHostPort(a); h == name {
				a = addr
			}
			return d.DialContext(ctx, network, a)
		},
		ForceAttemptHTTP2: true,
	}
}

// TestPrivateRegistry: docker-registry with TLS from a private CA and
// htpasswd auth, as a company runs it. Without the CA bundle TLS fails;
// without credentials the registry refuses; credentials come from the
// Docker config file, first inline, then from a credential helper.
func TestPrivateRegistry(t *testing.T) {
	dir := t.TempDir()
	const host = "registry.test"
	caFile, certFile, keyFile := tlsFiles(t, dir, host)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("ci:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := registrytest.StartDistribution(t, registrytest.DistributionConfig{CertFile: certFile, KeyFile: keyFile, Htpasswd: htpasswd})
	_, port, _ := net.SplitHostPort(reg.Host)
	name := host + ":" + port
	tr := dialTo(host, reg.Host)
	s, v := key(t)
	_, l := release(t, artifacttest.Spec{SlotSize: 1 << 20})

	// Credentials: none yet.
	cfgDir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", cfgDir)
	t.Setenv("REGISTRY_AUTH_FILE", filepath.Join(cfgDir, "none.json"))

	noCA, err := registry.New(registry.WithTransport(tr), registry.WithRetry(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	_, err = noCA.Push(ctx(t), ref(t, noCA, name+"/os:1"), l.Index())
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("without the CA bundle: %v", err)
	}
	c, err := registry.New(registry.WithTransport(tr), registry.WithCABundle(caFile), registry.WithRetry(2, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Push(ctx(t), ref(t, c, name+"/os:1"), l.Index())
	if err == nil || !strings.Contains(err.Error(), "refused the credentials") {
		t.Fatalf("without credentials: %v", err)
	}

	// Inline credentials in the Docker config (what `docker login` writes).
	auth := base64.StdEncoding.EncodeToString([]byte("ci:s3cret"))
	writeFile(t, filepath.Join(cfgDir, "config.json"), `{"auths":{"`+name+`":{"auth":"`+auth+`"}}}`)
	d := pushSigned(t, c, name+"/os:1", l, s)
	rel, err := c.Open(ctx(t), d, v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rel.PullToDir(ctx(t), t.TempDir(), artifact.Slot, artifact.Disk); err != nil {
		t.Fatal(err)
	}

	// A credential helper named in the config, found on PATH.
	bin := t.TempDir()
	writeFile(t, filepath.Join(bin, "docker-credential-dvtest"), "#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat >/dev/null\n"+
		`echo '{"ServerURL":"`+name+`","Username":"ci","Secret":"s3cret"}'`+"\n")
	if err := os.Chmod(filepath.Join(bin, "docker-credential-dvtest"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	writeFile(t, filepath.Join(cfgDir, "config.json"), `{"credHelpers":{"`+name+`":"dvtest"}}`)
	rel, err = c.Open(ctx(t), ref(t, c, name+"/os:1"), v)
	if err != nil {
		t.Fatalf("with a credential helper: %v", err)
	}
	if _, err := rel.PullToDir(ctx(t), t.TempDir(), artifact.Slot); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
