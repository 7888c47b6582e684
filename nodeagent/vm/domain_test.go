package vm

import (
	"embed"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

var update = flag.Bool("update", false, "rewrite golden files")

//go:embed testdata/*
var golden embed.FS

func validate(t *testing.T, schema, doc string) {
	t.Helper()
	bin, err := exec.LookPath("virt-xml-validate")
	if err != nil {
		t.Fatalf("virt-xml-validate is needed to check XML against libvirt's schema (libvirt-clients, libxml2-utils): %v", err)
	}
	f := filepath.Join(t.TempDir(), "doc.xml")
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, f, schema).CombinedOutput(); err != nil {
		t.Errorf("virt-xml-validate %s: %v\n%s\n%s", schema, err, out, doc)
	}
}

func TestDomainXML(t *testing.T) {
	full := &v1.VMSpec{
		Vcpus: 2, MaxVcpus: 4, MemoryMib: 1024, MaxMemoryMib: 2048,
		Disks: []*v1.Disk{
			{Pool: "images", Volume: "root.qcow2", BootOrder: 1},
			{Pool: "images", Volume: "data.raw", Bus: v1.Disk_BUS_SATA},
			{Pool: "ceph", Volume: "shared", Bus: v1.Disk_BUS_SCSI, ReadOnly: true},
		},
		Nics: []*v1.NIC{
			{Type: v1.NIC_TYPE_BRIDGE, Bridge: "br0", Mac: "52:54:00:00:00:01"},
			{Type: v1.NIC_TYPE_BRIDGE, Bridge: "ovsbr0", Vlan: 42, Mac: "52:54:00:00:00:02", Model: "e1000", BootOrder: 2},
			{Type: v1.NIC_TYPE_USER, Mac: "52:54:00:00:00:03"},
		},
		Autostart: true,
		CloudInit: &v1.CloudInit{UserData: "#cloud-config\nhostname: web-1\n"},
	}
	uefi := &v1.VMSpec{Vcpus: 1, MemoryMib: 256, Firmware: v1.Firmware_FIRMWARE_UEFI,
		Nics: []*v1.NIC{{Type: v1.NIC_TYPE_USER, Mac: "52:54:00:00:00:04"}}}
	kernel := &v1.VMSpec{Vcpus: 1, MemoryMib: 64, PowerState: v1.PowerState_POWER_STATE_STOPPED,
		KernelBoot: &v1.KernelBoot{Kernel: "/var/lib/debvisor/kernels/vmlinuz", Initrd: "/var/lib/debvisor/kernels/initrd.img", Cmdline: "console=ttyS0"}}
	tests := []struct {
		name string
		spec *v1.VMSpec
		hv   string
		seed string
	}{
		{"full", full, "kvm", "/var/lib/debvisor/vm-seeds/web-1-cidata.iso"},
		{"uefi-tcg", uefi, "qemu", ""},
		{"kernel", kernel, "kvm", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := proto.Clone(tt.spec).(*v1.VMSpec)
			if err := Normalize("spec", spec); err != nil {
				t.Fatal(err)
			}
			var disks []resolvedDisk
			for _, d := range spec.Disks {
				f := "raw"
				if strings.HasSuffix(d.Volume, ".qcow2") {
					f = "qcow2"
				}
				disks = append(disks, resolvedDisk{Disk: d, format: f})
			}
			x, err := buildDomain(domainParams{Name: "web-1", UUID: "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f", Hypervisor: tt.hv, Spec: spec, Disks: disks, SeedPath: tt.seed})
			if err != nil {
				t.Fatal(err)
			}
			doc, err := x.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			doc += "\n"
			path := filepath.Join("testdata", "domain-"+tt.name+".xml")
			if *update {
				if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if want, err := golden.ReadFile("testdata/domain-" + tt.name + ".xml"); err != nil || string(want) != doc {
				t.Errorf("domain XML differs from %s (go test -update to accept):\n%s", path, cmp.Diff(string(want), doc))
			}
			validate(t, "domain", doc)

			// Reading the definition back gives the spec it came from.
			back, m := specFromDomain(x)
			back.Autostart = spec.Autostart // kept by libvirt, not in the XML
			for _, d := range back.Disks {
				if d.Target == "" {
					t.Errorf("disk %s/%s has no target", d.Pool, d.Volume)
				}
			}
			if diff := cmp.Diff(spec, back, protocmp.Transform()); diff != "" {
				t.Errorf("spec round trip (-want +got):\n%s", diff)
			}
			if m.Seed != tt.seed {
				t.Errorf("seed path %q, want %q", m.Seed, tt.seed)
			}
			if d := diffSpecs(spec, back); len(d) != 0 {
				t.Errorf("diffSpecs of equal specs = %v", d)
			}
		})
	}
}

func TestDiffSpecs(t *testing.T) {
	base := &v1.VMSpec{Vcpus: 1, MaxVcpus: 2, MemoryMib: 64, MaxMemoryMib: 64,
		Disks: []*v1.Disk{{Pool: "p", Volume: "a"}},
		Nics:  []*v1.NIC{{Type: v1.NIC_TYPE_USER, Mac: "52:54:00:00:00:01", Model: "virtio"}}}
	want := proto.Clone(base).(*v1.VMSpec)
	want.Vcpus = 2
	want.Disks = []*v1.Disk{{Pool: "p", Volume: "b"}}
	want.Nics[0].Model = "e1000"
	got := diffSpecs(base, want)
	exp := []string{"vcpus 1 -> 2", "disk p/b attached", "disk p/a detached", "nic 52:54:00:00:00:01 changed"}
	if diff := cmp.Diff(exp, got); diff != "" {
		t.Errorf("diffSpecs (-want +got):\n%s", diff)
	}
}

func TestNormalizeRefuses(t *testing.T) {
	tests := []struct {
		name  string
		mut   func(*v1.VMSpec)
		field string
	}{
		{"max below vcpus", func(s *v1.VMSpec) { s.MaxVcpus = 1; s.Vcpus = 2 }, "spec.max_vcpus"},
		{"too many vcpus", func(s *v1.VMSpec) { s.Vcpus = 1000 }, "spec.vcpus"},
		{"memory below min", func(s *v1.VMSpec) { s.MemoryMib = 8 }, "spec.memory_mib"},
		{"max memory below memory", func(s *v1.VMSpec) { s.MaxMemoryMib = 32 }, "spec.max_memory_mib"},
		{"duplicate volume", func(s *v1.VMSpec) { s.Disks = []*v1.Disk{{Pool: "p", Volume: "v"}, {Pool: "p", Volume: "v"}} }, "spec.disks[1]"},
		{"bad bus", func(s *v1.VMSpec) { s.Disks = []*v1.Disk{{Pool: "p", Volume: "v", Bus: 9}} }, "spec.disks[0].bus"},
		{"no nic type", func(s *v1.VMSpec) { s.Nics = []*v1.NIC{{}} }, "spec.nics[0].type"},
		{"bridge without name", func(s *v1.VMSpec) { s.Nics = []*v1.NIC{{Type: v1.NIC_TYPE_BRIDGE}} }, "spec.nics[0].bridge"},
		{"user with vlan", func(s *v1.VMSpec) { s.Nics = []*v1.NIC{{Type: v1.NIC_TYPE_USER, Vlan: 3}} }, "spec.nics[0]"},
		{"duplicate mac", func(s *v1.VMSpec) {
			s.Nics = []*v1.NIC{{Type: v1.NIC_TYPE_USER, Mac: "52:54:00:00:00:01"}, {Type: v1.NIC_TYPE_USER, Mac: "52:54:00:00:00:01"}}
		}, "spec.nics[1].mac"},
		{"bad model", func(s *v1.VMSpec) { s.Nics = []*v1.NIC{{Type: v1.NIC_TYPE_USER, Model: "ne2k"}} }, "spec.nics[0].model"},
		{"bad firmware", func(s *v1.VMSpec) { s.Firmware = 7 }, "spec.firmware"},
		{"relative kernel", func(s *v1.VMSpec) { s.KernelBoot = &v1.KernelBoot{Kernel: "vmlinuz"} }, "spec.kernel_boot.kernel"},
		{"initrd without kernel", func(s *v1.VMSpec) { s.KernelBoot = &v1.KernelBoot{Initrd: "/i"} }, "spec.kernel_boot.kernel"},
		{"negative boot order", func(s *v1.VMSpec) { s.Disks = []*v1.Disk{{Pool: "p", Volume: "v", BootOrder: -1}} }, "spec.disks[0].boot_order"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &v1.VMSpec{Vcpus: 1, MemoryMib: 64}
			tt.mut(s)
			err := Normalize("spec", s)
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tt.field+":") {
				t.Fatalf("Normalize = %v, want InvalidArgument on %s", err, tt.field)
			}
		})
	}
}
