package imagebuilder

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"text/template"

	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/templates"
)

// grubModules are built into BOOTX64.EFI (and, minus the EFI-only ones,
// into the BIOS core.img: grubBIOSModules). No module is loaded from disk at
// boot, so the ESP needs no grub/x86_64-efi directory and the binary alone
// defines the boot loader's behaviour.
var grubModules = []string{
	"part_gpt", "fat", "squash4", "xzio", "gzio", "linux", "normal", "configfile",
	"loadenv", "regexp", "probe", "test", "echo", "eval", "serial", "terminal",
	"sleep", "reboot", "halt", "efi_gop", "all_video",
}

// grubDir is where Debian's grub-efi-amd64-bin installs the modules.
const grubDir = "/usr/lib/grub/x86_64-efi"

// grubConfig holds the values grub.cfg.tmpl is rendered with.
type grubConfig struct {
	Timeout              int
	Cmdline              string
	EnvFile, EnvBackup   string
	PartA, PartB         int
	SlotKey, FallbackKey string
}

// RenderGrubCfg renders the ESP's grub/grub.cfg for a spec.
func RenderGrubCfg(s *Spec) ([]byte, error) {
	src, err := templates.FS.ReadFile("grub/grub.cfg.tmpl")
	if err != nil {
		return nil, err
	}
	t, err := template.New("grub.cfg").Option("missingkey=error").Parse(string(src))
	if err != nil {
		return nil, fmt.Errorf("grub.cfg template: %w", err)
	}
	var buf bytes.Buffer
	err = t.Execute(&buf, grubConfig{
		Timeout: s.BootTimeout, Cmdline: s.KernelCmdline,
		EnvFile: osimage.ESPGrubEnv, EnvBackup: osimage.ESPGrubEnvBackup,
		PartA: osimage.PartA, PartB: osimage.PartB,
		SlotKey: osimage.CmdlineSlot, FallbackKey: osimage.CmdlineFallback,
	})
	if err != nil {
		return nil, fmt.Errorf("grub.cfg template: %w", err)
	}
	return buf.Bytes(), nil
}

// grubEFI builds the standalone GRUB EFI binary from Debian's modules with
// grub-mkimage (deterministic, unlike grub-mkstandalone's memdisk tar).
func (b *builder) grubEFI(ctx context.Context) ([]byte, error) {
	img, err := b.grubImage(ctx, "x86_64-efi", grubDir, "BOOTX64.EFI", grubModules, nil)
	if err != nil {
		return nil, fmt.Errorf("grub EFI image: %w", err)
	}
	return img, nil
}

// grubImage runs grub-mkimage for one platform with templates/grub/early.cfg
// embedded (after the named platform preamble templates, if any), so the EFI
// binary and the BIOS core.img find grub.cfg the same way, and returns the
// image.
func (b *builder) grubImage(ctx context.Context, format, modDir, name string, modules, preambles []string) ([]byte, error) {
	var early []byte
	for _, t := range append(preambles, "grub/early.cfg") {
		c, err := templates.FS.ReadFile(t)
		if err != nil {
			return nil, err
		}
		early = append(early, embeddedConfig(c)...)
	}
	cfg := filepath.Join(b.work, name+".cfg")
	if err := os.WriteFile(cfg, early, 0o644); err != nil {
		return nil, err
	}
	out := filepath.Join(b.work, name)
	args := append([]string{"-O", format, "-d", modDir, "-o", out, "-c", cfg, "-p", "/grub"}, modules...)
	if err := b.cmd(ctx, nil, "grub-mkimage", args...); err != nil {
		return nil, err
	}
	return os.ReadFile(out)
}

// embeddedConfig drops comment and blank lines from a config to embed.
// GRUB runs an embedded config with its rescue parser, before normal mode's
// script engine: "#" is an unknown command there, and an apostrophe in a
// comment opens a quote that swallows the following lines (on i386-pc this
// left GRUB at a grub> prompt). The templates keep their comments for
// people; the image gets the commands only.
func embeddedConfig(src []byte) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(src, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' {
			continue
		}
		out = append(out, t...)
		out = append(out, '\n')
	}
	return out
}
