package imagebuilder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

type slotInfo struct {
	path   string
	size   int64
	digest string
}

// squashfs makes the slot filesystem with mksquashfs: go-diskfs' writer
// cannot handle a real Debian tree (DESIGN.md). -reproducible sorts
// entries, and the fixed times make the bytes a function of the tree.
func (b *builder) squashfs(ctx context.Context) (slotInfo, error) {
	out := filepath.Join(b.work, "slot.squashfs")
	epoch := strconv.FormatInt(b.epoch, 10)
	args := MksquashfsArgs(b.tree, out, b.spec.Compression, epoch, b.opts.processors)
	if err := b.cmd(ctx, []string{noEpoch}, "mksquashfs", args...); err != nil {
		return slotInfo{}, err
	}
	// The tree is no longer needed; free the space before the disk is made.
	os.RemoveAll(b.tree)
	f, err := os.Open(out)
	if err != nil {
		return slotInfo{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return slotInfo{}, err
	}
	if n > int64(b.spec.SlotSize) {
		return slotInfo{}, fmt.Errorf("the slot filesystem is %d MiB but slot_size is %s: raise slot_size or drop packages", n>>20, b.spec.SlotSize)
	}
	return slotInfo{path: out, size: n, digest: "sha256:" + hex.EncodeToString(h.Sum(nil))}, nil
}

// MksquashfsArgs is the exact mksquashfs invocation the builder uses
// (exported so the benchmark runs the same command alone).
func MksquashfsArgs(tree, out, comp, epoch string, processors int) []string {
	return []string{tree, out, "-noappend", "-comp", comp, "-reproducible",
		"-mkfs-time", epoch, "-all-time", epoch, "-processors", strconv.Itoa(processors),
		"-no-progress", "-quiet"}
}
