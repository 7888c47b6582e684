package storage

import (
	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

// Invalid is an Invalid error in the API's "field: message" form.
func Invalid(field, format string, args ...any) error {
	return fault.Invalidf(field, format, args...)
}

// CheckName validates a pool, volume or VM name (rules.CheckName) and
// names the field when it is refused.
func CheckName(field, name string) error {
	if err := rules.CheckName(name); err != nil {
		return Invalid(field, "%w", err)
	}
	return nil
}

// CheckSize validates a volume size in bytes.
func CheckSize(field string, n int64, allowZero bool) error {
	switch {
	case n < 0:
		return Invalid(field, "must not be negative (got %d)", n)
	case n == 0 && !allowZero:
		return Invalid(field, "must be positive")
	case n > rules.MaxVolumeBytes:
		return Invalid(field, "%d bytes is more than the %s maximum", n, rules.FormatSize(rules.MaxVolumeBytes))
	}
	return nil
}
