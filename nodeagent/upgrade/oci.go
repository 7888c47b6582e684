package upgrade

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/debvisor/debvisor/nodeagent/fault"
	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/registry"
	"github.com/debvisor/debvisor/osimage/signature"
)

// RegistrySource resolves references in OCI registries (osimage/registry):
// a release index whose signature one of the node's trusted keys made, and
// in it the slot artifact. Nothing but the index and manifests is read
// before the signature verified; the slot blob is streamed and checked
// against the signed digest as the slot writer consumes it.
type RegistrySource struct {
	Client   *registry.Client
	Verifier *signature.Verifier
}

// Resolve implements Source.
func (s RegistrySource) Resolve(ctx context.Context, ref string) (*Artifact, error) {
	r, err := s.Client.ParseReference(ref)
	if err != nil {
		return nil, fault.Invalidf("ref", "%v", err)
	}
	rel, err := s.Client.Open(ctx, r, s.Verifier)
	if err != nil {
		return nil, classify(err)
	}
	a, err := rel.Artifact(ctx, artifact.Slot)
	if err != nil {
		return nil, classify(err)
	}
	return &Artifact{
		Ref:     rel.Ref.String(),
		Digest:  a.Layer.Digest.String(),
		Size:    a.Layer.Size,
		Version: a.Metadata.Version,
		Arch:    a.Metadata.Architecture,
		// The slot writer checks the blob against Digest and Size as it
		// writes: the registry's own check would hash it a second time.
		Open: func(ctx context.Context) (io.ReadCloser, error) {
			rc, err := rel.Blob(ctx, artifact.Slot)
			if err != nil {
				return nil, classify(err)
			}
			return classifyingReader{rc}, nil
		},
	}, nil
}

// classifyingReader gives a failed blob read its kind, as Resolve's errors.
type classifyingReader struct{ io.ReadCloser }

func (c classifyingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = classify(err)
	}
	return n, err
}

// classify gives registry and signature failures their kinds: a missing or
// wrong signature or a tampered release is a precondition the node refuses,
// an unreachable registry is Unavailable.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var terr *transport.Error
	var nerr net.Error
	var operr *net.OpError
	switch {
	case errors.Is(err, signature.ErrNoSignature), errors.Is(err, signature.ErrUnknownKey), errors.Is(err, signature.ErrInvalidSignature):
		return fault.Errorf(fault.FailedPrecondition, "refused: %w", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fault.Wrap(err, "registry")
	case errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound:
		return fault.Errorf(fault.NotFound, "%w", err)
	case errors.As(err, &terr) && terr.StatusCode >= 500:
		return fault.Errorf(fault.Unavailable, "%w", err)
	case errors.As(err, &operr), errors.As(err, &nerr):
		return fault.Errorf(fault.Unavailable, "registry unreachable: %w", err)
	}
	return fault.Errorf(fault.FailedPrecondition, "%w", err)
}
