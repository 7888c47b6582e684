// Package osimage owns the on-disk contracts shared by the image builder
// (which writes them) and the node agent (which reads and updates them): the
// partition layout and labels, slot names, the kernel command-line keys, the
// ESP paths, the preseed format and the build manifest. The GRUB environment
// block with its boot counters is boot/bootenv's. It imports neither side.
package osimage

import (
	"fmt"
	"strings"
)

// Partition numbers are part of the boot contract: GRUB addresses slots as
// ($disk,gptN) because GRUB 2.06 cannot search by PARTLABEL. Never renumber.
const (
	PartESP  = 1
	PartA    = 2
	PartB    = 3
	PartData = 4
	// PartBIOS is the GPT "BIOS boot" partition holding GRUB's i386-pc
	// core.img for legacy BIOS boots. It is numbered after the original
	// four (which must keep their numbers) but lies physically first, in
	// the gap between the GPT entry array and the 1 MiB-aligned ESP, so the
	// data partition stays last on disk and firstboot can still grow it.
	PartBIOS = 5
)

// Partition labels (GPT names); Linux userland finds partitions by these
// through /dev/disk/by-partlabel.
const (
	LabelESP  = "debvisor-esp"
	LabelA    = "debvisor-a"
	LabelB    = "debvisor-b"
	LabelData = "debvisor-data"
	LabelBIOS = "debvisor-bios"
)

// GPT partition type GUIDs used by the layout.
const (
	TypeEFISystem       = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	TypeLinuxFilesystem = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	// TypeBIOSBoot marks the partition GRUB's boot.img loads core.img from
	// ("Hah!IdontNeedEFI"); it holds no filesystem.
	TypeBIOSBoot = "21686148-6449-6E6F-744E-656564454649"
)

// Slot names one of the two A/B system partitions.
type Slot string

const (
	SlotA Slot = "A"
	SlotB Slot = "B"
)

// Slots lists the slots in partition order.
var Slots = []Slot{SlotA, SlotB}

// ParseSlot accepts "A"/"B" in either case.
func ParseSlot(s string) (Slot, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "A":
		return SlotA, nil
	case "B":
		return SlotB, nil
	}
	return "", fmt.Errorf("unknown slot %q (want A or B)", s)
}

// Partition returns the GPT partition number holding the slot.
func (s Slot) Partition() int {
	if s == SlotB {
		return PartB
	}
	return PartA
}

// Label returns the GPT partition name of the slot.
func (s Slot) Label() string {
	if s == SlotB {
		return LabelB
	}
	return LabelA
}

// Other returns the slot an upgrade would write to.
func (s Slot) Other() Slot {
	if s == SlotA {
		return SlotB
	}
	return SlotA
}

// Kernel command-line keys GRUB sets so userland knows how it was booted.
const (
	// CmdlineSlot carries the booted slot: "debvisor.slot=A".
	CmdlineSlot = "debvisor.slot"
	// CmdlineFallback is "1" when GRUB found no slot with a clean boot
	// counter and booted the first bootable slot anyway.
	CmdlineFallback = "debvisor.fallback"
)

// CmdlineValue returns the value of key in a kernel command line (the last
// occurrence wins, as the kernel does) and whether it was present.
func CmdlineValue(cmdline, key string) (string, bool) {
	var val string
	var found bool
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		if k == key {
			val, found = strings.Trim(v, `"`), true
		}
	}
	return val, found
}

// BootedSlot returns "A" or "B" from a kernel command line such as the
// contents of /proc/cmdline, or "" when the system was not booted by the
// DebVisor boot loader (a development machine, a container).
func BootedSlot(cmdline string) string {
	v, ok := CmdlineValue(cmdline, CmdlineSlot)
	if !ok {
		return ""
	}
	s, err := ParseSlot(v)
	if err != nil {
		return ""
	}
	return string(s)
}

// Paths on the ESP (FAT32, partition 1), relative to its root.
const (
	ESPBootloader = "EFI/BOOT/BOOTX64.EFI"
	ESPGrubCfg    = "grub/grub.cfg"
	// The two copies of the GRUB environment block. GRUB and the agent write
	// both; a reader repairs a damaged one from the other.
	ESPGrubEnv       = "grub/grubenv"
	ESPGrubEnvBackup = "grub/grubenv.bak"
	// ESPPreseed is where a preseed may be placed when no seed volume is used.
	ESPPreseed = "debvisor/preseed.yaml"
)

// Mount points inside the running system.
const (
	// DataMount is where the initramfs mounts debvisor-data.
	DataMount = "/data"
	// OverlayDir holds, per overlaid directory, the upper and work dirs:
	// /data/overlay/etc/{upper,work}. Drift = the upper dir of /etc.
	OverlayDir = "/data/overlay"
	// ESPMount is where the running system mounts the ESP.
	ESPMount = "/boot/efi"
)

// OverlaidDirs are the directories of the read-only root that get a
// writable overlay on the data partition.
var OverlaidDirs = []string{"etc", "var", "root", "home"}
