package storage

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/debvisor/debvisor/nodeagent/fault"
)

// testPolicy is a node whose pool root, agent state and PKI all live in a
// temporary tree, plus the real system directories.
type testPolicy struct {
	Policy
	root, state, pki, outside string
}

func newTestPolicy(t *testing.T) testPolicy {
	t.Helper()
	base := t.TempDir()
	tp := testPolicy{root: filepath.Join(base, "pools"), state: filepath.Join(base, "state"), pki: filepath.Join(base, "pki"), outside: filepath.Join(base, "elsewhere")}
	for _, d := range []string{tp.root, tp.state, tp.pki, tp.outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tp.Policy = Policy{Roots: []string{tp.root}, Protected: append([]string{tp.state, tp.pki}, SystemProtected...)}
	return tp
}

func TestCheckPathRefusals(t *testing.T) {
	tp := newTestPolicy(t)
	link := func(name, target string) string {
		p := filepath.Join(tp.root, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The state dir inside the root: a pool must still never reach it.
	stateInRoot := filepath.Join(tp.root, "agent-state")
	if err := os.MkdirAll(stateInRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	tp.Protected = append(tp.Protected, stateInRoot)
	tests := []struct {
		name, path, wantErr string
	}{
		{"root of the filesystem", "/", "system directory"},
		{"etc", "/etc", "inside /etc"},
		{"below etc", "/etc/debvisor/pools", "inside /etc"},
		{"boot", "/boot", "inside /boot"},
		{"the ESP", "/boot/efi/pool", "inside /boot"},
		{"root's home", "/root/pool", "inside /root"},
		{"var", "/var", "system directory"},
		{"usr", "/usr/local/pool", "inside /usr"},
		{"proc", "/proc/pool", "inside /proc"},
		{"the data mount itself", "/data", "system directory"},
		{"the etc overlay", "/data/overlay/etc/upper", "inside /data/overlay"},
		{"the agent's state dir", tp.state, "inside " + tp.state},
		{"under the agent's state", filepath.Join(tp.state, "pool"), "inside " + tp.state},
		{"the PKI dir", tp.pki, "inside " + tp.pki},
		{"containing the state and PKI dirs", filepath.Dir(tp.state), "would contain " + filepath.Dir(tp.state) + "/"},
		{"a protected dir inside the root", filepath.Join(stateInRoot, "x"), "inside " + stateInRoot},
		{"a root that contains protected", tp.root, "would contain " + stateInRoot},
		{"outside every root", filepath.Join(tp.outside, "p"), "not inside a permitted pool root"},
		{"dot-dot out of the root", tp.root + "/../state/p", "clean absolute path"},
		{"relative", "pools/p", "clean absolute path"},
		{"symlink to etc", link("to-etc", "/etc"), "resolves to /etc"},
		{"below a symlink to etc", filepath.Join(link("to-etc2", "/etc"), "pool"), "resolves to /etc/pool"},
		{"symlink to the state dir", filepath.Join(link("to-state", tp.state), "p"), "inside " + tp.state},
		{"symlink with dot-dot target", filepath.Join(link("up", "../state"), "p"), "inside " + tp.state},
		{"symlink out of the root", link("out", tp.outside), "not inside a permitted pool root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tp.CheckPath("pool.path", tt.path)
			if err == nil {
				t.Fatalf("CheckPath(%q) = nil, want a refusal containing %q", tt.path, tt.wantErr)
			}
			if !fault.Is(err, fault.Invalid) || !strings.HasPrefix(err.Error(), "pool.path: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckPath(%q) = %v (kind %v), want Invalid \"pool.path: …%s…\"", tt.path, err, fault.KindOf(err), tt.wantErr)
			}
		})
	}
	for _, ok := range []string{filepath.Join(tp.root, "vm-images"), filepath.Join(tp.root, "a", "b")} {
		if err := tp.CheckPath("pool.path", ok); err != nil {
			t.Errorf("CheckPath(%q) = %v, want allowed", ok, err)
		}
	}
	// A symlink that stays inside the root is fine: it is judged by where it leads.
	inside := filepath.Join(tp.root, "real")
	if err := os.Mkdir(inside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := tp.CheckPath("pool.path", filepath.Join(link("alias", inside), "p")); err != nil {
		t.Errorf("symlink inside the root refused: %v", err)
	}
	if err := (Policy{}).CheckPath("pool.path", "/data/pools/p"); err == nil || !strings.Contains(err.Error(), "no pool roots are configured") {
		t.Errorf("no roots: %v", err)
	}
}

func TestCheckEmptyDir(t *testing.T) {
	dir := t.TempDir()
	if err := CheckEmptyDir("pool.path", filepath.Join(dir, "new")); err != nil {
		t.Errorf("missing dir: %v", err)
	}
	if err := CheckEmptyDir("pool.path", dir); err != nil {
		t.Errorf("empty dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret.key"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := CheckEmptyDir("pool.path", dir)
	if !fault.Is(err, fault.FailedPrecondition) || !strings.Contains(err.Error(), `already holds files (e.g. "secret.key")`) {
		t.Errorf("dir with a file: %v", err)
	}
	if err := CheckEmptyDir("pool.path", filepath.Join(dir, "secret.key")); !fault.Is(err, fault.Invalid) {
		t.Errorf("a file: %v", err)
	}
}

// rootDevice is the block device mounted at / on this machine.
func rootDevice(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[4] == "/" {
			for i, x := range f {
				if x == "-" && i+2 < len(f) && strings.HasPrefix(f[i+2], "/dev/") {
					return f[i+2]
				}
			}
		}
	}
	t.Fatal("no block device is mounted at / here; the boot-disk refusal cannot be tested")
	return ""
}

// loopDisk attaches a file-backed disk with a GPT whose partitions carry
// the given names, as a loop device.
func loopDisk(t *testing.T, names ...string) string {
	t.Helper()
	for _, tool := range []string{"losetup", "sgdisk"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (scripts/install-deps): %v", tool, err)
		}
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	args := []string{}
	for i, n := range names {
		args = append(args, "-n", "0:0:+4M", "-c", strconv.Itoa(i+1)+":"+n)
	}
	if len(args) > 0 {
		if out, err := exec.Command("sgdisk", append(args, img)...).CombinedOutput(); err != nil {
			t.Fatalf("sgdisk: %v\n%s", err, out)
		}
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v\n%s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	return dev
}

func TestCheckDeviceRefusals(t *testing.T) {
	var pol Policy
	boot := rootDevice(t)
	debvisorDisk := loopDisk(t, "debvisor-esp", "debvisor-a", "debvisor-b", "debvisor-data")
	spare := loopDisk(t, "scratch")
	link := filepath.Join(t.TempDir(), "innocent")
	if err := os.Symlink(boot, link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dev string
		kind      fault.Kind
		wantErr   string
	}{
		{"the boot disk (mounted at /)", boot, fault.FailedPrecondition, "holds a mounted filesystem"},
		{"a symlink to the boot disk", link, fault.FailedPrecondition, "(resolves to " + boot + ") holds a mounted filesystem"},
		{"a disk holding DebVisor partitions", debvisorDisk, fault.FailedPrecondition, `holds the DebVisor partition "debvisor-esp"`},
		{"a regular file", "/etc/passwd", fault.Invalid, "not a device under /dev"},
		{"a character device", "/dev/null", fault.Invalid, "is not a block device"},
		{"missing", "/dev/no-such-disk", fault.Invalid, "no such file"},
		{"dot-dot", "/dev/../etc/passwd", fault.Invalid, "clean absolute device path"},
		{"relative", "vda", fault.Invalid, "clean absolute device path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := pol.CheckDevice("pool.source_devices[0]", tt.dev)
			if err == nil || fault.KindOf(err) != tt.kind || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "pool.source_devices[0]: ") {
				t.Fatalf("CheckDevice(%q) = %v (kind %v), want %v containing %q", tt.dev, err, fault.KindOf(err), tt.kind, tt.wantErr)
			}
		})
	}
	if err := pol.CheckDevice("pool.source_devices[0]", spare); err != nil {
		t.Errorf("an unused disk without DebVisor partitions was refused: %v", err)
	}
}

func FuzzReadGPTNames(f *testing.F) {
	hdr := make([]byte, 4096)
	copy(hdr[512:], "EFI PART")
	f.Add(hdr)
	f.Add([]byte("EFI PART"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = readGPTNames(readerAt(b), 512)
	})
}

type readerAt []byte

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(r)) {
		return 0, os.ErrClosed
	}
	n := copy(p, r[off:])
	if n < len(p) {
		return n, os.ErrClosed
	}
	return n, nil
}
