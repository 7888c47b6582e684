package vm

import (
	"crypto/rand"
	"fmt"
	"strings"
)

// ParseMAC parses a NIC MAC address in the colon form libvirt uses
// ("52:54:00:12:34:56", either case) and returns it lower-cased. Multicast
// and all-zero addresses are refused: a guest NIC needs a unicast address.
func ParseMAC(s string) (string, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return "", fmt.Errorf("%q is not a MAC address (want six hex octets separated by colons, e.g. 52:54:00:12:34:56)", s)
	}
	var b [6]byte
	for i, p := range parts {
		if len(p) != 2 {
			return "", fmt.Errorf("%q is not a MAC address: octet %d %q is not two hex digits", s, i+1, p)
		}
		var v byte
		for _, c := range []byte(p) {
			var d byte
			switch {
			case c >= '0' && c <= '9':
				d = c - '0'
			case c >= 'a' && c <= 'f':
				d = c - 'a' + 10
			case c >= 'A' && c <= 'F':
				d = c - 'A' + 10
			default:
				return "", fmt.Errorf("%q is not a MAC address: %q is not a hex digit", s, c)
			}
			v = v<<4 | d
		}
		b[i] = v
	}
	if b[0]&1 == 1 {
		return "", fmt.Errorf("%q is a multicast address; a NIC needs a unicast one (first octet even)", s)
	}
	if b == [6]byte{} {
		return "", fmt.Errorf("%q is the all-zero address", s)
	}
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]), nil
}

// RandomMAC returns an address in QEMU's locally administered 52:54:00 range.
func RandomMAC() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}
