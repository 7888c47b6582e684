package vm

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"slices"
	"sort"
	"strings"

	"libvirt.org/go/libvirtxml"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

var busNames = map[v1.Disk_Bus]string{
	v1.Disk_BUS_VIRTIO: "virtio",
	v1.Disk_BUS_SATA:   "sata",
	v1.Disk_BUS_SCSI:   "scsi",
}

// meta is what DebVisor keeps in the domain definition beyond what libvirt
// itself models: the desired power state, the cloud-init documents (so
// GetVM returns the spec it was given) and the create request that made
// the VM (so a retried create finds its VM even after an agent restart).
type meta struct {
	XMLName       xml.Name `xml:"https://debvisor.dev/xmlns/vm/1 vm"`
	PowerState    string   `xml:"power-state,attr,omitempty"`
	Seed          string   `xml:"seed,attr,omitempty"`
	RequestID     string   `xml:"request-id,attr,omitempty"`
	RequestHash   string   `xml:"request-hash,attr,omitempty"`
	UserData      string   `xml:"user-data,omitempty"`
	MetaData      string   `xml:"meta-data,omitempty"`
	NetworkConfig string   `xml:"network-config,omitempty"`
}

// resolvedDisk is a spec disk with what libvirt knows about its volume.
type resolvedDisk struct {
	*v1.Disk
	format string // raw or qcow2
}

// domainParams is everything the domain XML is built from.
type domainParams struct {
	Name, UUID string
	// Hypervisor is libvirt's domain type: kvm, or qemu (TCG).
	Hypervisor string
	Spec       *v1.VMSpec
	Disks      []resolvedDisk
	// SeedPath is the cloud-init NoCloud ISO, "" without cloud-init.
	SeedPath string
	// Request identifies the create that made the VM; kept by updates.
	Request Request
}

// buildDomain returns the domain definition for a normalised spec. Disk
// targets already assigned (Disk.Target set, e.g. kept from the previous
// definition) are kept so an update does not renumber the guest's disks.
func buildDomain(p domainParams) (*libvirtxml.Domain, error) {
	s := p.Spec
	m := meta{PowerState: strings.ToLower(strings.TrimPrefix(s.PowerState.String(), "POWER_STATE_")), Seed: p.SeedPath,
		RequestID: p.Request.ID, RequestHash: p.Request.Hash}
	if ci := s.CloudInit; ci != nil {
		m.UserData = base64.StdEncoding.EncodeToString([]byte(ci.UserData))
		m.MetaData = base64.StdEncoding.EncodeToString([]byte(ci.MetaData))
		m.NetworkConfig = base64.StdEncoding.EncodeToString([]byte(ci.NetworkConfig))
	}
	mx, err := xml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal metadata: %w", err)
	}
	port0 := uint(0)
	d := &libvirtxml.Domain{
		Type:          p.Hypervisor,
		Name:          p.Name,
		UUID:          p.UUID,
		Metadata:      &libvirtxml.DomainMetadata{XML: string(mx)},
		Memory:        &libvirtxml.DomainMemory{Value: uint(s.MaxMemoryMib), Unit: "MiB"},
		CurrentMemory: &libvirtxml.DomainCurrentMemory{Value: uint(s.MemoryMib), Unit: "MiB"},
		VCPU:          &libvirtxml.DomainVCPU{Placement: "static", Value: uint(s.MaxVcpus), Current: uint(s.Vcpus)},
		OS: &libvirtxml.DomainOS{
			Type: &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "pc", Type: "hvm"},
		},
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
				Target: &libvirtxml.DomainSerialTarget{Port: &port0},
			}},
			Consoles: []libvirtxml.DomainConsole{{
				Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
				Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: &port0},
			}},
			Channels: []libvirtxml.DomainChannel{{
				Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind"}},
				Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: "org.qemu.guest_agent.0"}},
			}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "virtio"},
		},
	}
	if s.Firmware == v1.Firmware_FIRMWARE_UEFI {
		d.OS.Firmware = "efi"
		d.OS.FirmwareInfo = &libvirtxml.DomainOSFirmwareInfo{Features: []libvirtxml.DomainOSFirmwareFeature{
			{Enabled: "no", Name: "secure-boot"},
			{Enabled: "no", Name: "enrolled-keys"},
		}}
	}
	if k := s.KernelBoot; k != nil {
		d.OS.Kernel, d.OS.Initrd, d.OS.Cmdline = k.Kernel, k.Initrd, k.Cmdline
	}
	if err := assignTargets(p.Disks); err != nil {
		return nil, err
	}
	for _, rd := range p.Disks {
		disk := libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: rd.format},
			Source: &libvirtxml.DomainDiskSource{Volume: &libvirtxml.DomainDiskSourceVolume{Pool: rd.Pool, Volume: rd.Volume}},
			Target: &libvirtxml.DomainDiskTarget{Dev: rd.Target, Bus: busNames[rd.Bus]},
		}
		if rd.ReadOnly {
			disk.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
		}
		if rd.BootOrder > 0 {
			disk.Boot = &libvirtxml.DomainDeviceBoot{Order: uint(rd.BootOrder)}
		}
		d.Devices.Disks = append(d.Devices.Disks, disk)
	}
	if p.SeedPath != "" {
		d.Devices.Disks = append(d.Devices.Disks, seedDisk(p.SeedPath))
	}
	for _, n := range s.Nics {
		d.Devices.Interfaces = append(d.Devices.Interfaces, nicXML(n))
	}
	return d, nil
}

// seedDisk is the cloud-init CD-ROM, on IDE so it never takes a name the
// VM's own disks could want.
func seedDisk(path string) libvirtxml.DomainDisk {
	return libvirtxml.DomainDisk{
		Device:   "cdrom",
		Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
		Source:   &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: path}},
		Target:   &libvirtxml.DomainDiskTarget{Dev: "hdc", Bus: "ide"},
		ReadOnly: &libvirtxml.DomainDiskReadOnly{},
	}
}

func nicXML(n *v1.NIC) libvirtxml.DomainInterface {
	i := libvirtxml.DomainInterface{
		MAC:   &libvirtxml.DomainInterfaceMAC{Address: n.Mac},
		Model: &libvirtxml.DomainInterfaceModel{Type: n.Model},
	}
	switch n.Type {
	case v1.NIC_TYPE_BRIDGE:
		i.Source = &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: n.Bridge}}
		if n.Vlan > 0 {
			i.VLan = &libvirtxml.DomainInterfaceVLan{Tags: []libvirtxml.DomainInterfaceVLanTag{{ID: uint(n.Vlan)}}}
		}
	case v1.NIC_TYPE_USER:
		i.Source = &libvirtxml.DomainInterfaceSource{User: &libvirtxml.DomainInterfaceSourceUser{}}
	}
	if n.BootOrder > 0 {
		i.Boot = &libvirtxml.DomainDeviceBoot{Order: uint(n.BootOrder)}
	}
	return i
}

// assignTargets gives every disk without a target the first free name for
// its bus (vdX for virtio, sdX shared by sata and scsi).
func assignTargets(disks []resolvedDisk) error {
	used := map[string]bool{}
	for _, d := range disks {
		if d.Target != "" {
			used[d.Target] = true
		}
	}
	for _, d := range disks {
		if len(d.Target) > 2 && prefixOf(d.Bus) == d.Target[:2] {
			continue
		}
		d.Target = ""
		for i := 0; i < 26; i++ {
			t := prefixOf(d.Bus) + string(rune('a'+i))
			if !used[t] {
				d.Target = t
				used[t] = true
				break
			}
		}
		if d.Target == "" {
			return invalid("disks", "no free device name left for bus %s", busNames[d.Bus])
		}
	}
	return nil
}

func prefixOf(b v1.Disk_Bus) string {
	if b == v1.Disk_BUS_VIRTIO {
		return "vd"
	}
	return "sd"
}

// specFromDomain reads a definition back into the API's spec: what GetVM
// reports and what update and pending-change detection compare.
func specFromDomain(d *libvirtxml.Domain) (*v1.VMSpec, meta) {
	s := &v1.VMSpec{
		Firmware:   v1.Firmware_FIRMWARE_BIOS,
		PowerState: v1.PowerState_POWER_STATE_RUNNING,
	}
	var m meta
	if d.Metadata != nil {
		// The metadata may hold other tools' elements beside ours.
		dec := xml.NewDecoder(strings.NewReader("<m>" + d.Metadata.XML + "</m>"))
		var wrap struct {
			VM []meta `xml:"https://debvisor.dev/xmlns/vm/1 vm"`
		}
		if err := dec.Decode(&wrap); err == nil && len(wrap.VM) > 0 {
			m = wrap.VM[0]
		}
	}
	if m.PowerState == "stopped" {
		s.PowerState = v1.PowerState_POWER_STATE_STOPPED
	}
	if m.UserData != "" || m.MetaData != "" || m.NetworkConfig != "" {
		dec := func(v string) string { b, _ := base64.StdEncoding.DecodeString(v); return string(b) }
		s.CloudInit = &v1.CloudInit{UserData: dec(m.UserData), MetaData: dec(m.MetaData), NetworkConfig: dec(m.NetworkConfig)}
	}
	if d.VCPU != nil {
		s.MaxVcpus = int32(d.VCPU.Value)
		s.Vcpus = int32(d.VCPU.Value)
		if d.VCPU.Current != 0 {
			s.Vcpus = int32(d.VCPU.Current)
		}
	}
	if d.Memory != nil {
		s.MaxMemoryMib = int64(toMiB(d.Memory.Value, d.Memory.Unit))
		s.MemoryMib = s.MaxMemoryMib
	}
	if d.CurrentMemory != nil {
		s.MemoryMib = int64(toMiB(d.CurrentMemory.Value, d.CurrentMemory.Unit))
	}
	if d.OS != nil {
		if d.OS.Firmware == "efi" || (d.OS.Loader != nil && d.OS.Loader.Type == "pflash") {
			s.Firmware = v1.Firmware_FIRMWARE_UEFI
		}
		if d.OS.Kernel != "" {
			s.KernelBoot = &v1.KernelBoot{Kernel: d.OS.Kernel, Initrd: d.OS.Initrd, Cmdline: d.OS.Cmdline}
		}
	}
	if d.Devices != nil {
		for _, disk := range d.Devices.Disks {
			if disk.Device != "disk" || disk.Source == nil || disk.Source.Volume == nil {
				continue
			}
			out := &v1.Disk{Pool: disk.Source.Volume.Pool, Volume: disk.Source.Volume.Volume, ReadOnly: disk.ReadOnly != nil}
			if disk.Target != nil {
				out.Target = disk.Target.Dev
				for b, n := range busNames {
					if n == disk.Target.Bus {
						out.Bus = b
					}
				}
			}
			if disk.Boot != nil {
				out.BootOrder = int32(disk.Boot.Order)
			}
			s.Disks = append(s.Disks, out)
		}
		for _, i := range d.Devices.Interfaces {
			n := &v1.NIC{}
			if i.MAC != nil {
				n.Mac = i.MAC.Address
			}
			if i.Model != nil {
				n.Model = i.Model.Type
			}
			if i.Source != nil {
				switch {
				case i.Source.Bridge != nil:
					n.Type, n.Bridge = v1.NIC_TYPE_BRIDGE, i.Source.Bridge.Bridge
				case i.Source.User != nil:
					n.Type = v1.NIC_TYPE_USER
				}
			}
			if i.VLan != nil && len(i.VLan.Tags) > 0 {
				n.Vlan = int32(i.VLan.Tags[0].ID)
			}
			if i.Boot != nil {
				n.BootOrder = int32(i.Boot.Order)
			}
			s.Nics = append(s.Nics, n)
		}
	}
	return s, m
}

func toMiB(v uint, unit string) uint {
	switch strings.ToLower(unit) {
	case "b", "bytes":
		return v >> 20
	case "", "k", "kib":
		return v >> 10
	case "m", "mib":
		return v
	case "g", "gib":
		return v << 10
	}
	return v >> 10
}

// diffSpecs describes how want differs from have, in words an operator can
// read ("memory_mib 64 -> 128", "disk pool/vol attached"). Order is stable.
func diffSpecs(have, want *v1.VMSpec) []string {
	var out []string
	num := func(name string, a, b int64) {
		if a != b {
			out = append(out, fmt.Sprintf("%s %d -> %d", name, a, b))
		}
	}
	num("vcpus", int64(have.Vcpus), int64(want.Vcpus))
	num("max_vcpus", int64(have.MaxVcpus), int64(want.MaxVcpus))
	num("memory_mib", have.MemoryMib, want.MemoryMib)
	num("max_memory_mib", have.MaxMemoryMib, want.MaxMemoryMib)
	if have.Firmware != want.Firmware {
		out = append(out, fmt.Sprintf("firmware %s -> %s", have.Firmware, want.Firmware))
	}
	if kernelKey(have.KernelBoot) != kernelKey(want.KernelBoot) {
		out = append(out, "kernel_boot changed")
	}
	hd, wd := diskKeys(have.Disks), diskKeys(want.Disks)
	for _, k := range sortedKeys(wd) {
		if _, ok := hd[k]; !ok {
			out = append(out, "disk "+k+" attached")
		} else if hd[k] != wd[k] {
			out = append(out, "disk "+k+" changed")
		}
	}
	for _, k := range sortedKeys(hd) {
		if _, ok := wd[k]; !ok {
			out = append(out, "disk "+k+" detached")
		}
	}
	hn, wn := nicKeys(have.Nics), nicKeys(want.Nics)
	for _, k := range sortedKeys(wn) {
		if _, ok := hn[k]; !ok {
			out = append(out, "nic "+k+" attached")
		} else if hn[k] != wn[k] {
			out = append(out, "nic "+k+" changed")
		}
	}
	for _, k := range sortedKeys(hn) {
		if _, ok := wn[k]; !ok {
			out = append(out, "nic "+k+" detached")
		}
	}
	return out
}

func kernelKey(k *v1.KernelBoot) string {
	if k == nil {
		return ""
	}
	return k.Kernel + "\x00" + k.Initrd + "\x00" + k.Cmdline
}

func diskKeys(ds []*v1.Disk) map[string]string {
	m := map[string]string{}
	for _, d := range ds {
		m[d.Pool+"/"+d.Volume] = fmt.Sprintf("%s/%d/%v", d.Bus, d.BootOrder, d.ReadOnly)
	}
	return m
}

func nicKeys(ns []*v1.NIC) map[string]string {
	m := map[string]string{}
	for _, n := range ns {
		m[n.Mac] = fmt.Sprintf("%s/%s/%d/%s/%d", n.Type, n.Bridge, n.Vlan, n.Model, n.BootOrder)
	}
	return m
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return slices.Compact(ks)
}
