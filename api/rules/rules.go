// Package rules owns the API's input rules that clients and the agent must
// agree on: object names, host names, size units and the limits a single
// node accepts. The agent enforces them; dvctl, the Terraform provider and
// the image builder check the same rules early so a typo fails at parse or
// plan time instead of half-way through an apply.
//
// It is hand-written, lives beside the generated API code, and imports
// nothing of the project (internal/archtest enforces that).
package rules

import (
	"errors"
	"fmt"
	"regexp"
)

// Limits a single node accepts. Anything bigger is a typo, not a plan.
const (
	// MaxVolumeBytes is the largest volume (64 TiB).
	MaxVolumeBytes int64 = 64 << 40
	MaxVCPUs             = 256
	MinMemoryMiB         = 16
	MaxMemoryMiB         = 4 << 20 // 4 TiB
	MaxDisks             = 24
	MaxNICs              = 16
	// MaxInterfaceName is Linux's IFNAMSIZ minus the terminating NUL.
	MaxInterfaceName = 15
	// MaxVLAN is the highest usable 802.1Q id; 0 means untagged and 4095 is
	// reserved.
	MaxVLAN = 4094
)

// NamePattern is the rule for pool, volume and VM names: 1-64 characters of
// letters, digits, '.', '_' and '-', starting with a letter or digit. Names
// become file names and libvirt object names, so no '/', no leading '.'.
const NamePattern = `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`

// NameRule says NamePattern in words, for error messages and docs.
const NameRule = "1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"

var nameRE = regexp.MustCompile(NamePattern)

// NameRE returns the compiled NamePattern (for schema validators).
func NameRE() *regexp.Regexp { return nameRE }

// CheckName validates an object name.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("must not be empty")
	case !nameRE.MatchString(name):
		return fmt.Errorf("%q is not a valid name (%s)", name, NameRule)
	}
	return nil
}

// CheckRequestID validates a client's request id (CreateVM and friends):
// the same characters as names, so it can be stored in libvirt metadata and
// logs as is. Empty is allowed (no retry protection).
func CheckRequestID(id string) error {
	if id != "" && !nameRE.MatchString(id) {
		return fmt.Errorf("%q is not a valid request id (%s; a UUID is fine)", id, NameRule)
	}
	return nil
}

// CheckHostname validates a host name label (RFC 1123): 1-63 letters,
// digits and '-', not starting or ending with '-'.
func CheckHostname(h string) error {
	if h == "" {
		return errors.New("must not be empty")
	}
	if len(h) > 63 {
		return fmt.Errorf("%q is longer than 63 characters", h)
	}
	for i, r := range h {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (r == '-' && i > 0 && i < len(h)-1)
		if !ok {
			return fmt.Errorf("%q is not a valid host name (1-63 of a-z 0-9 -, not starting or ending with -)", h)
		}
	}
	return nil
}

// CheckInterfaceName validates a Linux network interface name.
func CheckInterfaceName(n string) error {
	if err := CheckName(n); err != nil || len(n) > MaxInterfaceName {
		return fmt.Errorf("%q is not an interface name (1-%d characters of %s)", n, MaxInterfaceName, NameRule)
	}
	return nil
}
