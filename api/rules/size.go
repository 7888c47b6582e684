package rules

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$`)

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// ParseSize parses a size such as "512", "64MiB", "10G" or "1.5TB": bare
// numbers are bytes, single letters and "KiB"… are binary units (as qemu-img
// and virsh read them), "KB", "MB", "GB", "TB" are decimal. The result is
// exact bytes and never negative.
func ParseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size (examples: 1073741824, 512MiB, 10G, 1.5TB)", s)
	}
	mult, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s, m[2])
	}
	if !strings.Contains(m[1], ".") {
		n, err := strconv.ParseUint(m[1], 10, 63)
		if err != nil {
			return 0, fmt.Errorf("%q: number out of range", s)
		}
		if n > 0 && uint64(mult) > math.MaxInt64/n {
			return 0, fmt.Errorf("%q: size out of range", s)
		}
		return int64(n * uint64(mult)), nil
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	v := f * mult
	if v >= math.MaxInt64 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%q: size out of range", s)
	}
	return int64(v), nil
}

var binaryUnits = []struct {
	s string
	v int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}

// HumanSize renders bytes for people, rounded to one decimal in the
// largest binary unit not above them ("252.0GiB").
func HumanSize(n int64) string {
	for _, u := range binaryUnits {
		if n >= u.v {
			return strconv.FormatFloat(float64(n)/float64(u.v), 'f', 1, 64) + u.s
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// FormatSize renders bytes exactly, with the largest binary unit that
// divides them ("512MiB", "1536KiB", "1000B"); ParseSize reads it back.
func FormatSize(n int64) string {
	for _, u := range binaryUnits {
		if n != 0 && n%u.v == 0 {
			return strconv.FormatInt(n/u.v, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}
