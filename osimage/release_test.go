package osimage

import (
	"strings"
	"testing"
)

func TestReleaseRoundTrip(t *testing.T) {
	in := Release{Version: "0.1.0", SpecDigest: "sha256:abc", SourceDateEpoch: 1700000000}
	out, err := ParseRelease(in.Marshal())
	if err != nil || out != in {
		t.Fatalf("round trip: %+v, %v; want %+v", out, err, in)
	}
}

func TestParseReleaseErrors(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"empty", "", "no VERSION"},
		{"no version", "SPEC_DIGEST=x\n", "no VERSION"},
		{"not key=value", "VERSION=1\ngarbage\n", "line 2"},
		{"bad epoch", "VERSION=1\nSOURCE_DATE_EPOCH=soon\n", "SOURCE_DATE_EPOCH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRelease([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func FuzzParseRelease(f *testing.F) {
	f.Add(Release{Version: "1", SpecDigest: "d", SourceDateEpoch: 2}.Marshal())
	f.Add([]byte("VERSION=\n=\n#x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRelease(data)
		if err != nil {
			return
		}
		if strings.ContainsAny(r.Version, "\n") || strings.ContainsAny(r.SpecDigest, "\n") {
			return // not representable; Marshal is only fed builder values
		}
		back, err := ParseRelease(r.Marshal())
		if err != nil || back != r {
			t.Fatalf("re-parse of %+v: %+v, %v", r, back, err)
		}
	})
}
