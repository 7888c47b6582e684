// Package registry moves DebVisor releases (osimage/artifact) to and from
// OCI registries as users have them: credentials from the Docker config
// and credential helpers, custom CA bundles, plain HTTP only when asked
// for, retries with back-off on 5xx and dropped connections, a context on
// every call, byte progress, and memory that does not grow with the size
// of an image. It is shared by the image builder (push, sign), the node
// agent (upgrade) and the installers: a release is only ever opened after
// its signature verified, and every byte written is checked against the
// signed digests before the write counts.
package registry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/debvisor/debvisor/osimage/artifact"
)

// Option configures a Client.
type Option func(*options) error

type options struct {
	keychain     authn.Keychain
	roots        *x509.CertPool
	caFiles      []string
	insecureHTTP bool
	attempts     int
	backoff      time.Duration
	transport    http.RoundTripper
	log          *slog.Logger
	progress     func(Progress)
	jobs         int
	platform     v1.Platform
	userAgent    string
}

// WithKeychain sets where credentials come from (default: the Docker
// config file, $DOCKER_CONFIG or ~/.docker/config.json, with its
// credential helpers; and podman's auth.json).
func WithKeychain(k authn.Keychain) Option {
	return func(o *options) error {
		if k == nil {
			return errors.New("nil keychain")
		}
		o.keychain = k
		return nil
	}
}

// WithCABundle adds the PEM certificates in path to the system roots for
// TLS to registries (a private registry's CA).
func WithCABundle(path string) Option {
	return func(o *options) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("CA bundle: %w", err)
		}
		if o.roots == nil {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			o.roots = pool
		}
		if !o.roots.AppendCertsFromPEM(b) {
			return fmt.Errorf("CA bundle %s: no PEM certificate in it", path)
		}
		o.caFiles = append(o.caFiles, path)
		return nil
	}
}

// WithInsecureHTTP allows plain HTTP to registries. Without it every
// request goes over TLS, even to loopback and private addresses (which
// go-containerregistry would otherwise quietly reach over HTTP).
func WithInsecureHTTP(allow bool) Option {
	return func(o *options) error { o.insecureHTTP = allow; return nil }
}

// WithRetry sets how often a request that failed with a 5xx/408/429
// status or a dropped connection is tried (attempts ≥ 1, in all) and the
// first back-off (doubled each time). Default: 4 attempts, 1 s.
func WithRetry(attempts int, first time.Duration) Option {
	return func(o *options) error {
		if attempts < 1 || first < 0 {
			return fmt.Errorf("retry: %d attempts, %s back-off", attempts, first)
		}
		o.attempts, o.backoff = attempts, first
		return nil
	}
}

// WithTransport sets the base HTTP transport (default: a clone of
// remote.DefaultTransport). WithCABundle applies to it when it is an
// *http.Transport.
func WithTransport(t http.RoundTripper) Option {
	return func(o *options) error {
		if t == nil {
			return errors.New("nil transport")
		}
		o.transport = t
		return nil
	}
}

// WithLogger sets the logger (retries and skipped uploads at debug).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.log = l; return nil }
}

// WithProgress reports bytes moved.
func WithProgress(f func(Progress)) Option {
	return func(o *options) error { o.progress = f; return nil }
}

// WithJobs sets how many blobs are uploaded at once (default 2).
func WithJobs(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("jobs %d < 1", n)
		}
		o.jobs = n
		return nil
	}
}

// WithPlatform sets the platform whose artifacts Open picks (default:
// linux and the running architecture).
func WithPlatform(p v1.Platform) Option {
	return func(o *options) error {
		if p.OS == "" || p.Architecture == "" {
			return fmt.Errorf("platform %q: want OS/ARCH", p.String())
		}
		o.platform = p
		return nil
	}
}

// WithUserAgent sets the User-Agent prefix.
func WithUserAgent(ua string) Option {
	return func(o *options) error { o.userAgent = ua; return nil }
}

// Progress is one report of bytes moved. Op is "push" or "pull"; Total
// is the bytes of the whole operation (0 while unknown).
type Progress struct {
	Op       string
	Artifact artifact.Kind
	Done     int64
	Total    int64
}

func defaults() options {
	return options{
		keychain: authn.DefaultKeychain,
		attempts: 4,
		backoff:  time.Second,
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		jobs:     2,
		platform: artifact.Platform(runtime.GOARCH),
	}
}

// baseTransport is the transport every request goes through first: TLS
// roots applied, plain HTTP refused unless allowed.
func (o *options) baseTransport() http.RoundTripper {
	t := o.transport
	if t == nil {
		t = remote.DefaultTransport.(*http.Transport).Clone()
	}
	if ht, ok := t.(*http.Transport); ok && o.roots != nil {
		ht = ht.Clone()
		if ht.TLSClientConfig == nil {
			ht.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		ht.TLSClientConfig.RootCAs = o.roots
		t = ht
	}
	return &schemeGuard{inner: t, allowHTTP: o.insecureHTTP}
}

// ErrPlainHTTP is wrapped when a request would have gone over plain HTTP
// without WithInsecureHTTP.
var ErrPlainHTTP = errors.New("plain HTTP to a registry is off (use --insecure-http to allow it)")

type schemeGuard struct {
	inner     http.RoundTripper
	allowHTTP bool
}

func (g *schemeGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" && !g.allowHTTP {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("%s: %w", r.URL.Host, ErrPlainHTTP)
	}
	if n, ok := r.Context().Value(uploadCounter{}).(*atomic.Int64); ok && r.Body != nil && strings.Contains(r.URL.Path, "/blobs/uploads/") {
		r = r.Clone(r.Context())
		r.Body = &countingBody{ReadCloser: r.Body, n: n}
	}
	return g.inner.RoundTrip(r)
}

// uploadCounter keys the context value Push counts sent blob bytes in.
type uploadCounter struct{}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
