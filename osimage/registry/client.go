package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/debvisor/debvisor/osimage/signature"
)

// Client talks to registries. It is safe for concurrent use.
type Client struct {
	o    options
	base http.RoundTripper
}

// New returns a client.
func New(opts ...Option) (*Client, error) {
	o := defaults()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	return &Client{o: o, base: o.baseTransport()}, nil
}

// ParseReference parses REGISTRY/REPO[:TAG|@DIGEST]. With insecure HTTP
// allowed, any registry may be reached over HTTP (after trying HTTPS).
func (c *Client) ParseReference(s string) (name.Reference, error) {
	var nopts []name.Option
	if c.o.insecureHTTP {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(s, nopts...)
	if err != nil {
		return nil, fmt.Errorf("reference %q: %w", s, err)
	}
	return r, nil
}

func (c *Client) remoteOptions(ctx context.Context, extra ...remote.Option) []remote.Option {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(c.o.keychain),
		remote.WithTransport(c.base),
		remote.WithJobs(c.o.jobs),
		remote.WithRetryBackoff(remote.Backoff{Duration: c.o.backoff, Factor: 2, Jitter: 0.1, Steps: c.o.attempts}),
		remote.WithRetryStatusCodes(retryStatus...),
		remote.WithRetryPredicate(c.retryable),
	}
	if c.o.userAgent != "" {
		opts = append(opts, remote.WithUserAgent(c.o.userAgent))
	}
	return append(opts, extra...)
}

var retryStatus = []int{http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
	http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout}

// retryable: statuses that say "try later", and connections dropped
// or reset mid-way or timed out. Not a refused connection (nothing
// listens: retrying only delays the error), a TLS or protocol mismatch, or
// a refused scheme.
func (c *Client) retryable(err error) bool {
	if err == nil || errors.Is(err, ErrPlainHTTP) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		for _, s := range retryStatus {
			if te.StatusCode == s {
				c.o.log.Debug("retrying", slog.Int("status", te.StatusCode))
				return true
			}
		}
		return false
	}
	var ne net.Error
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout()) {
		c.o.log.Debug("retrying", slog.String("error", err.Error()))
		return true
	}
	return false
}

// PushResult describes a push.
type PushResult struct {
	// Digest is the release, by digest.
	Digest name.Digest
	// Uploaded is the blob bytes sent; 0 when the registry had them all.
	Uploaded int64
}

// Push uploads a release index with all its manifests and blobs and tags
// it as ref. Blobs the repository already has are not uploaded (a HEAD
// request each), so pushing an unchanged release moves no blob bytes.
func (c *Client) Push(ctx context.Context, ref name.Reference, idx v1.ImageIndex) (*PushResult, error) {
	d, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	var sent atomic.Int64
	ctx = context.WithValue(ctx, uploadCounter{}, &sent)
	var extra []remote.Option
	done := make(chan struct{})
	if c.o.progress != nil {
		ch := make(chan v1.Update, 16)
		extra = append(extra, remote.WithProgress(ch))
		go func() {
			defer close(done)
			for u := range ch {
				if u.Error == nil {
					c.o.progress(Progress{Op: "push", Done: u.Complete, Total: u.Total})
				}
			}
		}()
	} else {
		close(done)
	}
	err = remote.WriteIndex(ref, idx, c.remoteOptions(ctx, extra...)...)
	<-done
	if err != nil {
		return nil, c.explain("push to", ref, err)
	}
	return &PushResult{Digest: ref.Context().Digest(d.String()), Uploaded: sent.Load()}, nil
}

// Resolve returns the digest ref names (a tag is looked up; a digest is
// checked to exist).
func (c *Client) Resolve(ctx context.Context, ref name.Reference) (name.Digest, error) {
	desc, err := remote.Head(ref, c.remoteOptions(ctx)...)
	if err != nil {
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode == http.StatusNotFound {
			return name.Digest{}, c.explain("resolve", ref, err)
		}
		// Some registries do not answer HEAD for manifests: GET.
		d, gerr := remote.Get(ref, c.remoteOptions(ctx)...)
		if gerr != nil {
			return name.Digest{}, c.explain("resolve", ref, gerr)
		}
		return ref.Context().Digest(d.Digest.String()), nil
	}
	return ref.Context().Digest(desc.Digest.String()), nil
}

// Sign adds a signature of d by s under d's signature tag (cosign's
// layout). It reports false when d already had a valid signature by the
// same key, and writes nothing then.
func (c *Client) Sign(ctx context.Context, d name.Digest, s *signature.Signer) (bool, error) {
	h, err := v1.NewHash(d.DigestStr())
	if err != nil {
		return false, err
	}
	tag := d.Context().Tag(signature.Tag(h))
	base, err := c.signatures(ctx, tag)
	if err != nil {
		return false, err
	}
	img, added, err := signature.Add(base, s, d.Context().Name(), h)
	if err != nil || !added {
		return false, err
	}
	if err := remote.Write(tag, img, c.remoteOptions(ctx)...); err != nil {
		return false, c.explain("write signature to", tag, err)
	}
	return true, nil
}

// Verify checks that d has a signature by one of v's keys.
func (c *Client) Verify(ctx context.Context, d name.Digest, v *signature.Verifier) (*signature.Verified, error) {
	if v == nil {
		return nil, errors.New("no verifier")
	}
	h, err := v1.NewHash(d.DigestStr())
	if err != nil {
		return nil, err
	}
	sigs, err := c.signatures(ctx, d.Context().Tag(signature.Tag(h)))
	if err != nil {
		return nil, err
	}
	got, err := v.Verify(sigs, h)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", d, err)
	}
	return got, nil
}

// signatures fetches the signature image under tag; nil when the tag does
// not exist.
func (c *Client) signatures(ctx context.Context, tag name.Tag) (v1.Image, error) {
	img, err := remote.Image(tag, c.remoteOptions(ctx)...)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, c.explain("read signatures", tag, err)
	}
	return img, nil
}

func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

// explain wraps err with the operation and reference and, for the
// failures users meet, what it means.
func (c *Client) explain(op string, ref name.Reference, err error) error {
	reg := ref.Context().RegistryStr()
	var te *transport.Error
	var op2 *net.OpError
	switch {
	case errors.Is(err, ErrPlainHTTP):
		return fmt.Errorf("%s %s: registry %s does not answer over HTTPS and plain HTTP is off (pass --insecure-http if it really serves HTTP): %w", op, ref, reg, err)
	case errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden):
		return fmt.Errorf("%s %s: registry %s refused the credentials (%d; credentials come from the Docker config and its credential helpers, e.g. `docker login %s`): %w", op, ref, reg, te.StatusCode, reg, err)
	case errors.As(err, &te) && te.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s %s: not found: %w", op, ref, err)
	case errors.As(err, &op2) && op2.Op == "dial":
		return fmt.Errorf("%s %s: registry %s unreachable: %w", op, ref, reg, err)
	}
	return fmt.Errorf("%s %s: %w", op, ref, err)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
