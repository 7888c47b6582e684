package imagebuilder

import (
	"github.com/debvisor/debvisor/boot/bootloader"
	"github.com/debvisor/debvisor/boot/bootloader/grub"
)

// RenderGrubCfg renders the ESP's grub/grub.cfg for a spec
// (grub.RenderConfig with the spec's boot_timeout and kernel_cmdline).
func RenderGrubCfg(s *Spec) ([]byte, error) {
	return grub.RenderConfig(bootConfig(s))
}

func bootConfig(s *Spec) bootloader.Config {
	return bootloader.Config{Timeout: s.BootTimeout, Cmdline: s.KernelCmdline}
}
