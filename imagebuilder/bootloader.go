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

// grubModules are built into BOOTX64.EFI. No module is loaded from disk at
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
	early, err := templates.FS.ReadFile("grub/early.cfg")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(b.work, "early.cfg")
	if err := os.WriteFile(cfg, early, 0o644); err != nil {
		return nil, err
	}
	out := filepath.Join(b.work, "BOOTX64.EFI")
	args := append([]string{"-O", "x86_64-efi", "-d", grubDir, "-o", out, "-c", cfg, "-p", "/grub"}, grubModules...)
	if err := b.cmd(ctx, nil, "grub-mkimage", args...); err != nil {
		return nil, fmt.Errorf("grub EFI image: %w", err)
	}
	return os.ReadFile(out)
}
