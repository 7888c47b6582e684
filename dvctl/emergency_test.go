package dvctl

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/osimage"
)

// emergencyNode is a node as the emergency mode sees it: a mounted ESP
// with both environment copies, the kernel command line and the release.
func emergencyNode(t *testing.T, booted string, env *bootenv.Env) (espDir, cmdline, release string) {
	t.Helper()
	dir := t.TempDir()
	espDir = filepath.Join(dir, "esp")
	if err := bootenv.NewStore(bootenv.DirFS{Root: espDir}).Save(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	cmdline = filepath.Join(dir, "cmdline")
	release = filepath.Join(dir, "release")
	if err := os.WriteFile(cmdline, []byte("ro debvisor.slot="+booted+" debvisor.fallback=0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(release, osimage.Release{Version: "0.2.0"}.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	return espDir, cmdline, release
}

func slotsJSON(t *testing.T, out string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return m
}

func TestEmergencySlotsRollbackRepair(t *testing.T) {
	env := bootenv.New()
	env.Activate(osimage.SlotB)
	env.Booted(env.NextBoot())
	env.Commit(osimage.SlotB)
	espDir, cmdline, release := emergencyNode(t, "B", env)
	flags := []string{"--esp", espDir, "--cmdline", cmdline, "--release", release}
	em := func(args ...string) (string, error) {
		return run(t, append(append([]string{"emergency"}, args...), flags...)...)
	}

	out, err := em("slots")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "booted,primary,committed") || !strings.Contains(out, "next boot: B") || !strings.Contains(out, "0.2.0") {
		t.Fatalf("slots:\n%s", out)
	}

	// One-shot rollback: A next, then B again.
	out, err = em("rollback", "--once", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if m := slotsJSON(t, out); m["next_boot"] != "A" && m["nextBoot"] != "A" {
		t.Fatalf("after rollback --once: %s", out)
	}
	s := bootenv.NewStore(bootenv.DirFS{Root: espDir})
	e, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if nb := e.NextBoot(); nb.Slot != osimage.SlotA || !nb.Once {
		t.Fatalf("env after rollback --once: %+v", nb)
	}

	// A zeroed copy is reported by slots, repaired by repair-env.
	if err := os.WriteFile(filepath.Join(espDir, osimage.ESPGrubEnvBackup), make([]byte, bootenv.BlockSize), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = em("slots")
	if err != nil || !strings.Contains(out, "backup copy is damaged") {
		t.Fatalf("slots with a damaged backup: %v\n%s", err, out)
	}
	out, err = em("repair-env")
	if err != nil || !strings.Contains(out, "backup copy was damaged") {
		t.Fatalf("repair-env: %v\n%s", err, out)
	}
	if c, err := s.Read(context.Background()); err != nil || c.RepairBackup || c.RepairPrimary {
		t.Fatalf("after repair: %+v %v", c, err)
	}

	// Both copies damaged: refused without --reset-to, rebuilt with it.
	for _, f := range []string{osimage.ESPGrubEnv, osimage.ESPGrubEnvBackup} {
		if err := os.WriteFile(filepath.Join(espDir, f), []byte("garbage"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := em("repair-env"); err == nil || !strings.Contains(err.Error(), "--reset-to") {
		t.Fatalf("repair-env with both damaged: %v\n%s", err, out)
	}
	if out, err := em("repair-env", "--reset-to", "B"); err != nil {
		t.Fatalf("repair-env --reset-to B: %v\n%s", err, out)
	}
	e, err = s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if nb := e.NextBoot(); nb.Slot != osimage.SlotB || nb.Fallback {
		t.Fatalf("after reset-to B: %+v", nb)
	}
	if ok, _ := e.SlotState(osimage.SlotA); ok {
		t.Fatal("reset-to B left A bootable")
	}

	// Persistent rollback to a slot that holds nothing is refused.
	if out, err := em("rollback"); err == nil || !strings.Contains(err.Error(), "nothing to roll back to") {
		t.Fatalf("rollback to an empty slot: %v\n%s", err, out)
	}
}
