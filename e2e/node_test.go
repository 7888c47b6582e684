package e2e_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/imagebuilder"
)

// nodeAgentConfig is the agent config the test nodes get from their
// preseed: the image's defaults, plus plain HTTP to the test registry
// (only because the test asks for it) and a commit deadline that keeps a
// failed upgrade's rollback short.
const nodeAgentConfig = `state_dir: /var/lib/debvisor
tls:
  ca: /etc/debvisor/pki/ca.crt
  cert: /etc/debvisor/pki/node.crt
  key: /etc/debvisor/pki/node.key
libvirt:
  socket: /var/run/libvirt/libvirt-sock
  uri: qemu:///system
storage:
  pool_roots: [/data/pools]
  default_pool: default
upgrade:
  insecure_http: true
  commit_deadline: 90s
`

// TestNodeLifecycle is one DebVisor node's life under QEMU: it boots the
// built image (first boot, data partition grown, read-only root, the one
// health report healthy, kmscon on tty1, the default pool), applies
// examples/quickstart with OpenTofu against the node (virsh inside the
// node as the witness, an empty second plan), upgrades
// v1 → v2 from a registry through the API (reboot, health, commit, v1
// kept, the quickstart's autostart VM running again, then destroyed
// without a trace), reboots plainly into v2, rejects v3 whose health check fails
// (automatic rollback with the reason in the slot status) and v4 whose
// kernel panics (GRUB falls back with no help from userspace), upgrades
// v2 → v5 by changing a debvisor_node's image in OpenTofu, and finally
// inspects the disk that lived all this.
func TestNodeLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := startRegistry(t)
	v1img := build(ctx, t, "0.1.0", "")
	v2 := reg.push(ctx, t, build(ctx, t, "0.2.0", ""))
	// v3 boots, but libvirtd is masked: the health report fails.
	v3 := reg.push(ctx, t, build(ctx, t, "0.3.0", "systemd.mask=libvirtd.service systemd.mask=libvirtd.socket"))
	// v4's init exits at once: the kernel panics (panic=10 reboots).
	v4 := reg.push(ctx, t, build(ctx, t, "0.4.0", "init=/bin/false"))
	// v5 is a good release, rolled out by OpenTofu.
	v5 := reg.push(ctx, t, build(ctx, t, "0.5.0", ""))

	s := newSeed(t, map[string]string{
		"/etc/debvisor/agent.yaml":       nodeAgentConfig,
		"/etc/debvisor/keys/release.pub": string(reg.PubPEM),
	})
	n := bootNode(ctx, t, v1img.Raw, "8G", s)

	// First boot of v1.
	if b := n.waitBoots(ctx, 1); b[0].Slot != "A" || b[0].Fallback {
		t.Fatalf("GRUB's first boot: %+v", b[0])
	}
	node := n.waitAgent(ctx)
	if node.GetBootedSlot() != "A" || node.GetOsVersion() != "0.1.0" {
		t.Fatalf("node: slot %q version %q", node.GetBootedSlot(), node.GetOsVersion())
	}
	n.waitSSH(ctx)
	checkFirstBoot(ctx, t, n)
	checkHealthy(ctx, t, n)
	checkConsole(ctx, t, n)
	st := n.waitSlots(ctx, "the first boot to be committed", func(st *v1.SlotStatus) bool {
		a := slot(st, "A")
		return a.GetCommitted() && !a.GetTried() && a.GetLastResult() == "committed"
	})
	t.Logf("after the first boot:\n%s", slotsText(st))

	// The quickstart's pool, volume and VM, applied by OpenTofu against
	// the node's agent; the VM (autostart) lives through the upgrade.
	const qsPool = "/data/pools/quickstart"
	qs := quickstartApply(ctx, t, n, qsPool)

	// v1 -> v2 through the API.
	t0 := time.Now()
	op := n.upgrade(ctx, v2.Ref, v1.UpgradeRequest_MODE_REBOOT)
	if op.GetResult()["slot"] != "B" || op.GetResult()["version"] != "0.2.0" || op.GetPhase() != "reboot" || op.GetResult()["digest"] == "" {
		t.Fatalf("upgrade operation: %v", op)
	}
	tWritten := time.Now()
	if b := n.waitBoots(ctx, 2); b[1].Slot != "B" || b[1].Fallback {
		t.Fatalf("GRUB's boot after the upgrade: %+v", b[1])
	}
	tGRUB := time.Now()
	n.waitAgent(ctx)
	tAgent := time.Now()
	st = n.waitSlots(ctx, "v2 to be committed", func(st *v1.SlotStatus) bool {
		b := slot(st, "B")
		return st.GetBootedSlot() == "B" && b.GetCommitted() && !b.GetTried()
	})
	total := time.Since(t0)
	// docs/benchmarks.md ("Upgrade to committed") quotes this line; the
	// GRUB and agent moments are polled every 2 and 3 s.
	t.Logf("v1 -> v2 committed %s after Upgrade: operation (resolve, verify, write, read back, activate) %s, shutdown until GRUB's choice %s, boot until the agent answers %s, health check until committed %s; booting (GRUB to agent) %.0f%% of the whole, shutdown and boot %.0f%%\n%s",
		total.Round(time.Second), tWritten.Sub(t0).Round(time.Second), tGRUB.Sub(tWritten).Round(time.Second), tAgent.Sub(tGRUB).Round(time.Second), time.Since(tAgent).Round(time.Second),
		100*tAgent.Sub(tGRUB).Seconds()/total.Seconds(), 100*tAgent.Sub(tWritten).Seconds()/total.Seconds(), slotsText(st))
	if b, a := slot(st, "B"), slot(st, "A"); b.GetVersion() != "0.2.0" || b.GetArtifactDigest() == "" || b.GetLastResult() != "committed" ||
		!a.GetBootable() || a.GetVersion() != "0.1.0" {
		t.Fatalf("slots after v1 -> v2:\n%s", slotsText(st))
	}
	n.waitSSH(ctx)
	if out := n.mustSSH(ctx, "cat /etc/debvisor-e2e-marker"); out != "persisted" {
		t.Fatalf("/etc change lost across the upgrade: %q", out)
	}
	checkHealthy(ctx, t, n)
	checkQuickstartVM(ctx, t, n, "after the upgrade to v2")
	qs.planEmpty(ctx, "after the upgrade to v2")
	quickstartDestroy(ctx, t, n, qs, qsPool)

	// A plain reboot boots v2 again, not as a fallback; the first boot's
	// work is not redone and the node keeps its identity.
	hostKey := n.mustSSH(ctx, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
	_, _ = n.ssh(ctx, "systemctl reboot")
	if b := n.waitBoots(ctx, 3); b[2].Slot != "B" || b[2].Fallback {
		t.Fatalf("plain reboot: GRUB booted %+v", b[2])
	}
	n.waitSlots(ctx, "the plain reboot to be committed", func(st *v1.SlotStatus) bool {
		return st.GetBootedSlot() == "B" && !slot(st, "B").GetTried() && !st.GetFallbackBoot()
	})
	n.waitSSH(ctx)
	if out := n.mustSSH(ctx, "systemctl show -p ConditionResult --value debvisor-firstboot.service"); out != "no" {
		t.Fatalf("firstboot ran again on a later boot (ConditionResult=%s)", out)
	}
	if out := n.mustSSH(ctx, "systemctl show -p ConditionResult --value debvisor-hostkeys.service"); out != "no" {
		t.Fatalf("host keys were made again on a later boot (ConditionResult=%s)", out)
	}
	if out := n.mustSSH(ctx, growDataDone+"; journalctl -b -o cat -u debvisor-growdata.service"); !strings.HasPrefix(out, "active") || !strings.Contains(out, "already fills the disk") {
		t.Fatalf("debvisor-growdata on a later boot of the same disk: %s", out)
	}
	if k := n.mustSSH(ctx, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"); k != hostKey {
		t.Fatalf("host key changed across reboots: %s -> %s", hostKey, k)
	}
	if out := n.mustSSH(ctx, "cat /etc/debvisor-e2e-marker"); out != "persisted" {
		t.Fatalf("/etc change lost across the reboot: %q", out)
	}

	// v2 -> v3: v3 fails its health check, the node rolls back on its own.
	n.upgrade(ctx, v3.Ref, v1.UpgradeRequest_MODE_REBOOT)
	if b := n.waitBoots(ctx, 4); b[3].Slot != "A" {
		t.Fatalf("GRUB's boot of v3: %+v", b[3])
	}
	if b := n.waitBoots(ctx, 5); b[4].Slot != "B" || b[4].Fallback {
		t.Fatalf("after v3 failed its health check GRUB booted %+v, want B", b[4])
	}
	st = n.waitSlots(ctx, "the rollback from v3 to be recorded", func(st *v1.SlotStatus) bool {
		return st.GetBootedSlot() == "B" && slot(st, "A").GetLastResult() == "health-failed"
	})
	if a := slot(st, "A"); a.GetBootable() || a.GetVersion() != "0.3.0" || !strings.Contains(a.GetReason(), "libvirt") {
		t.Fatalf("slot A after v3's rollback:\n%s", slotsText(st))
	}
	t.Logf("after v3:\n%s", slotsText(st))

	// v2 -> v4: v4's kernel panics; GRUB falls back to v2 by itself.
	n.upgrade(ctx, v4.Ref, v1.UpgradeRequest_MODE_REBOOT)
	if b := n.waitBoots(ctx, 6); b[5].Slot != "A" {
		t.Fatalf("GRUB's boot of v4: %+v", b[5])
	}
	if err := n.m.WaitConsole(ctx, "Kernel panic"); err != nil {
		t.Fatal(err)
	}
	if b := n.waitBoots(ctx, 7); b[6].Slot != "B" || b[6].Fallback {
		t.Fatalf("after v4 panicked GRUB booted %+v, want B", b[6])
	}
	st = n.waitSlots(ctx, "v4's rollback to be recorded", func(st *v1.SlotStatus) bool {
		return st.GetBootedSlot() == "B" && slot(st, "A").GetLastResult() == "rolled-back"
	})
	if a := slot(st, "A"); a.GetBootable() || a.GetVersion() != "0.4.0" || !strings.Contains(a.GetReason(), "never committed") {
		t.Fatalf("slot A after v4's rollback:\n%s", slotsText(st))
	}
	t.Logf("after v4:\n%s", slotsText(st))

	// v2 -> v5 by OpenTofu: a debvisor_node adopts the node at v2, then
	// its image changes to v5; apply returns once v5 is committed.
	if got := tofuUpgrade(ctx, t, n, v2.Ref, v5.Ref); got != "A 0.5.0" {
		t.Fatalf("debvisor_node after the upgrade to v5 reads booted %q, want \"A 0.5.0\"", got)
	}
	if b := n.waitBoots(ctx, 8); b[7].Slot != "A" || b[7].Fallback {
		t.Fatalf("GRUB's boot of v5: %+v", b[7])
	}
	st = n.waitSlots(ctx, "v5 to be committed", func(st *v1.SlotStatus) bool {
		return st.GetBootedSlot() == "A" && slot(st, "A").GetCommitted()
	})
	t.Logf("after v5 (tofu):\n%s", slotsText(st))

	// The disk has lived: eight boots, four upgrades written, a journal
	// full of history. Inspect reads it (the first inspect of a booted
	// disk used to crash in go-diskfs's ext4 reader) and sees what GRUB
	// will boot.
	_, _ = n.ssh(ctx, "sync")
	if err := n.m.Stop(); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(t.TempDir(), "lived.raw")
	run(t, "qemu-img", "convert", "-O", "raw", n.disk, raw)
	rep, err := imagebuilder.Inspect(ctx, raw)
	if rep == nil {
		t.Fatalf("inspect of the lived disk: %v", err)
	}
	t.Logf("inspect of the lived disk: checked %v, problems %v (%v)", rep.Checked, rep.Problems, err)
	if rep.Slots["B"].Version != "0.2.0" || rep.Slots["A"].Version != "0.5.0" || rep.NextBoot != "A" {
		t.Fatalf("inspect of the lived disk: slots %+v, next boot %q", rep.Slots, rep.NextBoot)
	}
}

// growDataDone waits (up to 5 min) until debvisor-growdata.service has
// ended and prints its ActiveState: active once it succeeded.
const growDataDone = `for i in $(seq 300); do s=$(systemctl show -p ActiveState --value debvisor-growdata.service); case $s in active|failed) break;; esac; sleep 1; done; echo $s`

// checkFirstBoot: firstboot ran once, the data partition fills the disk,
// / is the read-only squashfs and /etc an overlay that keeps changes.
func checkFirstBoot(ctx context.Context, t *testing.T, n *node) {
	t.Helper()
	n.mustSSH(ctx, "test -s /etc/ssh/ssh_host_ed25519_key && test -f /var/lib/debvisor/firstboot.done")
	if h := n.mustSSH(ctx, "hostname"); h != "node1" {
		t.Fatalf("preseed hostname not applied: %q", h)
	}
	// debvisor-growdata runs beside the agent: wait for its end.
	if out := n.mustSSH(ctx, growDataDone); out != "active" {
		t.Fatalf("debvisor-growdata.service ended %q, want active", out)
	}
	disk, _ := strconv.ParseInt(n.mustSSH(ctx, "blockdev --getsize64 /dev/vda"), 10, 64)
	part, _ := strconv.ParseInt(n.mustSSH(ctx, "blockdev --getsize64 /dev/disk/by-partlabel/debvisor-data"), 10, 64)
	start, _ := strconv.ParseInt(n.mustSSH(ctx, "cat /sys/class/block/vda4/start"), 10, 64)
	fs, _ := strconv.ParseInt(n.mustSSH(ctx, "df -B1 --output=size /data | tail -1"), 10, 64)
	if disk < 8<<30 || part < disk-start*512-(4<<20) || fs < part*9/10 {
		t.Fatalf("data partition not grown to fill the disk: disk %d, partition %d from sector %d, filesystem %d", disk, part, start, fs)
	}
	if out := n.mustSSH(ctx, "findmnt -n -o FSTYPE,OPTIONS /"); !strings.HasPrefix(out, "squashfs") || !strings.Contains(out, "ro") {
		t.Fatalf("root mount: %s", out)
	}
	if out, err := n.ssh(ctx, "touch /usr/debvisor-write-test"); err == nil {
		t.Fatalf("writing under / succeeded: %s", out)
	}
	if out := n.mustSSH(ctx, "findmnt -n -o FSTYPE /etc"); out != "overlay" {
		t.Fatalf("/etc is %s, want overlay", out)
	}
	if out := n.mustSSH(ctx, "cat /proc/cmdline"); !strings.Contains(out, "debvisor.slot=A") || !strings.Contains(out, "debvisor.fallback=0") {
		t.Fatalf("GRUB did not boot slot A normally: %s", out)
	}
	n.mustSSH(ctx, "echo persisted > /etc/debvisor-e2e-marker")
}

// checkHealthy: the one health report is healthy, every check passed, and
// the image's own validate script agrees.
func checkHealthy(ctx context.Context, t *testing.T, n *node) {
	t.Helper()
	c := n.client()
	var summary *v1.HealthSummary
	ctx2, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	err := n.m.WaitFor(ctx2, 5*time.Second, "a healthy report", func(ctx context.Context) error {
		op, err := c.Node.CheckHealth(ctx, &v1.CheckHealthRequest{})
		if err != nil {
			return err
		}
		if _, err := c.Operations.WaitOperation(ctx, &v1.WaitOperationRequest{OperationId: op.GetId()}); err != nil {
			return err
		}
		node, err := c.Node.GetNode(ctx, &v1.GetNodeRequest{})
		if err != nil {
			return err
		}
		summary = node.GetHealth()
		if summary.GetStatus() != v1.HealthSummary_STATUS_HEALTHY {
			return fmt.Errorf("%s: %s", summary.GetStatus(), failing(summary))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the node's health report is not healthy: %v", err)
	}
	var names []string
	for _, ch := range summary.GetChecks() {
		names = append(names, ch.GetName())
	}
	for _, want := range []string{"api-serving", "libvirt", "pools-active", "autostart-vms", "units-active", "data-partition", "failed-units", "validate-components", "node-certificate"} {
		if !strings.Contains(","+strings.Join(names, ",")+",", ","+want+",") {
			t.Errorf("the health report has no %q check (has %v)", want, names)
		}
	}
	if out, err := n.ssh(ctx, "/usr/local/sbin/validate-components.sh"); err != nil {
		t.Fatalf("validate-components.sh: %v\n%s", err, out)
	}
}

func failing(s *v1.HealthSummary) string {
	var out []string
	for _, c := range s.GetChecks() {
		if !c.GetOk() {
			out = append(out, c.GetName()+": "+c.GetMessage())
		}
	}
	return strings.Join(out, "; ")
}

// checkConsole: kmscon, not getty, owns tty1; libvirtd runs under systemd
// and the default pool lives on the data partition.
func checkConsole(ctx context.Context, t *testing.T, n *node) {
	t.Helper()
	if out := n.mustSSH(ctx, "systemctl is-active kmsconvt@tty1.service || true"); out != "active" {
		t.Fatalf("kmsconvt@tty1 is %q\n%s", out, n.mustSSH(ctx, "systemctl status --no-pager kmsconvt@tty1.service getty@tty1.service 2>&1 || true"))
	}
	if out := n.mustSSH(ctx, "pgrep -a kmscon || true"); !strings.Contains(out, "--vt=tty1") {
		t.Fatalf("no kmscon process on tty1: %q", out)
	}
	if out := n.mustSSH(ctx, "systemctl is-active getty@tty1.service || true"); out == "active" {
		t.Fatal("getty@tty1 runs beside kmscon")
	}
	if out := n.mustSSH(ctx, "systemctl is-active libvirtd.service"); out != "active" {
		t.Fatalf("libvirtd: %s", out)
	}
	if out := n.mustSSH(ctx, "virsh pool-dumpxml default | grep '<path>'"); !strings.Contains(out, "/data/pools/default") {
		t.Fatalf("default pool: %s", out)
	}
}

func slotsText(st *v1.SlotStatus) string {
	var b strings.Builder
	for _, s := range st.GetSlots() {
		fmt.Fprintf(&b, "  %s: version=%s bootable=%v tried=%v booted=%v primary=%v committed=%v result=%s reason=%q\n",
			s.GetName(), s.GetVersion(), s.GetBootable(), s.GetTried(), s.GetBooted(), s.GetPrimary(), s.GetCommitted(), s.GetLastResult(), s.GetReason())
	}
	fmt.Fprintf(&b, "  booted=%s fallback=%v next=%s once=%v", st.GetBootedSlot(), st.GetFallbackBoot(), st.GetNextBoot(), st.GetNextBootOnce())
	return b.String()
}
