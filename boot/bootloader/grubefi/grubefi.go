// Package grubefi owns DebVisor's UEFI boot path: GRUB for x86_64-efi
// built by grub-mkimage from Debian's grub-efi-amd64-bin modules with
// templates/grub/early.cfg embedded, installed as the removable-media
// loader EFI/BOOT/BOOTX64.EFI on the ESP (no NVRAM boot entry is needed).
// Under UEFI $cmdpath is (hd0,gpt1)/EFI/BOOT; the firmware console already
// reaches the serial port, so no serial terminal is added.
package grubefi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/debvisor/debvisor/boot/bootloader"
	"github.com/debvisor/debvisor/boot/bootloader/grub"
	"github.com/debvisor/debvisor/osimage"
)

// ModuleDir is where Debian's grub-efi-amd64-bin installs the modules.
const ModuleDir = "/usr/lib/grub/x86_64-efi"

// Bootloader is GRUB x86_64-efi.
type Bootloader struct {
	log       *slog.Logger
	workDir   string
	moduleDir string
	image     []byte
}

var _ bootloader.Bootloader = (*Bootloader)(nil)

// Option configures a Bootloader.
type Option func(*Bootloader)

// WithLogger receives grub-mkimage's output at debug level.
func WithLogger(l *slog.Logger) Option { return func(b *Bootloader) { b.log = l } }

// WithWorkDir sets where grub-mkimage's scratch files go.
func WithWorkDir(dir string) Option { return func(b *Bootloader) { b.workDir = dir } }

// WithModuleDir overrides ModuleDir.
func WithModuleDir(dir string) Option { return func(b *Bootloader) { b.moduleDir = dir } }

// New returns the UEFI boot loader.
func New(opts ...Option) *Bootloader {
	b := &Bootloader{log: slog.New(slog.NewTextHandler(io.Discard, nil)), moduleDir: ModuleDir}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Name implements bootloader.Bootloader.
func (b *Bootloader) Name() string { return "grub-x86_64-efi" }

// Image builds BOOTX64.EFI once and returns it.
func (b *Bootloader) Image(ctx context.Context) ([]byte, error) {
	if b.image != nil {
		return b.image, nil
	}
	img, err := grub.MkImage(ctx, grub.Image{Format: "x86_64-efi", ModuleDir: b.moduleDir, Modules: grub.Modules},
		grub.WithLogger(b.log), grub.WithWorkDir(b.workDir))
	if err != nil {
		return nil, fmt.Errorf("grub EFI image: %w", err)
	}
	b.image = img
	return img, nil
}

// Prepare builds BOOTX64.EFI; it needs nothing of the target.
func (b *Bootloader) Prepare(ctx context.Context, _ bootloader.Target) error {
	_, err := b.Image(ctx)
	return err
}

// Install writes EFI/BOOT/BOOTX64.EFI onto the target's ESP.
func (b *Bootloader) Install(ctx context.Context, t bootloader.Target) error {
	if t.ESP == nil {
		return errors.New("install GRUB EFI: the target has no ESP")
	}
	img, err := b.Image(ctx)
	if err != nil {
		return err
	}
	if err := t.ESP.WriteFile(ctx, osimage.ESPBootloader, img); err != nil {
		return fmt.Errorf("install GRUB EFI: write %s: %w", osimage.ESPBootloader, err)
	}
	return nil
}

// Configure writes grub/grub.cfg (grub.Configure).
func (b *Bootloader) Configure(ctx context.Context, t bootloader.Target, c bootloader.Config) error {
	return grub.Configure(ctx, t, c)
}

// Check reads back the loader and grub.cfg from the ESP: both must be
// there and non-empty, and the loader must be a PE image ("MZ").
func (b *Bootloader) Check(ctx context.Context, t bootloader.Target) (bootloader.Status, error) {
	if t.ESP == nil {
		return bootloader.Status{}, errors.New("the target has no ESP")
	}
	var errs []error
	for _, f := range []string{osimage.ESPBootloader, osimage.ESPGrubCfg} {
		data, err := t.ESP.ReadFile(ctx, f)
		switch {
		case err != nil || len(data) == 0:
			errs = append(errs, fmt.Errorf("%s missing or empty", f))
		case f == osimage.ESPBootloader && !bytes.HasPrefix(data, []byte("MZ")):
			errs = append(errs, fmt.Errorf("%s is not an EFI (PE) executable", f))
		}
	}
	if len(errs) > 0 {
		return bootloader.Status{}, errors.Join(errs...)
	}
	return bootloader.Status{Summary: fmt.Sprintf("efi: %s and %s present", osimage.ESPBootloader, osimage.ESPGrubCfg)}, nil
}
