package imagebuilder

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
)

// TestMakeSeedCluster: a preseed that bootstraps a cluster with a CA made
// beforehand carries the CA files on the seed volume; a missing one fails
// and leaves nothing behind.
func TestMakeSeedCluster(t *testing.T) {
	dir := t.TempDir()
	ps := filepath.Join(dir, "preseed.yaml")
	for name, c := range map[string]string{
		"preseed.yaml": "version: 1\ncluster:\n  bootstrap: true\n  token: abcdef.0123456789abcdef\n  ca: ca/ca.crt\n  ca_key: ca/ca.key\n",
		"ca/ca.crt":    "CA", "ca/ca.key": "KEY",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "seed.iso")
	if err := MakeSeed(ps, out); err != nil {
		t.Fatal(err)
	}
	d, err := diskfs.Open(out, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(0)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"/preseed.yaml": "cluster:", "/ca/ca.crt": "CA", "/ca/ca.key": "KEY"} {
		var got []byte
		f, err := fs.OpenFile(name, os.O_RDONLY)
		if err == nil {
			got, err = io.ReadAll(f)
		}
		if err != nil || !strings.Contains(string(got), want) {
			t.Errorf("%s on the seed: %q, %v", name, got, err)
		}
	}

	if err := os.Remove(filepath.Join(dir, "ca/ca.key")); err != nil {
		t.Fatal(err)
	}
	out2 := filepath.Join(dir, "seed2.iso")
	if err := MakeSeed(ps, out2); err == nil || !strings.Contains(err.Error(), "ca.key") {
		t.Fatalf("MakeSeed without the CA key: %v", err)
	}
	if _, err := os.Stat(out2); err == nil {
		t.Fatal("a failed MakeSeed left a seed behind")
	}
}
