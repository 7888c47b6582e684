package provider

import (
	"fmt"
	"regexp"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func positive(v int64) error {
	if v <= 0 {
		return fmt.Errorf("want > 0, got %d", v)
	}
	return nil
}
