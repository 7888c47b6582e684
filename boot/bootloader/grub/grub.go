// Package grub owns what DebVisor's two GRUB boot paths (grubefi and
// grubpc) share: grub.cfg rendered from templates/grub/grub.cfg.tmpl (the
// A/B choice with boot counting), the early config embedded into every GRUB
// image, the module list, and running grub-mkimage.
package grub

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/debvisor/debvisor/boot/bootloader"
	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/templates"
)

// Modules are built into BOOTX64.EFI (and, minus the EFI-only ones and
// plus biosdisk, into the BIOS core.img). No module is loaded from disk at
// boot, so the ESP needs no grub/x86_64-efi directory and the binary alone
// defines the boot loader's behaviour.
var Modules = []string{
	"part_gpt", "fat", "squash4", "xzio", "gzio", "linux", "normal", "configfile",
	"loadenv", "regexp", "probe", "test", "echo", "eval", "serial", "terminal",
	"sleep", "reboot", "halt", "efi_gop", "all_video",
}

// configValues holds the values grub.cfg.tmpl is rendered with.
type configValues struct {
	Timeout              int
	Cmdline              string
	EnvFile, EnvBackup   string
	PartA, PartB         int
	SlotKey, FallbackKey string
}

// RenderConfig renders the ESP's grub/grub.cfg.
func RenderConfig(c bootloader.Config) ([]byte, error) {
	src, err := templates.FS.ReadFile("grub/grub.cfg.tmpl")
	if err != nil {
		return nil, err
	}
	t, err := template.New("grub.cfg").Option("missingkey=error").Parse(string(src))
	if err != nil {
		return nil, fmt.Errorf("grub.cfg template: %w", err)
	}
	var buf bytes.Buffer
	err = t.Execute(&buf, configValues{
		Timeout: c.Timeout, Cmdline: c.Cmdline,
		EnvFile: osimage.ESPGrubEnv, EnvBackup: osimage.ESPGrubEnvBackup,
		PartA: osimage.PartA, PartB: osimage.PartB,
		SlotKey: osimage.CmdlineSlot, FallbackKey: osimage.CmdlineFallback,
	})
	if err != nil {
		return nil, fmt.Errorf("grub.cfg template: %w", err)
	}
	return buf.Bytes(), nil
}

// Configure writes grub/grub.cfg onto the target's ESP; both GRUB
// implementations configure through it.
func Configure(ctx context.Context, t bootloader.Target, c bootloader.Config) error {
	if t.ESP == nil {
		return fmt.Errorf("configure GRUB: the target has no ESP")
	}
	cfg, err := RenderConfig(c)
	if err != nil {
		return err
	}
	if err := t.ESP.WriteFile(ctx, osimage.ESPGrubCfg, cfg); err != nil {
		return fmt.Errorf("write %s: %w", osimage.ESPGrubCfg, err)
	}
	return nil
}

// Image describes one grub-mkimage run.
type Image struct {
	// Format is grub-mkimage's -O: "x86_64-efi", "i386-pc".
	Format string
	// ModuleDir holds the platform's modules (Debian's grub-*-bin).
	ModuleDir string
	Modules   []string
	// Preambles are templates embedded before templates/grub/early.cfg.
	Preambles []string
}

// MkImageOption configures MkImage.
type MkImageOption func(*mkImageOptions)

type mkImageOptions struct {
	log     *slog.Logger
	workDir string
}

// WithLogger receives grub-mkimage's output at debug level.
func WithLogger(l *slog.Logger) MkImageOption { return func(o *mkImageOptions) { o.log = l } }

// WithWorkDir sets where grub-mkimage's scratch files go (default: the
// system's temporary directory).
func WithWorkDir(dir string) MkImageOption { return func(o *mkImageOptions) { o.workDir = dir } }

// MkImage runs grub-mkimage with templates/grub/early.cfg embedded (after
// the image's preambles), so the EFI binary and the BIOS core.img find
// grub.cfg the same way, and returns the image. grub-mkimage's output
// depends only on its inputs (unlike grub-mkstandalone's memdisk tar), so
// images are reproducible.
func MkImage(ctx context.Context, img Image, opts ...MkImageOption) ([]byte, error) {
	o := mkImageOptions{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, opt := range opts {
		opt(&o)
	}
	var early []byte
	for _, t := range append(append([]string(nil), img.Preambles...), "grub/early.cfg") {
		c, err := templates.FS.ReadFile(t)
		if err != nil {
			return nil, err
		}
		early = append(early, EmbeddedConfig(c)...)
	}
	dir, err := os.MkdirTemp(o.workDir, "grub-mkimage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "early.cfg")
	if err := os.WriteFile(cfg, early, 0o644); err != nil {
		return nil, err
	}
	out := filepath.Join(dir, "image")
	args := append([]string{"-O", img.Format, "-d", img.ModuleDir, "-o", out, "-c", cfg, "-p", "/grub"}, img.Modules...)
	cmd := exec.CommandContext(ctx, "grub-mkimage", args...)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("grub-mkimage %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(output.String()))
	}
	if output.Len() > 0 {
		o.log.DebugContext(ctx, "grub-mkimage", "format", img.Format, "output", output.String())
	}
	return os.ReadFile(out)
}

// EmbeddedConfig drops comment and blank lines from a config to embed.
// GRUB runs an embedded config with its rescue parser, before normal mode's
// script engine: "#" is an unknown command there, and an apostrophe in a
// comment opens a quote that swallows the following lines (on i386-pc this
// left GRUB at a grub> prompt). The templates keep their comments for
// people; the image gets the commands only.
func EmbeddedConfig(src []byte) []byte {
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
