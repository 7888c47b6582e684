package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/debvisor/debvisor/osimage/artifact"
)

// copyBuffer is the chunk blobs move in: large enough that per-call costs
// vanish, small enough that memory stays flat.
const copyBuffer = 1 << 20

// fetchBlob streams blob desc of repo into w, checking its size and
// digest. A dropped connection or a retryable status resumes where it
// stopped (Range request; from the start if the registry ignores
// Range). wrap, when set, turns the verified blob stream into what is
// written (e.g. decompresses it) and may return a close func.
func (c *Client) fetchBlob(ctx context.Context, repo name.Repository, desc v1.Descriptor, w io.Writer, k artifact.Kind,
	wrap func(io.Reader) (io.Reader, func() error, error)) error {
	br, err := c.newBlobReader(ctx, repo, desc, k)
	if err != nil {
		return err
	}
	defer br.close()
	vr, err := artifact.NewVerifyingReader(br, desc.Digest, desc.Size, "blob "+desc.Digest.String())
	if err != nil {
		return err
	}
	var src io.Reader = vr
	if wrap != nil {
		s, closeFn, err := wrap(vr)
		if err != nil {
			return err
		}
		if closeFn != nil {
			defer closeFn() //nolint:errcheck // decoder close releases memory only
		}
		src = s
	}
	if err := copyAll(w, src); err != nil {
		return err
	}
	// The wrapped stream may end before the blob does (trailing bytes
	// after the last zstd frame): read to the end so the digest is checked.
	if wrap != nil {
		n, err := io.Copy(io.Discard, vr)
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("blob %s: %d bytes after the end of its content: %w", desc.Digest, n, artifact.ErrContentMismatch)
		}
	}
	return nil
}

// copyAll copies with a large buffer, hiding io.ReaderFrom so the buffer
// size holds (os.File.ReadFrom would fall back to 32 KiB reads).
func copyAll(w io.Writer, r io.Reader) error {
	buf := make([]byte, copyBuffer)
	_, err := io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{r}, buf)
	return err
}

// newBlobReader prepares reading blob desc of repo; nothing is requested
// before the first Read.
func (c *Client) newBlobReader(ctx context.Context, repo name.Repository, desc v1.Descriptor, k artifact.Kind) (*blobReader, error) {
	auth, err := authn.Resolve(ctx, c.o.keychain, repo)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", repo, err)
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, c.base, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, c.explain("connect to", repo.Tag("latest"), err)
	}
	u := url.URL{Scheme: repo.Scheme(), Host: repo.RegistryStr(), Path: "/v2/" + repo.RepositoryStr() + "/blobs/" + desc.Digest.String()}
	return &blobReader{ctx: ctx, c: c, hc: &http.Client{Transport: rt}, url: u.String(), size: desc.Size, kind: k}, nil
}

// blobReader reads one blob over HTTP and resumes after failures.
type blobReader struct {
	ctx      context.Context
	c        *Client
	hc       *http.Client
	url      string
	size     int64
	off      int64
	kind     artifact.Kind
	body     io.ReadCloser
	failures int
	noRange  bool // the registry refused a Range request: resume by skipping
}

func (b *blobReader) Read(p []byte) (int, error) {
	for {
		if b.body == nil {
			if b.off >= b.size {
				return 0, io.EOF
			}
			if err := b.open(); err != nil {
				return 0, err
			}
		}
		n, err := b.body.Read(p)
		b.off += int64(n)
		if n > 0 && b.c.o.progress != nil {
			b.c.o.progress(Progress{Op: "pull", Artifact: b.kind, Done: b.off, Total: b.size})
		}
		if err == nil {
			return n, nil
		}
		if errors.Is(err, io.EOF) {
			if b.off >= b.size {
				return n, io.EOF
			}
			err = fmt.Errorf("connection ended after %d of %d bytes: %w", b.off, b.size, io.ErrUnexpectedEOF)
		}
		b.body.Close()
		b.body = nil
		if cerr := b.ctx.Err(); cerr != nil {
			return n, cerr
		}
		if !b.c.retryable(err) || b.failures+1 >= b.c.o.attempts {
			return n, fmt.Errorf("blob at byte %d: %w", b.off, err)
		}
		b.failures++
		b.c.o.log.Debug("blob download interrupted; resuming", slog.String("url", b.url), slog.Int64("offset", b.off), slog.String("error", err.Error()))
		if n > 0 {
			return n, nil
		}
	}
}

// open starts (or resumes) the download at b.off.
func (b *blobReader) open() error {
	for {
		if b.failures > 0 {
			if err := sleep(b.ctx, b.c.o.backoff<<(b.failures-1)); err != nil {
				return err
			}
		}
		err := b.try()
		if err == nil {
			return nil
		}
		if !b.c.retryable(err) || b.failures+1 >= b.c.o.attempts {
			return err
		}
		b.failures++
	}
}

func (b *blobReader) try() error {
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, b.url, nil)
	if err != nil {
		return err
	}
	if b.off > 0 && !b.noRange {
		// A closed range: some registries understand no other form.
		req.Header.Set("Range", "bytes="+strconv.FormatInt(b.off, 10)+"-"+strconv.FormatInt(b.size-1, 10))
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		if b.off == 0 || b.noRange {
			return fmt.Errorf("registry refused a whole-blob request with 416")
		}
		b.noRange = true
		return b.try()
	case http.StatusOK:
		if b.off > 0 {
			// The registry ignored Range: skip what we already have.
			if _, err := io.CopyN(io.Discard, resp.Body, b.off); err != nil {
				resp.Body.Close()
				return err
			}
		}
	case http.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		if !strings.HasPrefix(cr, "bytes "+strconv.FormatInt(b.off, 10)+"-") {
			resp.Body.Close()
			return fmt.Errorf("registry answered range %d- with Content-Range %q", b.off, cr)
		}
	default:
		defer resp.Body.Close()
		return transport.CheckError(resp, http.StatusOK, http.StatusPartialContent)
	}
	b.body = resp.Body
	return nil
}

func (b *blobReader) close() {
	if b.body != nil {
		b.body.Close()
		b.body = nil
	}
}

// Close implements io.Closer.
func (b *blobReader) Close() error {
	b.close()
	return nil
}
