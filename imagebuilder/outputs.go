package imagebuilder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/debvisor/debvisor/osimage"
)

// outputs converts the raw image to qcow2, writes the manifest and only then
// renames all three into place, so a failed build leaves none of them.
func (b *builder) outputs(ctx context.Context, rawPartial string, slot slotInfo, l layout, res *Result) (string, error) {
	m := &osimage.Manifest{
		Version: b.spec.Version, SpecDigest: b.digest, SourceDateEpoch: b.epoch,
		Architecture: Architecture, Kernel: b.kernel,
		DiskSize: l.total, DiskGUID: l.guid,
		Slot: osimage.ManifestSlot{Compression: b.spec.Compression, Size: slot.size, Digest: slot.digest},
	}
	for _, p := range l.parts {
		m.Partitions = append(m.Partitions, osimage.ManifestPartition{Number: p.num, Label: p.label, Type: p.typ, GUID: p.guid, Start: p.start, Size: p.size})
	}
	final := map[string]string{rawPartial: filepath.Join(b.outDir, RawName)}
	rawDigest, err := fileDigest(rawPartial)
	if err != nil {
		return "", err
	}
	m.Files = append(m.Files, osimage.ManifestFileEntry{Name: RawName, Size: l.total, Digest: rawDigest})
	if b.opts.qcow2 {
		qPartial := filepath.Join(b.outDir, "."+QcowName+partialSf)
		b.partials = append(b.partials, qPartial)
		os.Remove(qPartial)
		if err := b.cmd(ctx, nil, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", rawPartial, qPartial); err != nil {
			return "", fmt.Errorf("qcow2: %w", err)
		}
		st, err := os.Stat(qPartial)
		if err != nil {
			return "", err
		}
		qd, err := fileDigest(qPartial)
		if err != nil {
			return "", err
		}
		m.Files = append(m.Files, osimage.ManifestFileEntry{Name: QcowName, Size: st.Size(), Digest: qd})
		final[qPartial] = filepath.Join(b.outDir, QcowName)
		res.Qcow2 = final[qPartial]
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", err
	}
	mPartial := filepath.Join(b.outDir, "."+osimage.ManifestFile+partialSf)
	b.partials = append(b.partials, mPartial)
	if err := os.WriteFile(mPartial, append(mb, '\n'), 0o644); err != nil {
		return "", err
	}
	final[mPartial] = filepath.Join(b.outDir, osimage.ManifestFile)
	for _, from := range sortedKeys(final) {
		if err := os.Rename(from, final[from]); err != nil {
			return "", fmt.Errorf("publish %s: %w", final[from], err)
		}
	}
	res.Raw, res.ManifestPath, res.Manifest = final[rawPartial], final[mPartial], m
	return rawDigest, nil
}

func fileDigest(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("digest %s: %w", p, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
