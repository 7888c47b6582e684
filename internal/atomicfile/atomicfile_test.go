package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	for _, tt := range []struct {
		data string
		mode os.FileMode
	}{{"first\n", 0o600}, {"second, longer\n", 0o640}, {"", 0o644}} {
		if err := WriteFile(p, []byte(tt.data), tt.mode); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != tt.data {
			t.Fatalf("read back %q, %v; want %q", got, err, tt.data)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != tt.mode {
			t.Fatalf("mode %v, want %v", fi.Mode().Perm(), tt.mode)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left beside the file: %v", ents)
	}
}

func TestWriteFileMissingDirFailsCleanly(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing", "state.json")
	if err := WriteFile(p, []byte("x"), 0o600); err == nil {
		t.Fatal("no error for a missing directory")
	}
}
