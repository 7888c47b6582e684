package vm

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

func TestWriteSeed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seeds", "web-1-cidata.iso")
	ci := &v1.CloudInit{UserData: "#cloud-config\nhostname: web-1\n", NetworkConfig: "version: 2\n"}
	if err := writeSeed(path, "web-1", "uuid-1", ci); err != nil {
		t.Fatal(err)
	}
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(0)
	if err != nil {
		t.Fatal(err)
	}
	// go-diskfs pads the volume id with NULs; blkid (which cloud-init uses)
	// reads it as a C string.
	if l := strings.TrimRight(fs.Label(), "\x00 "); l != "cidata" {
		t.Errorf("volume label %q, want cidata (cloud-init's NoCloud looks for it)", l)
	}
	for name, want := range map[string]string{
		"user-data":      ci.UserData,
		"meta-data":      "instance-id: uuid-1\nlocal-hostname: web-1\n",
		"network-config": ci.NetworkConfig,
	} {
		f, err := fs.OpenFile("/"+name, os.O_RDONLY)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		got, err := io.ReadAll(f)
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	// blkid is how cloud-init's NoCloud finds the seed: it must see the
	// label and the filesystem type.
	if out, err := exec.Command("blkid", "-p", "-o", "export", path).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "LABEL=cidata") || !strings.Contains(string(out), "TYPE=iso9660") {
		t.Errorf("blkid -p %s: %v\n%s", path, err, out)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*")); len(left) != 0 {
		t.Errorf("work files left: %v", left)
	}
}
