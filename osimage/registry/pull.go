package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/osimage/artifact"
)

// PullToDir writes artifacts of the release into dir the way a build
// output directory holds them: the raw disk image under its build name
// (sparse), the slot as artifact.SlotFile, and manifest.json. All
// manifests are read and checked before the first byte is written;
// content goes to hidden partial files that are renamed into place only
// when everything verified, so on any error dir is left as it was. It
// returns the paths written.
func (r *Release) PullToDir(ctx context.Context, dir string, kinds ...artifact.Kind) ([]string, error) {
	if len(kinds) == 0 {
		return nil, errors.New("pull: no artifact kinds")
	}
	arts := make([]*Artifact, 0, len(kinds))
	for _, k := range kinds {
		a, err := r.Artifact(ctx, k)
		if err != nil {
			return nil, err
		}
		if len(arts) > 0 && !bytes.Equal(a.BuildJSON, arts[0].BuildJSON) {
			return nil, fmt.Errorf("%s: the %s and %s artifacts carry different build manifests", r.Ref, arts[0].Kind, k)
		}
		arts = append(arts, a)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	var partials []string
	publish := map[string]string{}
	fail := func(err error) ([]string, error) {
		for _, p := range partials {
			os.Remove(p)
		}
		return nil, err
	}
	for _, a := range arts {
		final, err := finalName(dir, a)
		if err != nil {
			return fail(err)
		}
		partial := filepath.Join(dir, "."+filepath.Base(final)+".partial")
		partials = append(partials, partial)
		if err := r.pullFile(ctx, a, partial); err != nil {
			return fail(err)
		}
		publish[partial] = final
	}
	mPartial := filepath.Join(dir, "."+osimage.ManifestFile+".partial")
	partials = append(partials, mPartial)
	if err := writeSynced(mPartial, arts[0].BuildJSON); err != nil {
		return fail(err)
	}
	publish[mPartial] = filepath.Join(dir, osimage.ManifestFile)
	var out []string
	for _, p := range partials {
		if err := os.Rename(p, publish[p]); err != nil {
			return fail(fmt.Errorf("pull: publish %s: %w", publish[p], err))
		}
		out = append(out, publish[p])
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() //nolint:errcheck // best effort: the renames are durable on the next sync anyway
		d.Close()
	}
	return out, nil
}

func finalName(dir string, a *Artifact) (string, error) {
	if a.Kind == artifact.Slot {
		return filepath.Join(dir, artifact.SlotFile), nil
	}
	f, err := artifact.RawFile(a.Build)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, f.Name), nil
}

func (r *Release) pullFile(ctx context.Context, a *Artifact, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	defer f.Close()
	sw := &sparseWriter{f: f}
	if _, err := r.Copy(ctx, a.Kind, sw); err != nil {
		return err
	}
	if err := f.Truncate(sw.off); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	return f.Close()
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// sparseWriter writes sequentially but leaves all-zero 64 KiB runs as
// holes: a raw image is mostly zeros. The caller truncates to the final
// offset.
type sparseWriter struct {
	f   *os.File
	off int64
}

const sparseBlock = 64 << 10

var zeroBlock = make([]byte, sparseBlock)

func (s *sparseWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		seg := p
		if len(seg) > sparseBlock {
			seg = seg[:sparseBlock]
		}
		if !bytes.Equal(seg, zeroBlock[:len(seg)]) {
			if _, err := s.f.WriteAt(seg, s.off); err != nil {
				return n, err
			}
		}
		s.off += int64(len(seg))
		n += len(seg)
		p = p[len(seg):]
	}
	return n, nil
}
