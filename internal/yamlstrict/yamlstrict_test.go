package yamlstrict

import (
	"strings"
	"testing"
)

type doc struct {
	Name  string   `yaml:"name"`
	Items []string `yaml:"items"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"name: a\nitems: [x]\n", ""},
		{"name: a\nnam: b\n", "[2:1] unknown field \"nam\""},
		{"name: a\nname: b\n", "already defined at [1:1]"},
		{"items: !00000 0000000000000", "malformed YAML"}, // panicked inside the library
		{"name: [", "["},
	}
	for _, tt := range tests {
		var d doc
		err := Decode([]byte(tt.in), &d)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("Decode(%q) = %v", tt.in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Decode(%q) = %v, want %q", tt.in, err, tt.wantErr)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("name: a\nitems: [x, y]\n"))
	f.Add([]byte("items: !00000 0000000000000"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d doc
		_ = Decode(data, &d) // must not panic
	})
}
