package storage

import (
	"embed"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

var update = flag.Bool("update", false, "rewrite golden files")

//go:embed testdata/*
var golden embed.FS

// checkGolden compares got with testdata/name and validates it against
// libvirt's RelaxNG schema with virt-xml-validate.
func checkGolden(t *testing.T, name, schema, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := golden.ReadFile("testdata/" + name)
	if err != nil && !*update {
		t.Fatalf("golden %s: %v (run go test -update)", name, err)
	}
	if !*update && string(want) != got {
		t.Errorf("%s differs from golden file (go test -update to accept):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
	ValidateXML(t, schema, got)
}

// ValidateXML runs virt-xml-validate on doc with the named schema.
func ValidateXML(t *testing.T, schema, doc string) {
	t.Helper()
	bin, err := exec.LookPath("virt-xml-validate")
	if err != nil {
		t.Fatalf("virt-xml-validate is needed to check XML against libvirt's schema (package libvirt-clients, libxml2-utils): %v", err)
	}
	f := filepath.Join(t.TempDir(), "doc.xml")
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, f, schema).CombinedOutput(); err != nil {
		t.Errorf("virt-xml-validate %s: %v\n%s\n%s", schema, err, out, doc)
	}
}

func TestPoolXML(t *testing.T) {
	tests := []struct {
		name string
		pool *v1.Pool
	}{
		{"dir", &v1.Pool{Name: "images", Type: v1.Pool_TYPE_DIR, Path: "/var/lib/debvisor/images"}},
		{"fs", &v1.Pool{Name: "fast", Type: v1.Pool_TYPE_FS, Path: "/srv/fast", SourceDevices: []string{"/dev/nvme0n1p1"}, SourceFormat: "ext4"}},
		{"logical", &v1.Pool{Name: "vg0", Type: v1.Pool_TYPE_LOGICAL, SourceDevices: []string{"/dev/sdb", "/dev/sdc"}}},
		{"netfs", &v1.Pool{Name: "nfs", Type: v1.Pool_TYPE_NETFS, Path: "/mnt/nfs", SourceHosts: []string{"nas.example"}, SourcePath: "/export/vms"}},
		{"zfs", &v1.Pool{Name: "tank", Type: v1.Pool_TYPE_ZFS, SourceName: "tank", SourceDevices: []string{"/dev/sdd"}}},
		{"rbd", &v1.Pool{Name: "ceph", Type: v1.Pool_TYPE_RBD, SourceName: "rbd", SourceHosts: []string{"mon1.example:6789", "mon2.example", "10.0.0.3:3300"},
			AuthUsername: "libvirt", AuthSecretUuid: "2a5b08e8-7d0e-4b5c-8b3e-6f1c0d5e9a10"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := PoolXML(tt.pool)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := x.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, "pool-"+tt.name+".xml", "storagepool", doc+"\n")
		})
	}
}

func TestPoolXMLRefuses(t *testing.T) {
	tests := []struct {
		name  string
		pool  *v1.Pool
		field string
	}{
		{"no pool", nil, "pool: must be set"},
		{"no type", &v1.Pool{Name: "p"}, "pool.type"},
		{"bad name", &v1.Pool{Name: "a/b", Type: v1.Pool_TYPE_DIR, Path: "/x"}, "pool.name"},
		{"relative dir", &v1.Pool{Name: "p", Type: v1.Pool_TYPE_DIR, Path: "x"}, "pool.path"},
		{"unclean dir", &v1.Pool{Name: "p", Type: v1.Pool_TYPE_DIR, Path: "/x/../etc"}, "pool.path"},
		{"fs without device", &v1.Pool{Name: "p", Type: v1.Pool_TYPE_FS, Path: "/x"}, "pool.source_devices"},
		{"netfs without host", &v1.Pool{Name: "p", Type: v1.Pool_TYPE_NETFS, Path: "/x", SourcePath: "/e"}, "pool.source_hosts"},
		{"netfs relative export", &v1.Pool{Name: "p", Type: v1.Pool_TYPE_NETFS, Path: "/x", SourceHosts: []string{"h"}, SourcePath: "e"}, "pool.source_path"},
		{"rbd without monitors", &v1.Pool{Name: "p", Type: v1.Pool_TYPE_RBD}, "pool.source_hosts"},
		{"rbd bad port", &v1.Pool{Name: "p", Type: v1.Pool_TYPE_RBD, SourceHosts: []string{"h:99999"}}, "pool.source_hosts[0]"},
		{"rbd half auth", &v1.Pool{Name: "p", Type: v1.Pool_TYPE_RBD, SourceHosts: []string{"h"}, AuthUsername: "u"}, "pool.auth_username"},
		{"zfs two vdevs", &v1.Pool{Name: "p", Type: v1.Pool_TYPE_ZFS, SourceDevices: []string{"/dev/a", "/dev/b"}}, "pool.source_devices: zfs pools take 0 to 1"},
		{"logical relative pv", &v1.Pool{Name: "p", Type: v1.Pool_TYPE_LOGICAL, SourceDevices: []string{"sdb"}}, "pool.source_devices[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := PoolXML(tt.pool)
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tt.field) {
				t.Fatalf("PoolXML = %v, want InvalidArgument starting %q", err, tt.field)
			}
		})
	}
}

func TestVolumeXML(t *testing.T) {
	tests := []struct {
		name, poolType string
		format         v1.Volume_Format
	}{
		{"dir-raw", "dir", v1.Volume_FORMAT_RAW},
		{"dir-qcow2", "dir", v1.Volume_FORMAT_QCOW2},
		{"rbd-raw", "rbd", v1.Volume_FORMAT_UNSPECIFIED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := VolumeXML(tt.poolType, "disk0", tt.format, 10<<30)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := x.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, "volume-"+tt.name+".xml", "storagevol", doc+"\n")
		})
	}
	if _, err := VolumeXML("zfs", "v", v1.Volume_FORMAT_QCOW2, 1<<20); status.Code(err) != codes.InvalidArgument {
		t.Errorf("qcow2 on zfs: %v, want InvalidArgument", err)
	}
}
