package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/boot/esp"
	"github.com/debvisor/debvisor/internal/qemu"
	"github.com/debvisor/debvisor/osimage"
)

// powerCutConfig is nodeAgentConfig with the boot environment written
// slowly: a pause after each of its two copies, so that a power cut at a
// random moment of the flip lands between the copies often enough.
const powerCutConfig = nodeAgentConfig + "  test_env_pause: 3s\n"

// cuts is how many power cuts testPowerCuts makes: at least 10 in `make
// test`; `make soak` sets DEBVISOR_SOAK_CUTS=200.
func cuts(t *testing.T) int {
	if v := os.Getenv("DEBVISOR_SOAK_CUTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("DEBVISOR_SOAK_CUTS=%q: want a positive number", v)
		}
		return n
	}
	return 10
}

// cutNode is the power-cut test's node: a qcow2 disk holding an internal
// snapshot of the running node ("ready": booted, committed, agent up), so
// every cut starts from a running agent in seconds instead of a boot.
type cutNode struct {
	t    *testing.T
	dir  string
	disk string
	seed seed
	fwd  []qemu.Forward
}

func (c *cutNode) start(ctx context.Context, loadvm string) *node {
	c.t.Helper()
	dir, err := os.MkdirTemp(c.dir, "run-")
	if err != nil {
		c.t.Fatal(err)
	}
	// BIOS: no writable pflash, so the whole machine state fits in the
	// qcow2 snapshot.
	m, err := qemu.Start(ctx, qemu.Config{
		Name: "debvisor-powercut", Dir: dir, Firmware: qemu.FirmwareBIOS, Accel: qemu.AccelTCG, MemoryMiB: 1536,
		Drives:  []qemu.Drive{{File: c.disk, Format: "qcow2"}, {File: c.seed.ISO, Format: "raw", ReadOnly: true}},
		Network: true, Forwards: c.fwd, Monitor: true, LoadVM: loadvm,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = m.Stop() })
	return &node{t: c.t, m: m, seed: c.seed, disk: c.disk}
}

// readEnv reads both copies of the boot environment from the (stopped)
// node's disk, the way GRUB will find them.
func (c *cutNode) readEnv(ctx context.Context) (bootenv.Copies, error) {
	c.t.Helper()
	raw := filepath.Join(c.dir, "esp.raw")
	os.Remove(raw)
	// The ESP is partition 1 at 1 MiB; 101 MiB covers it.
	if out, err := exec.CommandContext(ctx, "qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=1M", "count=101", "if="+c.disk, "of="+raw).CombinedOutput(); err != nil {
		c.t.Fatalf("qemu-img dd: %v\n%s", err, out)
	}
	f, err := esp.Open(raw, esp.ReadOnly())
	if err != nil {
		c.t.Fatalf("open the ESP: %v", err)
	}
	defer f.Close()
	return bootenv.NewStore(f).Read(ctx)
}

// damageEnv overwrites one copy of the environment on the stopped node's
// disk with data, through a raw copy of the ESP written back with qemu-io.
func (c *cutNode) damageEnv(ctx context.Context, name string, data []byte) {
	c.t.Helper()
	raw := filepath.Join(c.dir, "esp.raw")
	os.Remove(raw)
	if out, err := exec.CommandContext(ctx, "qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=1M", "count=101", "if="+c.disk, "of="+raw).CombinedOutput(); err != nil {
		c.t.Fatalf("qemu-img dd: %v\n%s", err, out)
	}
	f, err := esp.Open(raw)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := f.WriteFile(ctx, name, data); err != nil {
		c.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		c.t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "qemu-io", "-f", "qcow2", "-c", "write -s "+raw+" 0 101M", c.disk).CombinedOutput(); err != nil {
		c.t.Fatalf("qemu-io: %v\n%s", err, out)
	}
}

// TestSecondNode runs, one after the other, the node tests that are
// shorter than TestNodeLifecycle, beside it: power cuts, then host
// networking. As separate parallel tests, go test's two slots (GOMAXPROCS
// on CI) went to whichever two started first, and when the short ones
// did, the longest started minutes late; three guests at once on two
// cores slowed all three more than that.
func TestSecondNode(t *testing.T) {
	t.Parallel()
	t.Run("PowerCuts", testPowerCuts)
	t.Run("HostNetwork", testHostNetwork)
}

// testPowerCuts kills QEMU at random moments while the agent writes the
// new slot and while it flips the boot environment. After every cut the
// environment still parses, GRUB (read on the serial console, no full
// boot needed) boots a slot that holds a complete, verified system, and on
// some cuts the node boots up and the agent's slot status tells the
// truth. Then one copy of the environment is zeroed, then half-written:
// the old slot still boots and the copy is repaired.
func testPowerCuts(t *testing.T) {
	requireTools(t, "qemu-io", "qemu-img")
	ctx := context.Background()
	reg := startRegistry(t)
	v1img := build(ctx, t, "0.1.0", "")
	v2 := reg.push(ctx, t, build(ctx, t, "0.2.0", ""))
	s := newSeed(t, map[string]string{
		"/etc/debvisor/agent.yaml":       powerCutConfig,
		"/etc/debvisor/keys/release.pub": string(reg.PubPEM),
	})
	c := &cutNode{t: t, dir: t.TempDir(), seed: s}
	c.disk = filepath.Join(c.dir, "disk.qcow2")
	if err := qemu.Overlay(ctx, v1img.Raw, c.disk, "6G"); err != nil {
		t.Fatal(err)
	}
	for _, g := range []int{22, qemu.AgentPort} {
		p, err := qemu.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		c.fwd = append(c.fwd, qemu.Forward{Host: p, Guest: g})
	}

	// Boot once, let the first boot commit, and snapshot the running node.
	n := c.start(ctx, "")
	n.waitAgent(ctx)
	n.waitSlots(ctx, "the first boot to be committed", func(st *v1.SlotStatus) bool {
		return slot(st, "A").GetCommitted() && !slot(st, "A").GetTried()
	})
	if out, err := n.m.HMP(ctx, "savevm ready"); err != nil || out != "" {
		t.Fatalf("savevm: %v %q", err, out)
	}
	if err := n.m.Kill(); err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var inWrite, inFlip, afterFlip int
	for i := range cuts(t) {
		duringFlip := i%2 == 1
		n := c.start(ctx, "ready")
		n.waitAgent(ctx)
		cl := n.client()
		op, err := v1.NewUpgradeServiceClient(cl.Conn()).Upgrade(ctx, &v1.UpgradeRequest{Ref: v2.Ref, Mode: v1.UpgradeRequest_MODE_STAGE})
		if err != nil {
			t.Fatalf("cut %d: Upgrade: %v", i, err)
		}
		// Wait for the phase to cut in (for the write: bytes flowing),
		// then a random moment inside it: the write takes seconds, the
		// flip two pauses of 3 s.
		phase, window := "write", 3*time.Second
		if duringFlip {
			phase, window = "activate", 6*time.Second
		}
		var seen *v1.Operation
		if err := n.m.WaitFor(ctx, 50*time.Millisecond, "phase "+phase, func(ctx context.Context) error {
			seen, err = cl.Operations.GetOperation(ctx, &v1.GetOperationRequest{OperationId: op.GetId()})
			if err != nil {
				return err
			}
			if seen.GetPhase() != phase && seen.GetState() == v1.Operation_STATE_RUNNING {
				return fmt.Errorf("in phase %q", seen.GetPhase())
			}
			if phase == "write" && seen.GetDone() == 0 && seen.GetState() == v1.Operation_STATE_RUNNING {
				return errors.New("no byte written yet")
			}
			if seen.GetState() != v1.Operation_STATE_RUNNING {
				return errors.New("the upgrade ended before the cut")
			}
			return nil
		}); err != nil {
			t.Fatalf("cut %d: %v (operation %v)", i, err, seen)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(window))))
		last, _ := cl.Operations.GetOperation(ctx, &v1.GetOperationRequest{OperationId: op.GetId()})
		if err := n.m.Kill(); err != nil {
			t.Fatal(err)
		}
		// What the agent had reached decides what may boot: before the
		// flip only the old slot; from the flip on, the new slot is
		// complete and verified, so either is fine.
		newAllowed := last.GetPhase() == "activate" || last.GetPhase() == "reboot" || last.GetState() == v1.Operation_STATE_SUCCEEDED
		switch {
		case !newAllowed:
			inWrite++
		case last.GetState() == v1.Operation_STATE_SUCCEEDED:
			afterFlip++
		default:
			inFlip++
		}

		copies, err := c.readEnv(ctx)
		if err != nil {
			t.Fatalf("cut %d (phase %s): the boot environment does not parse: %v", i, last.GetPhase(), err)
		}
		next := copies.Env.NextBoot()
		if next.Slot == osimage.SlotB && !newAllowed {
			t.Fatalf("cut %d during %s: GRUB would boot the half-written slot B", i, last.GetPhase())
		}

		// GRUB's choice on the serial console, without a full boot;
		// every fifth cut boots all the way and asks the agent.
		n = c.start(ctx, "")
		boots := n.waitBoots(ctx, 1)
		if boots[0].Slot != string(next.Slot) {
			t.Fatalf("cut %d: GRUB booted %+v, the environment says %+v", i, boots[0], next)
		}
		t.Logf("cut %d: killed in phase %q (%d/%d bytes); GRUB boots %s; env repair primary=%v backup=%v",
			i, last.GetPhase(), last.GetDone(), last.GetTotal(), boots[0].Slot, copies.RepairPrimary, copies.RepairBackup)
		if i%5 == 0 {
			n.waitAgent(ctx)
			st := n.waitSlots(ctx, "the boot after the cut to be committed", func(st *v1.SlotStatus) bool {
				return st.GetBootedSlot() == boots[0].Slot && !slot(st, boots[0].Slot).GetTried()
			})
			b := slot(st, "B")
			switch {
			case boots[0].Slot == "B" && (b.GetVersion() != "0.2.0" || b.GetLastResult() != "committed"):
				t.Fatalf("cut %d: booted B but the status says:\n%s", i, slotsText(st))
			case boots[0].Slot == "A" && !newAllowed && (b.GetBootable() || b.GetLastResult() != "write-failed"):
				t.Fatalf("cut %d: a cut write must show B not bootable, write-failed:\n%s", i, slotsText(st))
			}
		}
		if err := n.m.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d cuts: %d during the write, %d during the flip, %d after it", cuts(t), inWrite, inFlip, afterFlip)
	if inWrite == 0 || inFlip+afterFlip == 0 {
		t.Fatalf("the cuts did not cover both the write and the flip (write %d, flip %d, after %d)", inWrite, inFlip, afterFlip)
	}

	// One copy zeroed, then the other half-written: the committed slot
	// still boots and the agent repairs the copy.
	for _, dmg := range []struct {
		name string
		data []byte
	}{
		{osimage.ESPGrubEnvBackup, make([]byte, bootenv.BlockSize)},
		{osimage.ESPGrubEnv, halfWritten(t)},
	} {
		// Back to the committed v1 node's disk.
		if out, err := exec.CommandContext(ctx, "qemu-img", "snapshot", "-a", "ready", c.disk).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img snapshot -a: %v\n%s", err, out)
		}
		c.damageEnv(ctx, dmg.name, dmg.data)
		copies, err := c.readEnv(ctx)
		if err != nil || (!copies.RepairBackup && !copies.RepairPrimary) {
			t.Fatalf("damaging %s: %+v %v", dmg.name, copies, err)
		}
		n := c.start(ctx, "")
		if b := n.waitBoots(ctx, 1); b[0].Slot != "A" {
			t.Fatalf("with %s damaged GRUB booted %+v", dmg.name, b[0])
		}
		n.waitAgent(ctx)
		n.waitSlots(ctx, "the boot to be committed", func(st *v1.SlotStatus) bool { return !slot(st, "A").GetTried() })
		if err := n.m.Kill(); err != nil {
			t.Fatal(err)
		}
		copies, err = c.readEnv(ctx)
		if err != nil || copies.RepairBackup || copies.RepairPrimary {
			t.Fatalf("after the boot, %s was not repaired: %+v %v", dmg.name, copies, err)
		}
	}
}

// halfWritten is an environment block whose first half is new and whose
// second half is garbage: an in-place write that stopped in the middle.
func halfWritten(t *testing.T) []byte {
	t.Helper()
	b, err := bootenv.New().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	copy(b[bootenv.BlockSize/2:], strings.Repeat("\x00garbage", bootenv.BlockSize/16))
	return b
}
