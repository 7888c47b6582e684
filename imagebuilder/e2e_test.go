package imagebuilder_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/debvisor/debvisor/imagebuilder"
	"github.com/debvisor/debvisor/internal/qemu"
)

// bootTimeout bounds one UEFI boot under TCG on a busy 2-core machine.
const bootTimeout = 6 * time.Minute

// seedFixture makes the user's flow: a CA, a node certificate for the
// forwarded address and an admin client certificate with dvctl, an SSH
// key, and a DEBVISOR-SEED volume carrying all of it.
type seedFixture struct {
	dir, seed, sshKey, pubKey string
}

func newSeed(t testing.TB) seedFixture {
	t.Helper()
	requireTools(t, "ssh", "ssh-keygen")
	_, dvctl := binaries(t)
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	run(t, dvctl, "pki", "init-ca", "--dir", pki)
	run(t, dvctl, "pki", "issue", "node", "node1", "--dir", pki, "--host", "127.0.0.1", "--host", "node1")
	run(t, dvctl, "pki", "issue", "client", "admin", "--role", "admin", "--dir", pki)
	key := filepath.Join(dir, "id_ed25519")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	preseed := fmt.Sprintf(`version: 1
hostname: node1
ssh_authorized_keys:
  - %s
pki:
  ca: pki/ca.crt
  cert: pki/node1.crt
  key: pki/node1.key
`, strings.TrimSpace(string(pub)))
	ps := filepath.Join(dir, "preseed.yaml")
	if err := os.WriteFile(ps, []byte(preseed), 0o644); err != nil {
		t.Fatal(err)
	}
	seed := filepath.Join(dir, "seed.iso")
	if err := imagebuilder.MakeSeed(ps, seed); err != nil {
		t.Fatal(err)
	}
	return seedFixture{dir: dir, seed: seed, sshKey: key, pubKey: string(pub)}
}

// dvctlStatus asks the agent in the guest for its node status over mTLS
// through the forwarded port, with the real client (dvctl status -o json).
func dvctlStatus(t testing.TB, s seedFixture, port int) (map[string]any, error) {
	_, dvctl := binaries(t)
	pki := filepath.Join(s.dir, "pki")
	d := qemu.Dvctl{Path: dvctl, Creds: qemu.Credentials{
		CA: filepath.Join(pki, "ca.crt"), Cert: filepath.Join(pki, "admin.crt"), Key: filepath.Join(pki, "admin.key"),
	}}
	return d.Status(context.Background(), fmt.Sprintf("127.0.0.1:%d", port))
}

// The first boot, the second boot and an upgrade's boots of the default
// image are e2e.TestNodeLifecycle's (one booted guest for everything that
// only needs to look at it); this package boots only what that test does
// not: no network device, and the legacy BIOS path.

// TestBootWithoutNetworkStartsNetcfg boots with no network device at all:
// firstboot must put the network console on tty1.
func TestBootWithoutNetworkStartsNetcfg(t *testing.T) {
	img := defaultImage(t)
	v := startVM(t, img.Raw, vmConfig{DiskSize: "4G"}, "")
	v.waitConsole(bootTimeout, "no network is up")
	v.waitConsole(2*time.Minute, "debvisor-netcfg: network configuration console started on /dev/tty1")
}

// TestBootBIOSUnderKVM boots the same default image through its legacy
// BIOS path: QEMU's SeaBIOS (no pflash) runs boot.img from the protective
// MBR, which loads core.img from the BIOS boot partition; GRUB must pick
// slot A from the same grub.cfg and grubenv, show it on the serial console
// (SeaBIOS does not mirror the screen there, early.cfg adds GRUB's serial
// terminal), and the agent must answer over mTLS. It runs under KVM where
// KVM executes the BIOS path in hardware (qemu.KVMForBIOS), else
// under TCG: the development machines' KVM is PVM, which emulates
// SeaBIOS/GRUB's real-mode and unpaged code and takes minutes for GRUB.
func TestBootBIOSUnderKVM(t *testing.T) {
	img := defaultImage(t)
	seed := newSeed(t)
	t0 := time.Now()
	v := startVM(t, img.Raw, vmConfig{DiskSize: "6G", Seed: seed.seed, Network: true, Firmware: "bios"}, seed.sshKey)
	t.Logf("accelerator: %s", v.accel)

	v.waitConsole(bootTimeout, "debvisor: booting slot A")
	t.Logf("GRUB picked slot A after %s", time.Since(t0).Round(time.Millisecond))
	if n := strings.Count(v.console(), "debvisor: booting slot A"); n != 1 {
		t.Fatalf("GRUB's line appears %d times on the serial console, want once", n)
	}
	// The kernel's own output reaches the serial console too.
	v.waitConsole(bootTimeout, "Linux version")
	var status map[string]any
	waitFor(t, bootTimeout, "the agent to answer over mTLS", func() bool {
		var err error
		status, err = dvctlStatus(t, seed, v.apiPort)
		return err == nil
	})
	t.Logf("agent answered after %s", time.Since(t0).Round(time.Millisecond))
	if status["bootedSlot"] != "A" && status["booted_slot"] != "A" {
		t.Fatalf("agent reports booted slot %v, want A (status %v)", status["bootedSlot"], status)
	}
	// The version the spec declared, from the slot's release file (osimage.Release).
	if status["osVersion"] != img.Manifest.Version && status["os_version"] != img.Manifest.Version {
		t.Fatalf("agent reports OS version %v, want the image's %q (status %v)", status["osVersion"], img.Manifest.Version, status)
	}
	v.waitSSH(2 * time.Minute)
	cmdline := v.mustSSH("cat /proc/cmdline")
	if !strings.Contains(cmdline, "debvisor.slot=A") || !strings.Contains(cmdline, "debvisor.fallback=0") {
		t.Fatalf("GRUB did not boot slot A normally: %s", cmdline)
	}
	// A BIOS boot: no EFI runtime in the guest.
	if out, err := v.ssh("test -d /sys/firmware/efi"); err == nil {
		t.Fatalf("guest has /sys/firmware/efi: this was not a BIOS boot %s", out)
	}
	// GRUB ran without errors, including save_env of A_TRY through INT 13h
	// into the FAT ESP (it runs before the "booting slot" line).
	if pre, _, _ := strings.Cut(v.console(), "Linux version"); strings.Contains(pre, "error:") {
		t.Fatalf("GRUB reported an error on the serial console:\n%s", pre)
	}
	// The BIOS boot partition before the ESP does not stop the data
	// partition, still last on disk, from being grown (by
	// debvisor-growdata.service, beside the agent: wait for its end).
	if out := v.mustSSH(`for i in $(seq 300); do s=$(systemctl show -p ActiveState --value debvisor-growdata.service); case $s in active|failed) break;; esac; sleep 1; done; echo $s`); out != "active" {
		t.Fatalf("debvisor-growdata.service ended %q, want active", out)
	}
	diskBytes, _ := strconv.ParseInt(v.mustSSH("blockdev --getsize64 /dev/vda"), 10, 64)
	dataBytes, _ := strconv.ParseInt(v.mustSSH("blockdev --getsize64 /dev/disk/by-partlabel/debvisor-data"), 10, 64)
	if diskBytes < 6<<30 || dataBytes < diskBytes-img.Manifest.Partitions[3].Start-(4<<20) {
		t.Fatalf("data partition was not grown to fill the disk: disk %d, partition %d", diskBytes, dataBytes)
	}
	if out := v.mustSSH("cat /sys/class/block/vda5/start /sys/class/block/vda5/size"); strings.Fields(out)[0] != "34" {
		t.Fatalf("partition 5 (BIOS boot) start/size in the guest: %s", out)
	}
}
