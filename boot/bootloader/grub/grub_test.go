package grub

import (
	"bytes"
	"context"
	_ "embed"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/debvisor/debvisor/boot/bootloader"
	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/templates"
)

//go:embed testdata/grub.cfg.golden
var grubGolden []byte

var update = flag.Bool("update", false, "rewrite golden files")

// goldenConfig is the default image spec's boot_timeout and kernel_cmdline
// (imagebuilder/default.yaml); imagebuilder's TestGrubCfgDefaultSpec checks
// that the default spec still renders this file.
var goldenConfig = bootloader.Config{
	Timeout: 1,
	Cmdline: "console=tty1 console=ttyS0,115200n8 panic=10 systemd.show_status=1",
}

func TestGrubCfgGolden(t *testing.T) {
	got, err := RenderConfig(goldenConfig)
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

type memFiles map[string][]byte

func (m memFiles) ReadFile(_ context.Context, n string) ([]byte, error) { return m[n], nil }
func (m memFiles) WriteFile(_ context.Context, n string, d []byte) error {
	m[n] = d
	return nil
}

func TestConfigure(t *testing.T) {
	files := memFiles{}
	if err := Configure(context.Background(), bootloader.Target{ESP: files}, goldenConfig); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(files[osimage.ESPGrubCfg], grubGolden) {
		t.Fatalf("Configure wrote %q", files[osimage.ESPGrubCfg])
	}
	if err := Configure(context.Background(), bootloader.Target{}, goldenConfig); err == nil {
		t.Fatal("Configure without an ESP succeeded")
	}
}

// TestEmbeddedConfig: the configs embedded in BOOTX64.EFI and core.img
// reach GRUB's rescue parser without comments (an apostrophe in one opened
// a quote that swallowed the commands after it) and with every command.
func TestEmbeddedConfig(t *testing.T) {
	got := string(EmbeddedConfig([]byte("# GRUB's comment\n\nserial --unit=0\n  # indented 'comment\nregexp --set=1:disk '^\\(([^,)]+)' \"$cmdpath\"\nconfigfile (hd0,gpt1)/grub/grub.cfg")))
	want := "serial --unit=0\nregexp --set=1:disk '^\\(([^,)]+)' \"$cmdpath\"\nconfigfile (hd0,gpt1)/grub/grub.cfg\n"
	if got != want {
		t.Fatalf("EmbeddedConfig:\n%q\nwant\n%q", got, want)
	}
	for _, f := range []string{"grub/early.cfg", "grub/early-bios.cfg"} {
		src, err := templates.FS.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(EmbeddedConfig(src)), "\n") {
			if strings.ContainsAny(line, "#") || strings.HasPrefix(line, "if ") || line == "fi" {
				t.Errorf("%s: %q cannot run in GRUB's rescue parser", f, line)
			}
		}
	}
}
