package imagebuilder

import (
	"bytes"
	_ "embed"
	"flag"
	"os"
	"testing"
)

//go:embed testdata/grub.cfg.golden
var grubGolden []byte

var update = flag.Bool("update", false, "rewrite golden files")

func TestGrubCfgGolden(t *testing.T) {
	s, err := DefaultSpec()
	if err != nil {
		t.Fatal(err)
	}
	got, err := RenderGrubCfg(s)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("testdata/grub.cfg.golden", got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(got, grubGolden) {
		t.Fatalf("grub.cfg differs from testdata/grub.cfg.golden (go test -run TestGrubCfgGolden -update to accept):\n%s", got)
	}
}

func TestDerivedGUIDStable(t *testing.T) {
	a, b := derivedGUID("sha256:x", "disk"), derivedGUID("sha256:x", "disk")
	if a != b || a == derivedGUID("sha256:y", "disk") || a[14] != '4' {
		t.Fatalf("derived GUIDs: %s %s", a, b)
	}
}
