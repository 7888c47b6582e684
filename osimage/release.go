package osimage

import (
	"fmt"
	"strconv"
	"strings"
)

// ReleaseFile is where the image builder records, in each slot's read-only
// root, what was built; inspect and the agent read it (path relative to /).
const ReleaseFile = "usr/lib/debvisor/release"

// SlotCmdlineFile is the GRUB script fragment each slot carries with its
// own kernel arguments (`set slot_cmdline="..."`): grub.cfg sources it from
// the slot it boots, so an upgrade brings its command line with it.
const SlotCmdlineFile = "boot/debvisor/cmdline.cfg"

// Arch is the only architecture DebVisor builds (Debian's name).
const Arch = "amd64"

// Release is the content of ReleaseFile: KEY=value lines.
type Release struct {
	// Version is the DebVisor OS version the spec declared.
	Version string
	// SpecDigest is the sha256 of the canonical spec and its files.
	SpecDigest string
	// SourceDateEpoch is the build's timestamp (seconds since 1970).
	SourceDateEpoch int64
	// Arch is the Debian architecture of the slot ("amd64"); empty in
	// slots built before it was recorded.
	Arch string
}

// Marshal renders the release file.
func (r Release) Marshal() []byte {
	b := fmt.Appendf(nil, "VERSION=%s\nSPEC_DIGEST=%s\nSOURCE_DATE_EPOCH=%d\n", r.Version, r.SpecDigest, r.SourceDateEpoch)
	if r.Arch != "" {
		b = fmt.Appendf(b, "ARCH=%s\n", r.Arch)
	}
	return b
}

// ParseRelease reads a release file. Unknown keys are ignored (later
// builders may add some); a file without VERSION is an error.
func ParseRelease(data []byte) (Release, error) {
	var r Release
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return Release{}, fmt.Errorf("release line %d: %q is not KEY=value", i+1, line)
		}
		switch k {
		case "VERSION":
			r.Version = v
		case "SPEC_DIGEST":
			r.SpecDigest = v
		case "ARCH":
			r.Arch = v
		case "SOURCE_DATE_EPOCH":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return Release{}, fmt.Errorf("release line %d: SOURCE_DATE_EPOCH: %w", i+1, err)
			}
			r.SourceDateEpoch = n
		}
	}
	if r.Version == "" {
		return Release{}, fmt.Errorf("release file has no VERSION")
	}
	return r, nil
}
