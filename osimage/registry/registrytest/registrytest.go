// Package registrytest starts the real components the OCI tests run
// against: Debian's docker-registry (distribution 2.8) on loopback with a
// temporary configuration, the pinned cosign, skopeo; and wraps
// in-process registries to count uploaded bytes or inject failures. A
// missing tool fails the test with the package that provides it.
package registrytest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tool returns the path of command cmd, failing the test with the Debian
// package to install when it is missing.
func Tool(t testing.TB, cmd, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(cmd)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (scripts/install-deps does)", cmd, pkg)
	}
	return p
}

// RepoRoot is the directory holding the module's go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/debvisor/debvisor\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no github.com/debvisor/debvisor go.mod above the test directory")
		}
		dir = parent
	}
}

var cosignOnce struct {
	sync.Once
	path string
	err  error
}

// Cosign returns the pinned cosign (tools/cosign), building it into the
// cache on first use (scripts/build-cosign).
func Cosign(t testing.TB) string {
	t.Helper()
	cosignOnce.Do(func() {
		cmd := exec.Command(filepath.Join(RepoRoot(t), "scripts", "build-cosign"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			cosignOnce.err = fmt.Errorf("scripts/build-cosign: %w\n%s", err, stderr.String())
			return
		}
		cosignOnce.path = strings.TrimSpace(string(out))
	})
	if cosignOnce.err != nil {
		t.Fatal(cosignOnce.err)
	}
	return cosignOnce.path
}

// Distribution is a docker-registry process on loopback.
type Distribution struct {
	// Host is HOST:PORT.
	Host string
	// Root is the storage directory (blobs under docker/registry/v2).
	Root string
	cmd  *exec.Cmd
	log  *bytes.Buffer
}

// DistributionConfig adds TLS or htpasswd auth.
type DistributionConfig struct {
	// CertFile and KeyFile turn on TLS.
	CertFile, KeyFile string
	// Htpasswd is an htpasswd file (bcrypt); it turns on basic auth.
	Htpasswd string
	// Addr overrides the listen address (default 127.0.0.1:free port).
	Addr string
}

// StartDistribution starts docker-registry with its storage in a
// temporary directory and stops it when the test ends.
func StartDistribution(t testing.TB, c DistributionConfig) *Distribution {
	t.Helper()
	bin := Tool(t, "docker-registry", "docker-registry")
	dir := t.TempDir()
	root := filepath.Join(dir, "storage")
	addr := c.Addr
	if addr == "" {
		addr = FreeAddr(t)
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n")
	fmt.Fprintf(&cfg, "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n", root)
	fmt.Fprintf(&cfg, "http:\n  addr: %s\n", addr)
	if c.CertFile != "" {
		fmt.Fprintf(&cfg, "  tls:\n    certificate: %s\n    key: %s\n", c.CertFile, c.KeyFile)
	}
	if c.Htpasswd != "" {
		fmt.Fprintf(&cfg, "auth:\n  htpasswd:\n    realm: debvisor-test\n    path: %s\n", c.Htpasswd)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &Distribution{Host: addr, Root: root, log: &bytes.Buffer{}}
	d.cmd = exec.Command(bin, "serve", cfgPath)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	t.Cleanup(func() {
		d.cmd.Process.Kill() //nolint:errcheck // it may have exited already
		d.cmd.Wait()         //nolint:errcheck // killed on purpose
		if t.Failed() {
			t.Logf("docker-registry log (404s left out):\n%s", d.Log())
		}
	})
	scheme := "http"
	if c.CertFile != "" {
		scheme = "https"
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry did not listen on %s (%s) within 15 s:\n%s", addr, scheme, d.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

// Log returns the registry's log without the lines for 404 answers,
// which every existence check produces.
func (d *Distribution) Log() string {
	var b strings.Builder
	for _, l := range strings.Split(d.log.String(), "\n") {
		if !strings.Contains(l, "http.response.status=404") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// BlobPath is where docker-registry keeps the content of a blob.
func (d *Distribution) BlobPath(digest string) string {
	hex := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(d.Root, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
}

// FreeAddr returns a loopback address with a port nothing listens on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Counter counts what clients send to a registry.
type Counter struct {
	// UploadBytes is the body bytes of blob upload requests (POST, PATCH
	// and PUT under /blobs/uploads/).
	UploadBytes atomic.Int64
	// Uploads is the number of upload sessions started (POST).
	Uploads atomic.Int64
	// BlobHeads is the number of HEAD requests for blobs.
	BlobHeads atomic.Int64
	// BlobGets is the number of GET requests for blobs.
	BlobGets atomic.Int64
	// ManifestHeads is the number of HEAD requests for manifests.
	ManifestHeads atomic.Int64
}

// Reset zeroes the counters.
func (c *Counter) Reset() {
	c.UploadBytes.Store(0)
	c.Uploads.Store(0)
	c.BlobHeads.Store(0)
	c.BlobGets.Store(0)
	c.ManifestHeads.Store(0)
}

// Wrap returns h with counting in front.
func (c *Counter) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/blobs/uploads/"):
			if r.Method == http.MethodPost {
				c.Uploads.Add(1)
			}
			r.Body = &countBody{ReadCloser: r.Body, n: &c.UploadBytes}
		case strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodHead:
			c.BlobHeads.Add(1)
		case strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet:
			c.BlobGets.Add(1)
		case strings.Contains(r.URL.Path, "/manifests/") && r.Method == http.MethodHead:
			c.ManifestHeads.Add(1)
		}
		h.ServeHTTP(w, r)
	})
}

type countBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// Fault describes failures to inject into matching requests.
type Fault struct {
	// Match selects requests (method and path).
	Match func(r *http.Request) bool
	// Status answers the first Times matches with this status (e.g. 503).
	Status int
	// ResetAfter, when > 0 and Status is 0, lets the first Times matches
	// get this many response bytes and then drops the connection (a
	// reset, as a proxy or a flaky network does). For requests with a
	// body, the connection is dropped before any answer.
	ResetAfter int64
	// Times is how many matching requests fail.
	Times int64
	// Hits counts the failures injected.
	Hits atomic.Int64
}

// Faulty returns h with the faults in front.
func Faulty(h http.Handler, faults ...*Fault) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, f := range faults {
			if !f.Match(r) || f.Hits.Load() >= f.Times {
				continue
			}
			f.Hits.Add(1)
			if f.Status != 0 {
				http.Error(w, "injected failure", f.Status)
				return
			}
			if r.ContentLength != 0 && r.Method != http.MethodGet && r.Method != http.MethodHead {
				io.CopyN(io.Discard, r.Body, 1<<20) //nolint:errcheck // read a little, then drop
				hijackClose(w)
				return
			}
			rec := &truncating{ResponseWriter: w, left: f.ResetAfter}
			h.ServeHTTP(rec, r)
			hijackClose(w)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// truncating passes through at most left body bytes.
type truncating struct {
	http.ResponseWriter
	left int64
}

func (t *truncating) Write(p []byte) (int, error) {
	if t.left <= 0 {
		return 0, io.ErrClosedPipe
	}
	if int64(len(p)) > t.left {
		p = p[:t.left]
	}
	n, err := t.ResponseWriter.Write(p)
	t.left -= int64(n)
	if f, ok := t.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	if t.left <= 0 && err == nil {
		return n, io.ErrClosedPipe
	}
	return n, err
}

func hijackClose(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("registrytest: response writer cannot be hijacked")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) //nolint:errcheck // RST instead of FIN: a reset
	}
	conn.Close()
}

// Run runs a command, failing the test with its output on error, and
// returns stdout.
func Run(t testing.TB, ctx context.Context, env []string, name string, args ...string) string {
	t.Helper()
	out, err := RunErr(ctx, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// RunErr runs a command and returns stdout, or an error with stderr.
func RunErr(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\nstderr: %s\nstdout: %s", err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}
