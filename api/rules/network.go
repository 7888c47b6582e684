package rules

import (
	"fmt"
	"slices"
	"strings"
)

// BondModes are the kernel's bonding modes by the names the kernel,
// iproute2 and systemd-networkd all use.
var BondModes = []string{"balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"}

// MaxMiimonMs bounds a bond's MII monitoring interval (a minute is already
// far too slow to notice a dead link).
const MaxMiimonMs = 60000

// MinMTU and MaxMTU bound an interface MTU (IPv4's minimum; the largest
// jumbo frame any driver takes).
const (
	MinMTU = 68
	MaxMTU = 65535
)

// CheckVLANID validates an 802.1Q VLAN id.
func CheckVLANID(id uint32) error {
	if id < 1 || id > MaxVLAN {
		return fmt.Errorf("%d is not a VLAN id (1-%d; 0 means untagged and 4095 is reserved)", id, MaxVLAN)
	}
	return nil
}

// CheckBondMode validates a bonding mode name.
func CheckBondMode(mode string) error {
	if !slices.Contains(BondModes, mode) {
		return fmt.Errorf("%q is not a bonding mode (one of %s)", mode, strings.Join(BondModes, ", "))
	}
	return nil
}

// CheckMTU validates an MTU; 0 means "leave as it is".
func CheckMTU(mtu uint32) error {
	if mtu != 0 && (mtu < MinMTU || mtu > MaxMTU) {
		return fmt.Errorf("%d is not an MTU (%d-%d, or 0 to leave it)", mtu, MinMTU, MaxMTU)
	}
	return nil
}
