package vm

import (
	"path/filepath"
	"strconv"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/nodeagent/fault"
	"github.com/debvisor/debvisor/nodeagent/storage"
)

// Limits the API accepts (api/rules); larger values are typos on a single node.
const (
	MaxVCPUs     = rules.MaxVCPUs
	MinMemoryMiB = rules.MinMemoryMiB
	MaxMemoryMiB = rules.MaxMemoryMiB
	MaxDisks     = rules.MaxDisks
	MaxNICs      = rules.MaxNICs
)

var nicModels = map[string]bool{"virtio": true, "e1000": true, "e1000e": true, "rtl8139": true}

func invalid(field, format string, args ...any) error {
	return fault.Invalidf(field, format, args...)
}

// Normalize validates spec and fills in defaults in place (max_vcpus,
// max_memory_mib, NIC models and MACs, disk buses, power state). field is
// the spec's path in the request, e.g. "vm.spec".
func Normalize(field string, s *v1.VMSpec) error {
	if s == nil {
		return invalid(field, "must be set")
	}
	if s.Vcpus < 1 || s.Vcpus > MaxVCPUs {
		return invalid(field+".vcpus", "must be between 1 and %d (got %d)", MaxVCPUs, s.Vcpus)
	}
	if s.MaxVcpus == 0 {
		s.MaxVcpus = s.Vcpus
	}
	if s.MaxVcpus < s.Vcpus || s.MaxVcpus > MaxVCPUs {
		return invalid(field+".max_vcpus", "must be between vcpus (%d) and %d (got %d)", s.Vcpus, MaxVCPUs, s.MaxVcpus)
	}
	if s.MemoryMib < MinMemoryMiB || s.MemoryMib > MaxMemoryMiB {
		return invalid(field+".memory_mib", "must be between %d and %d MiB (got %d)", MinMemoryMiB, MaxMemoryMiB, s.MemoryMib)
	}
	if s.MaxMemoryMib == 0 {
		s.MaxMemoryMib = s.MemoryMib
	}
	if s.MaxMemoryMib < s.MemoryMib || s.MaxMemoryMib > MaxMemoryMiB {
		return invalid(field+".max_memory_mib", "must be between memory_mib (%d) and %d (got %d)", s.MemoryMib, MaxMemoryMiB, s.MaxMemoryMib)
	}
	if len(s.Disks) > MaxDisks {
		return invalid(field+".disks", "at most %d disks (got %d)", MaxDisks, len(s.Disks))
	}
	if len(s.Nics) > MaxNICs {
		return invalid(field+".nics", "at most %d NICs (got %d)", MaxNICs, len(s.Nics))
	}
	boot := map[int32]string{}
	checkBoot := func(f string, order int32) error {
		if order < 0 || order > 64 {
			return invalid(f, "must be between 0 and 64 (got %d)", order)
		}
		if order == 0 {
			return nil
		}
		if other, dup := boot[order]; dup {
			return invalid(f, "boot order %d is already used by %s", order, other)
		}
		boot[order] = f
		return nil
	}
	vols := map[string]string{}
	for i, d := range s.Disks {
		f := field + ".disks[" + strconv.Itoa(i) + "]"
		if d == nil {
			return invalid(f, "must be set")
		}
		if err := storage.CheckName(f+".pool", d.Pool); err != nil {
			return err
		}
		if err := storage.CheckName(f+".volume", d.Volume); err != nil {
			return err
		}
		if prev, dup := vols[d.Pool+"/"+d.Volume]; dup {
			return invalid(f, "volume %s/%s is already attached as %s", d.Pool, d.Volume, prev)
		}
		vols[d.Pool+"/"+d.Volume] = f
		d.Target = "" // output only; the agent assigns it
		if d.Bus == v1.Disk_BUS_UNSPECIFIED {
			d.Bus = v1.Disk_BUS_VIRTIO
		}
		if _, ok := busNames[d.Bus]; !ok {
			return invalid(f+".bus", "%d is not virtio, sata or scsi", d.Bus)
		}
		if err := checkBoot(f+".boot_order", d.BootOrder); err != nil {
			return err
		}
	}
	macs := map[string]string{}
	for i, n := range s.Nics {
		f := field + ".nics[" + strconv.Itoa(i) + "]"
		if n == nil {
			return invalid(f, "must be set")
		}
		switch n.Type {
		case v1.NIC_TYPE_BRIDGE:
			if err := rules.CheckInterfaceName(n.Bridge); err != nil {
				return invalid(f+".bridge", "%q is not a bridge interface name (1-%d characters)", n.Bridge, rules.MaxInterfaceName)
			}
			if n.Vlan < 0 || n.Vlan > rules.MaxVLAN {
				return invalid(f+".vlan", "must be between 0 (untagged) and %d (got %d)", rules.MaxVLAN, n.Vlan)
			}
		case v1.NIC_TYPE_USER:
			if n.Bridge != "" || n.Vlan != 0 {
				return invalid(f, "bridge and vlan apply to bridge NICs only")
			}
		default:
			return invalid(f+".type", "must be bridge or user")
		}
		if n.Mac == "" {
			n.Mac = RandomMAC()
		}
		m, err := ParseMAC(n.Mac)
		if err != nil {
			return invalid(f+".mac", "%v", err)
		}
		n.Mac = m
		if prev, dup := macs[m]; dup {
			return invalid(f+".mac", "%s is already used by %s", m, prev)
		}
		macs[m] = f
		if n.Model == "" {
			n.Model = "virtio"
		}
		if !nicModels[n.Model] {
			return invalid(f+".model", "%q is not virtio, e1000, e1000e or rtl8139", n.Model)
		}
		if err := checkBoot(f+".boot_order", n.BootOrder); err != nil {
			return err
		}
	}
	if s.Firmware == v1.Firmware_FIRMWARE_UNSPECIFIED {
		s.Firmware = v1.Firmware_FIRMWARE_BIOS
	}
	if s.Firmware != v1.Firmware_FIRMWARE_BIOS && s.Firmware != v1.Firmware_FIRMWARE_UEFI {
		return invalid(field+".firmware", "must be bios or uefi")
	}
	if s.PowerState == v1.PowerState_POWER_STATE_UNSPECIFIED {
		s.PowerState = v1.PowerState_POWER_STATE_RUNNING
	}
	if s.PowerState != v1.PowerState_POWER_STATE_RUNNING && s.PowerState != v1.PowerState_POWER_STATE_STOPPED {
		return invalid(field+".power_state", "must be running or stopped")
	}
	if k := s.KernelBoot; k != nil {
		if k.Kernel == "" && (k.Initrd != "" || k.Cmdline != "") {
			return invalid(field+".kernel_boot.kernel", "must be set when initrd or cmdline is")
		}
		for sub, p := range map[string]string{"kernel": k.Kernel, "initrd": k.Initrd} {
			if p != "" && (!filepath.IsAbs(p) || filepath.Clean(p) != p) {
				return invalid(field+".kernel_boot."+sub, "%q must be a clean absolute path on the node", p)
			}
		}
		if k.Kernel == "" {
			s.KernelBoot = nil
		}
	}
	if ci := s.CloudInit; ci != nil {
		if len(ci.UserData)+len(ci.MetaData)+len(ci.NetworkConfig) > 1<<20 {
			return invalid(field+".cloud_init", "user_data, meta_data and network_config together must stay under 1 MiB")
		}
		if ci.UserData == "" && ci.MetaData == "" && ci.NetworkConfig == "" {
			s.CloudInit = nil
		}
	}
	return nil
}
