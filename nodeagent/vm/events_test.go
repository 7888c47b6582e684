package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/libvirtconn"
	"github.com/debvisor/debvisor/nodeagent/storage"
	"github.com/debvisor/debvisor/testenv/libvirtd"
)

// TestSnapshotsFollowLibvirtEvents: against the real libvirtd, a VM's snapshot is dropped when
// the VM is started and stopped behind the agent's back (virsh), because libvirt's lifecycle
// events reach WatchEvents; and no snapshot is used before the subscription stands.
func TestSnapshotsFollowLibvirtEvents(t *testing.T) {
	env := libvirtd.EnsureRunning(t)
	conn := libvirtconn.New(libvirtconn.Config{Socket: env.Socket}, nil)
	t.Cleanup(func() { conn.Close() })
	seeds, err := os.MkdirTemp("/var/tmp", "dvsnap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(seeds) })
	m := New(conn, storage.New(conn, storage.Config{}, nil), Config{SeedDir: seeds}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() { watched <- m.WatchEvents(ctx) }()
	t.Cleanup(func() { cancel(); <-watched })

	var b [3]byte
	_, _ = rand.Read(b[:])
	name := "dvt-snap-" + hex.EncodeToString(b[:])
	spec := &v1.VMSpec{Vcpus: 1, MemoryMib: 32, PowerState: v1.PowerState_POWER_STATE_STOPPED}
	if err := Normalize("spec", spec); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(context.Background(), name, spec, Request{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Delete(context.Background(), name); err != nil {
			t.Errorf("delete %s: %v", name, err)
		}
	})

	eventually := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 15 s", what)
			}
		}
	}
	cached := func() bool { _, ok := m.snaps.get(name, time.Now()); return ok }
	// Reads store a snapshot once the event stream is subscribed.
	eventually("a read leaves a snapshot", func() bool {
		vm, err := m.Get(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		return vm.GetStatus().GetState() == v1.VMStatus_STATE_STOPPED && cached()
	})
	for _, step := range []struct {
		virsh string
		want  v1.VMStatus_State
	}{{"start", v1.VMStatus_STATE_RUNNING}, {"destroy", v1.VMStatus_STATE_STOPPED}} {
		if out, err := exec.Command("virsh", "-c", "qemu:///system", "-q", step.virsh, name).CombinedOutput(); err != nil {
			t.Fatalf("virsh %s: %v: %s", step.virsh, err, strings.TrimSpace(string(out)))
		}
		eventually("the "+step.virsh+" event drops the snapshot", func() bool { return !cached() })
		vm, err := m.Get(context.Background(), name)
		if err != nil || vm.GetStatus().GetState() != step.want {
			t.Fatalf("after virsh %s: %v, %v", step.virsh, vm.GetStatus(), err)
		}
	}
}
