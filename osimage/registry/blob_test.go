package registry_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
	"github.com/debvisor/debvisor/osimage/registry/registrytest"
)

// TestBlob: Release.Blob streams the slot blob as stored, resuming a
// download cut half-way, and refuses the compressed disk image (Copy is
// its reader).
func TestBlob(t *testing.T) {
	_, l := release(t, artifacttest.Spec{SlotSize: 4<<20 + 7})
	slot := "/blobs/" + l.Build.Slot.Digest
	reset := &registrytest.Fault{ResetAfter: 1 << 20, Times: 1,
		Match: func(r *http.Request) bool {
			return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, slot) && r.Header.Get("Range") == ""
		}}
	host, _ := inProcess(t, reset)
	c := client(t)
	s, v := key(t)
	d := pushSigned(t, c, host+"/debvisor/os:1", l, s)
	rel, err := c.Open(ctx(t), d, v)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rel.Blob(ctx(t), artifact.Slot)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(got); int64(len(got)) != l.Build.Slot.Size || "sha256:"+hex.EncodeToString(sum[:]) != l.Build.Slot.Digest {
		t.Fatalf("Blob read %d bytes hashing to sha256:%x; the slot is %d bytes, %s", len(got), sum, l.Build.Slot.Size, l.Build.Slot.Digest)
	}
	if reset.Hits.Load() != 1 {
		t.Fatal("the download was not cut: the resume was not exercised")
	}
	if _, err := rel.Blob(ctx(t), artifact.Disk); err == nil || !strings.Contains(err.Error(), "Copy") {
		t.Fatalf("Blob(disk) = %v, want a refusal pointing to Copy", err)
	}
}
