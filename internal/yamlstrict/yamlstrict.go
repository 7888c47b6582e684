// Package yamlstrict owns strict YAML decoding for every DebVisor file
// format: unknown keys are errors, errors name the line and column, and a
// panic inside the YAML library (goccy/go-yaml v1.19.2 panics on some
// malformed tagged input, found by fuzzing) becomes an error instead of
// crashing the agent or a CLI.
package yamlstrict

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/goccy/go-yaml"
)

// Decode decodes one YAML document from data into v, refusing unknown keys
// and duplicate keys.
func Decode(data []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed YAML: the parser failed on this input (%v)", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data), yaml.DisallowUnknownField(), yaml.Strict())
	if err := dec.Decode(v); err != nil {
		return errors.New(yaml.FormatError(err, false, true))
	}
	return nil
}
