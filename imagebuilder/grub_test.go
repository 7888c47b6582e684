package imagebuilder

import (
	"bytes"
	_ "embed"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/debvisor/debvisor/templates"
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

// TestEmbeddedConfig: the configs embedded in BOOTX64.EFI and core.img
// reach GRUB's rescue parser without comments (an apostrophe in one opened
// a quote that swallowed the commands after it) and with every command.
func TestEmbeddedConfig(t *testing.T) {
	got := string(embeddedConfig([]byte("# GRUB's comment\n\nserial --unit=0\n  # indented 'comment\nregexp --set=1:disk '^\\(([^,)]+)' \"$cmdpath\"\nconfigfile (hd0,gpt1)/grub/grub.cfg")))
	want := "serial --unit=0\nregexp --set=1:disk '^\\(([^,)]+)' \"$cmdpath\"\nconfigfile (hd0,gpt1)/grub/grub.cfg\n"
	if got != want {
		t.Fatalf("embeddedConfig:\n%q\nwant\n%q", got, want)
	}
	for _, f := range []string{"grub/early.cfg", "grub/early-bios.cfg"} {
		src, err := templates.FS.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(embeddedConfig(src)), "\n") {
			if strings.ContainsAny(line, "#") || strings.HasPrefix(line, "if ") || line == "fi" {
				t.Errorf("%s: %q cannot run in GRUB's rescue parser", f, line)
			}
		}
	}
}
