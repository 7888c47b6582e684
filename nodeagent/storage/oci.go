package storage

import (
	"context"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

// CreateFromOCI creates a volume holding the single layer of an OCI
// artifact, written as-is (a raw or qcow2 disk image pushed as a blob, not
// a tarball). capacity_bytes 0 means the blob's size. progress, when set,
// receives bytes done and total.
func (m *Manager) CreateFromOCI(ctx context.Context, spec *v1.Volume, ref string, insecure bool, progress func(done, total int64)) (*v1.Volume, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, Invalid("oci_reference", "%v", err)
	}
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		return nil, fault.Errorf(fault.FailedPrecondition, "oci_reference: fetch %s: %v", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fault.Errorf(fault.FailedPrecondition, "oci_reference: layers of %s: %v", ref, err)
	}
	if len(layers) != 1 {
		return nil, Invalid("oci_reference", "%s has %d layers; a volume artifact has exactly one (the disk image)", ref, len(layers))
	}
	size, err := layers[0].Size()
	if err != nil {
		return nil, fault.Errorf(fault.FailedPrecondition, "oci_reference: layer size: %v", err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		return nil, fault.Errorf(fault.FailedPrecondition, "oci_reference: open layer: %v", err)
	}
	defer rc.Close()
	var src io.Reader = rc
	if progress != nil {
		src = &progressReader{r: rc, total: size, f: progress}
	}
	out, err := m.Upload(ctx, spec, size, src)
	if err != nil {
		return nil, fmt.Errorf("fill from %s: %w", ref, err)
	}
	return out, nil
}

type progressReader struct {
	r     io.Reader
	done  int64
	total int64
	f     func(done, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	p.f(p.done, p.total)
	return n, err
}
