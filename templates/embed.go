// Package templates owns the files the image builder bakes into every
// DebVisor image: systemd units and scripts (rootfs/, laid out as in the
// target tree), the GRUB configuration (grub/) and the initramfs hook that
// assembles the read-only root, the data partition and the overlays
// (initramfs/, installed before the initramfs is generated).
package templates

import "embed"

// FS holds rootfs/, grub/ and initramfs/.
//
//go:embed all:rootfs all:grub all:initramfs
var FS embed.FS

// Executables are the template files installed with mode 0755; everything
// else is 0644. embed.FS does not keep modes, so this list is the contract.
var Executables = map[string]bool{
	"rootfs/usr/local/sbin/debvisor-firstboot.sh":     true,
	"rootfs/usr/local/sbin/validate-components.sh":    true,
	"rootfs/usr/local/sbin/debvisor-netcfg.sh":        true,
	"initramfs/scripts/local-bottom/debvisor-overlay": true,
}

// Units lists the systemd units the image enables (by their [Install]
// sections), in the order they are enabled.
var Units = []string{
	"debvisor-rpcd.service",
	"debvisor-panel.service",
	"debvisor-firstboot.service",
	"debvisor-hostkeys.service",
	"debvisor-growdata.service",
	"debvisor-backup.timer",
	"tsig-rotate.timer",
	"systemd-networkd.service",
}
