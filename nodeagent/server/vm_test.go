package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/testenv/libvirtd"
)

// bootSpec is a small VM booting the test guest from pool/vol.
func bootSpec(pool, vol string) *v1.VMSpec {
	return &v1.VMSpec{
		Vcpus: 1, MemoryMib: 64,
		Disks:      []*v1.Disk{{Pool: pool, Volume: vol, BootOrder: 1}},
		Nics:       []*v1.NIC{{Type: v1.NIC_TYPE_USER}},
		PowerState: v1.PowerState_POWER_STATE_RUNNING,
	}
}

// TestVMLifecycle: pool → volume → VM → start → console → stop → delete on
// real QEMU, with virsh as the witness that the API tells the truth.
func TestVMLifecycle(t *testing.T) {
	a := startLibvirtAgent(t)
	ctx := context.Background()
	pool := a.pool(t)
	vol := a.prefix + "boot.img"
	a.upload(t, pool, vol, libvirtd.BootSector(libvirtd.GuestMessage))

	// virsh sees the pool and the volume the API reports.
	p, err := a.storage.GetPool(ctx, &v1.GetPoolRequest{Name: pool})
	must(t, err)
	if got := mustVirsh(t, "pool-uuid", pool); got != p.GetUuid() || p.GetState() != v1.Pool_STATE_RUNNING {
		t.Fatalf("virsh pool-uuid = %q, API %q (%s)", got, p.GetUuid(), p.GetState())
	}
	v, err := a.storage.GetVolume(ctx, &v1.GetVolumeRequest{Pool: pool, Name: vol})
	must(t, err)
	if got := mustVirsh(t, "vol-path", "--pool", pool, vol); got != v.GetPath() || v.GetCapacityBytes() != 1<<20 {
		t.Fatalf("virsh vol-path = %q, API %q, capacity %d", got, v.GetPath(), v.GetCapacityBytes())
	}

	name := a.prefix + "vm"
	a.cleanupVM(t, name)
	spec := bootSpec(pool, vol)
	spec.CloudInit = &v1.CloudInit{UserData: "#cloud-config\nhostname: lifecycle\n"}
	op := a.ok(t)(a.vms.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: name, Spec: spec}}))
	if op.GetId() == "" || op.GetResult()["uuid"] == "" {
		t.Fatalf("create operation has no id or uuid: %v", op)
	}

	got := a.readConsole(t, name, libvirtd.GuestMessage, 90*time.Second)
	t.Logf("console: %q", got)

	vm, err := a.vms.GetVM(ctx, &v1.GetVMRequest{Name: name})
	must(t, err)
	if vm.GetStatus().GetUuid() != op.GetResult()["uuid"] || vm.GetStatus().GetState() != v1.VMStatus_STATE_RUNNING {
		t.Fatalf("GetVM status = %v, create said uuid %s", vm.GetStatus(), op.GetResult()["uuid"])
	}
	if len(vm.GetStatus().GetPendingChanges()) != 0 {
		t.Errorf("fresh VM has pending changes: %v", vm.GetStatus().GetPendingChanges())
	}
	if s := vm.GetSpec(); s.GetVcpus() != 1 || s.GetMemoryMib() != 64 || len(s.GetDisks()) != 1 || s.GetDisks()[0].GetTarget() != "vda" || len(s.GetNics()) != 1 || s.GetNics()[0].GetMac() == "" {
		t.Fatalf("GetVM spec = %v", s)
	}
	// virsh agrees on identity, state, resources, disk and NIC.
	if u := mustVirsh(t, "domuuid", name); u != vm.GetStatus().GetUuid() {
		t.Errorf("virsh domuuid = %q, API %q", u, vm.GetStatus().GetUuid())
	}
	if st := mustVirsh(t, "domstate", name); st != "running" {
		t.Errorf("virsh domstate = %q", st)
	}
	info := mustVirsh(t, "dominfo", name)
	for _, want := range []string{"CPU(s):         1", "Used memory:    65536 KiB"} {
		if !strings.Contains(info, want) {
			t.Errorf("virsh dominfo lacks %q:\n%s", want, info)
		}
	}
	seed := filepath.Join(a.cfg.StateDir, "vm-seeds", name+"-cidata.iso")
	if bl := mustVirsh(t, "domblklist", name); !strings.Contains(bl, "vda") || !strings.Contains(bl, vol) || !strings.Contains(bl, "hdc") || !strings.Contains(bl, seed) {
		t.Errorf("virsh domblklist = %q, want vda on volume %s and the cloud-init seed %s on hdc", bl, vol, seed)
	}
	if vm.GetSpec().GetCloudInit().GetUserData() != spec.GetCloudInit().GetUserData() {
		t.Errorf("GetVM cloud_init = %v", vm.GetSpec().GetCloudInit())
	}
	if il := mustVirsh(t, "domiflist", name); !strings.Contains(il, vm.GetSpec().GetNics()[0].GetMac()) || !strings.Contains(il, "user") {
		t.Errorf("virsh domiflist = %q, want user NIC %s", il, vm.GetSpec().GetNics()[0].GetMac())
	}
	// The list agrees with get (each says when libvirtd reported it, which differs).
	if vm.GetStatus().GetObservedTime() == nil {
		t.Error("GetVM has no observed_time")
	}
	l, err := a.vms.ListVMs(ctx, &v1.ListVMsRequest{})
	must(t, err)
	found := false
	for _, x := range l.GetVms() {
		if x.GetName() == name {
			x, got := proto.Clone(x).(*v1.VM), proto.Clone(vm).(*v1.VM)
			x.Status.ObservedTime, got.Status.ObservedTime = nil, nil
			found = proto.Equal(x, got)
		}
	}
	if !found {
		t.Errorf("ListVMs does not report %s as GetVM does", name)
	}
	// A volume in use cannot be deleted.
	op, err = a.storage.DeleteVolume(ctx, &v1.DeleteVolumeRequest{Pool: pool, Name: vol})
	must(t, err)
	if done := a.waitEnd(t, op); codes.Code(done.GetErrorCode()) != codes.FailedPrecondition || !strings.Contains(done.GetError(), "in use by VM") {
		t.Errorf("delete of a volume in use: %v", done)
	}

	// Addresses: a user-mode NIC without a guest agent has none; the call
	// waits and says so.
	_, err = a.vms.GetVMAddresses(ctx, &v1.GetVMAddressesRequest{Name: name, WaitTimeout: durationpb.New(2 * time.Second)})
	statusIs(t, err, codes.DeadlineExceeded, "reported no IP address within 2s")

	// Reboot and see the guest come back on the console.
	a.ok(t)(a.vms.RebootVM(ctx, &v1.RebootVMRequest{Name: name, Force: true}))
	a.readConsole(t, name, libvirtd.GuestMessage, 60*time.Second)

	// The test guest ignores ACPI: stop waits for the timeout, then forces.
	a.ok(t)(a.vms.StopVM(ctx, &v1.StopVMRequest{Name: name, Timeout: durationpb.New(time.Second)}))
	if st := mustVirsh(t, "domstate", name); st != "shut off" {
		t.Errorf("after StopVM virsh domstate = %q", st)
	}
	vm, err = a.vms.GetVM(ctx, &v1.GetVMRequest{Name: name})
	must(t, err)
	if vm.GetStatus().GetState() != v1.VMStatus_STATE_STOPPED {
		t.Errorf("after StopVM state = %s", vm.GetStatus().GetState())
	}
	a.ok(t)(a.vms.StartVM(ctx, &v1.StartVMRequest{Name: name}))
	a.readConsole(t, name, libvirtd.GuestMessage, 60*time.Second)

	a.ok(t)(a.vms.DeleteVM(ctx, &v1.DeleteVMRequest{Name: name}))
	if out, err := virsh(t, "dominfo", name); err == nil {
		t.Errorf("virsh still sees %s after DeleteVM: %s", name, out)
	}
	_, err = a.vms.GetVM(ctx, &v1.GetVMRequest{Name: name})
	statusIs(t, err, codes.NotFound, "not found")
	if _, err := os.Stat(seed); !os.IsNotExist(err) {
		t.Errorf("seed %s not removed with the VM: %v", seed, err)
	}

	// The volume is free again and can be deleted; then the pool.
	a.ok(t)(a.storage.DeleteVolume(ctx, &v1.DeleteVolumeRequest{Pool: pool, Name: vol}))
	if out, err := virsh(t, "vol-info", "--pool", pool, vol); err == nil {
		t.Errorf("virsh still sees the volume: %s", out)
	}
	a.ok(t)(a.storage.DeletePool(ctx, &v1.DeletePoolRequest{Name: pool, DeleteStorage: true}))
	if out, err := virsh(t, "pool-info", pool); err == nil {
		t.Errorf("virsh still sees the pool: %s", out)
	}
}

// TestVMParallelCreate: 50 VMs created at once through the API, all
// listed, all deleted, with no errors and nothing left in libvirt.
func TestVMParallelCreate(t *testing.T) {
	a := startLibvirtAgent(t)
	ctx := context.Background()
	const n = 50
	names := make([]string, n)
	for i := range names {
		names[i] = sprintf("%sp%02d", a.prefix, i)
		a.cleanupVM(t, names[i])
	}
	runAll := func(f func(name string) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for _, name := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f(name); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	start := time.Now()
	runAll(func(name string) error {
		op, err := a.vms.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: name, Spec: &v1.VMSpec{
			Vcpus: 1, MemoryMib: 32, Nics: []*v1.NIC{{Type: v1.NIC_TYPE_USER}},
			// Defined, not booted: 50 QEMU boots on 2 shared cores would
			// make this a load test of the host. BenchmarkParallelCreate
			// measures 50 started guests.
			PowerState: v1.PowerState_POWER_STATE_STOPPED,
		}}})
		if err != nil {
			return err
		}
		if done := a.waitEnd(t, op); done.GetState() != v1.Operation_STATE_SUCCEEDED {
			return sprintfErr("create %s: %s", name, done.GetError())
		}
		return nil
	})
	t.Logf("%d parallel creates: %s", n, time.Since(start))
	start = time.Now()
	l, err := a.vms.ListVMs(ctx, &v1.ListVMsRequest{})
	must(t, err)
	t.Logf("list: %s", time.Since(start))
	listed := map[string]bool{}
	for _, vm := range l.GetVms() {
		listed[vm.GetName()] = vm.GetStatus().GetState() == v1.VMStatus_STATE_STOPPED && vm.GetStatus().GetUuid() != ""
	}
	virshList := mustVirsh(t, "list", "--all", "--name")
	for _, name := range names {
		if !listed[name] {
			t.Errorf("%s not listed as a stopped VM with a UUID", name)
		}
		if !strings.Contains(virshList, name) {
			t.Errorf("virsh list does not show %s", name)
		}
	}
	start = time.Now()
	runAll(func(name string) error {
		op, err := a.vms.DeleteVM(ctx, &v1.DeleteVMRequest{Name: name})
		if err != nil {
			return err
		}
		if done := a.waitEnd(t, op); done.GetState() != v1.Operation_STATE_SUCCEEDED {
			return sprintfErr("delete %s: %s", name, done.GetError())
		}
		return nil
	})
	t.Logf("%d parallel deletes: %s", n, time.Since(start))
	all := mustVirsh(t, "list", "--all", "--name")
	for _, name := range names {
		if strings.Contains(all, name) {
			t.Errorf("virsh still lists %s after delete", name)
		}
	}
}

// TestVMUpdateInPlace: disks, NICs, vCPUs and memory change on an existing
// VM without recreating it (same UUID); what a running guest cannot take
// is pending until the next power cycle.
func TestVMUpdateInPlace(t *testing.T) {
	a := startLibvirtAgent(t)
	ctx := context.Background()
	pool := a.pool(t)
	boot, data := a.prefix+"boot.img", a.prefix+"data.qcow2"
	a.upload(t, pool, boot, libvirtd.BootSector(libvirtd.GuestMessage))
	a.ok(t)(a.storage.CreateVolume(ctx, &v1.CreateVolumeRequest{Volume: &v1.Volume{Pool: pool, Name: data, Format: v1.Volume_FORMAT_QCOW2, CapacityBytes: 64 << 20}}))

	name := a.prefix + "upd"
	a.cleanupVM(t, name)
	spec := bootSpec(pool, boot)
	spec.MaxVcpus, spec.MaxMemoryMib = 2, 128
	a.ok(t)(a.vms.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: name, Spec: spec}}))
	a.readConsole(t, name, libvirtd.GuestMessage, 90*time.Second)
	before, err := a.vms.GetVM(ctx, &v1.GetVMRequest{Name: name})
	must(t, err)
	uuid := before.GetStatus().GetUuid()

	// Running: attach a disk and a NIC, add a vCPU, change memory.
	want := proto.Clone(before.GetSpec()).(*v1.VMSpec)
	want.Vcpus = 2
	want.MemoryMib = 96
	want.Disks = append(want.Disks, &v1.Disk{Pool: pool, Volume: data, Bus: v1.Disk_BUS_VIRTIO})
	want.Nics = append(want.Nics, &v1.NIC{Type: v1.NIC_TYPE_USER, Mac: "52:54:00:aa:bb:01", Model: "e1000"})
	op := a.ok(t)(a.vms.UpdateVM(ctx, &v1.UpdateVMRequest{Name: name, Spec: want}))
	t.Logf("update 1: live=%q pending=%q", op.GetResult()["live"], op.GetResult()["pending"])
	if !strings.Contains(op.GetResult()["live"], "disk "+pool+"/"+data+" attached") || !strings.Contains(op.GetResult()["live"], "vcpus 1 -> 2") {
		t.Errorf("disk attach and vCPU hot-add were not live: %v", op.GetResult())
	}
	if bl := mustVirsh(t, "domblklist", name); !strings.Contains(bl, "vdb") || !strings.Contains(bl, data) {
		t.Errorf("running guest has no vdb on %s: %q", data, bl)
	}
	if vc := mustVirsh(t, "vcpucount", name, "--live", "--active"); vc != "2" {
		t.Errorf("live vCPUs = %q, want 2", vc)
	}
	if il := mustVirsh(t, "domiflist", name); !strings.Contains(il, "52:54:00:aa:bb:01") {
		t.Errorf("running guest lacks the new NIC: %q", il)
	}
	after, err := a.vms.GetVM(ctx, &v1.GetVMRequest{Name: name})
	must(t, err)
	if after.GetStatus().GetUuid() != uuid || mustVirsh(t, "domuuid", name) != uuid {
		t.Fatalf("UUID changed: %s -> %s", uuid, after.GetStatus().GetUuid())
	}
	if after.GetSpec().GetVcpus() != 2 || after.GetSpec().GetMemoryMib() != 96 || len(after.GetSpec().GetDisks()) != 2 || len(after.GetSpec().GetNics()) != 2 {
		t.Errorf("persistent spec after update = %v", after.GetSpec())
	}

	// Raising the memory ceiling cannot happen live: pending, reported.
	want = proto.Clone(after.GetSpec()).(*v1.VMSpec)
	want.MaxMemoryMib = 256
	op = a.ok(t)(a.vms.UpdateVM(ctx, &v1.UpdateVMRequest{Name: name, Spec: want}))
	if !strings.Contains(op.GetResult()["pending"], "max_memory_mib 128 -> 256") {
		t.Errorf("max memory change not reported pending: %v", op.GetResult())
	}
	vm, err := a.vms.GetVM(ctx, &v1.GetVMRequest{Name: name})
	must(t, err)
	if !strings.Contains(strings.Join(vm.GetStatus().GetPendingChanges(), ","), "max_memory_mib 128 -> 256") {
		t.Errorf("GetVM pending_changes = %v", vm.GetStatus().GetPendingChanges())
	}

	// Detach the data disk. The test guest has no OS to acknowledge a
	// hot-unplug, so libvirt leaves it attached to the running guest: the
	// definition drops it and the removal is pending.
	want = proto.Clone(vm.GetSpec()).(*v1.VMSpec)
	want.Disks = want.Disks[:1]
	op = a.ok(t)(a.vms.UpdateVM(ctx, &v1.UpdateVMRequest{Name: name, Spec: want}))
	t.Logf("update 3: live=%q pending=%q", op.GetResult()["live"], op.GetResult()["pending"])
	if cfg := mustVirsh(t, "domblklist", name, "--inactive"); strings.Contains(cfg, data) {
		t.Errorf("persistent definition still has %s: %q", data, cfg)
	}

	// A power cycle applies everything pending, still the same domain.
	a.ok(t)(a.vms.StopVM(ctx, &v1.StopVMRequest{Name: name, Force: true}))
	a.ok(t)(a.vms.StartVM(ctx, &v1.StartVMRequest{Name: name}))
	a.readConsole(t, name, libvirtd.GuestMessage, 90*time.Second)
	vm, err = a.vms.GetVM(ctx, &v1.GetVMRequest{Name: name})
	must(t, err)
	if len(vm.GetStatus().GetPendingChanges()) != 0 || vm.GetStatus().GetUuid() != uuid {
		t.Errorf("after power cycle: pending %v, uuid %s (want none, %s)", vm.GetStatus().GetPendingChanges(), vm.GetStatus().GetUuid(), uuid)
	}
	if bl := mustVirsh(t, "domblklist", name); strings.Contains(bl, data) {
		t.Errorf("detached disk still attached after power cycle: %q", bl)
	}
	if !strings.Contains(mustVirsh(t, "dominfo", name), "Max memory:     262144 KiB") {
		t.Errorf("max memory not applied: %s", mustVirsh(t, "dominfo", name))
	}
	// The detached volume is free: it can be deleted while the VM runs.
	a.ok(t)(a.storage.DeleteVolume(ctx, &v1.DeleteVolumeRequest{Pool: pool, Name: data}))

	// Stopped: changes go straight into the definition, nothing pending.
	a.ok(t)(a.vms.StopVM(ctx, &v1.StopVMRequest{Name: name, Force: true}))
	want = proto.Clone(vm.GetSpec()).(*v1.VMSpec)
	want.Vcpus, want.MaxVcpus, want.MemoryMib = 1, 1, 48
	want.PowerState = v1.PowerState_POWER_STATE_STOPPED
	op = a.ok(t)(a.vms.UpdateVM(ctx, &v1.UpdateVMRequest{Name: name, Spec: want}))
	if op.GetResult()["pending"] != "" {
		t.Errorf("stopped VM update reported pending changes: %v", op.GetResult())
	}
	if vc := mustVirsh(t, "vcpucount", name, "--config", "--maximum"); vc != "1" {
		t.Errorf("config max vCPUs = %q", vc)
	}
}

// TestBadInput: refused requests get a clear code and message naming the
// field, and leave nothing behind in libvirt.
func TestBadInput(t *testing.T) {
	a := startLibvirtAgent(t)
	ctx := context.Background()
	pool := a.pool(t)
	boot := a.prefix + "boot.img"
	a.upload(t, pool, boot, libvirtd.BootSector(libvirtd.GuestMessage))
	holder := a.prefix + "holder"
	a.cleanupVM(t, holder)
	a.ok(t)(a.vms.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: holder, Spec: bootSpec(pool, boot)}}))

	spec := func(mut func(s *v1.VMSpec)) *v1.VMSpec {
		s := &v1.VMSpec{Vcpus: 1, MemoryMib: 32, PowerState: v1.PowerState_POWER_STATE_STOPPED}
		mut(s)
		return s
	}
	newVM := a.prefix + "bad"
	createVM := func(s *v1.VMSpec) error {
		op, err := a.vms.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: newVM, Spec: s}})
		if err != nil {
			return err
		}
		done := a.waitEnd(t, op)
		if done.GetState() == v1.Operation_STATE_SUCCEEDED {
			return nil
		}
		return statusErr(done)
	}
	createVol := func(v *v1.Volume) error {
		op, err := a.storage.CreateVolume(ctx, &v1.CreateVolumeRequest{Volume: v})
		if err != nil {
			return err
		}
		if done := a.waitEnd(t, op); done.GetState() != v1.Operation_STATE_SUCCEEDED {
			return statusErr(done)
		}
		return nil
	}
	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"negative volume size", func() error {
			return createVol(&v1.Volume{Pool: pool, Name: a.prefix + "neg", CapacityBytes: -1})
		}, codes.InvalidArgument, "volume.capacity_bytes: must not be negative"},
		{"absurd volume size", func() error {
			return createVol(&v1.Volume{Pool: pool, Name: a.prefix + "huge", CapacityBytes: 1 << 62})
		}, codes.InvalidArgument, "volume.capacity_bytes: 4611686018427387904 bytes is more than the 64TiB maximum"},
		{"zero volume size", func() error {
			return createVol(&v1.Volume{Pool: pool, Name: a.prefix + "zero"})
		}, codes.InvalidArgument, "volume.capacity_bytes: must be positive"},
		{"volume in unknown pool", func() error {
			return createVol(&v1.Volume{Pool: a.prefix + "nopool", Name: "x", CapacityBytes: 1 << 20})
		}, codes.InvalidArgument, "volume.pool: pool \"" + a.prefix + "nopool\" does not exist"},
		{"duplicate volume", func() error {
			return createVol(&v1.Volume{Pool: pool, Name: boot, CapacityBytes: 1 << 20})
		}, codes.AlreadyExists, "already exists"},
		{"shrink volume", func() error {
			op, err := a.storage.ResizeVolume(ctx, &v1.ResizeVolumeRequest{Pool: pool, Name: boot, CapacityBytes: 4096})
			if err != nil {
				return err
			}
			return statusErr(a.waitEnd(t, op))
		}, codes.InvalidArgument, "capacity_bytes: 4096 is smaller than the current"},
		{"delete volume in use", func() error {
			op, err := a.storage.DeleteVolume(ctx, &v1.DeleteVolumeRequest{Pool: pool, Name: boot})
			if err != nil {
				return err
			}
			return statusErr(a.waitEnd(t, op))
		}, codes.FailedPrecondition, "is in use by VM " + holder},
		{"delete pool with volumes", func() error {
			op, err := a.storage.DeletePool(ctx, &v1.DeletePoolRequest{Name: pool})
			if err != nil {
				return err
			}
			return statusErr(a.waitEnd(t, op))
		}, codes.FailedPrecondition, "still holds"},
		{"bad pool path", func() error {
			_, err := a.storage.CreatePool(ctx, &v1.CreatePoolRequest{Pool: &v1.Pool{Name: a.prefix + "p2", Type: v1.Pool_TYPE_DIR, Path: "relative/dir"}})
			return err
		}, codes.InvalidArgument, "pool.path: \"relative/dir\" must be a clean absolute path"},
		{"bad VM name", func() error {
			_, err := a.vms.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: "../etc", Spec: spec(func(*v1.VMSpec) {})}})
			return err
		}, codes.InvalidArgument, "vm.name: \"../etc\" is not a valid name"},
		{"negative memory", func() error { return createVM(spec(func(s *v1.VMSpec) { s.MemoryMib = -64 })) },
			codes.InvalidArgument, "vm.spec.memory_mib: must be between 16 and 4194304 MiB (got -64)"},
		{"absurd memory", func() error { return createVM(spec(func(s *v1.VMSpec) { s.MemoryMib = 1 << 40 })) },
			codes.InvalidArgument, "vm.spec.memory_mib: must be between"},
		{"zero vcpus", func() error { return createVM(spec(func(s *v1.VMSpec) { s.Vcpus = 0 })) },
			codes.InvalidArgument, "vm.spec.vcpus: must be between 1 and 256 (got 0)"},
		{"invalid MAC", func() error {
			return createVM(spec(func(s *v1.VMSpec) { s.Nics = []*v1.NIC{{Type: v1.NIC_TYPE_USER, Mac: "52:54:00:zz:00:01"}} }))
		}, codes.InvalidArgument, "vm.spec.nics[0].mac: \"52:54:00:zz:00:01\" is not a MAC address"},
		{"multicast MAC", func() error {
			return createVM(spec(func(s *v1.VMSpec) { s.Nics = []*v1.NIC{{Type: v1.NIC_TYPE_USER, Mac: "01:00:5e:00:00:01"}} }))
		}, codes.InvalidArgument, "multicast"},
		{"VLAN out of range", func() error {
			return createVM(spec(func(s *v1.VMSpec) { s.Nics = []*v1.NIC{{Type: v1.NIC_TYPE_BRIDGE, Bridge: "br0", Vlan: 5000}} }))
		}, codes.InvalidArgument, "vm.spec.nics[0].vlan: must be between 0 (untagged) and 4094"},
		{"disk in unknown pool", func() error {
			return createVM(spec(func(s *v1.VMSpec) { s.Disks = []*v1.Disk{{Pool: a.prefix + "nopool", Volume: "x"}} }))
		}, codes.InvalidArgument, "vm.spec.disks[0]: pool \"" + a.prefix + "nopool\" not found"},
		{"unknown volume", func() error {
			return createVM(spec(func(s *v1.VMSpec) { s.Disks = []*v1.Disk{{Pool: pool, Volume: "nope"}} }))
		}, codes.InvalidArgument, "vm.spec.disks[0]: volume " + pool + "/nope not found"},
		{"volume in use by another VM", func() error {
			return createVM(spec(func(s *v1.VMSpec) { s.Disks = []*v1.Disk{{Pool: pool, Volume: boot}} }))
		}, codes.FailedPrecondition, "vm.spec.disks[0]: volume " + pool + "/" + boot + " is in use by VM \"" + holder + "\""},
		{"duplicate boot order", func() error {
			return createVM(spec(func(s *v1.VMSpec) {
				s.Disks = []*v1.Disk{{Pool: pool, Volume: boot, BootOrder: 1}}
				s.Nics = []*v1.NIC{{Type: v1.NIC_TYPE_USER, BootOrder: 1}}
			}))
		}, codes.InvalidArgument, "vm.spec.nics[0].boot_order: boot order 1 is already used"},
		{"duplicate VM name", func() error {
			_, err := a.vms.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: holder, Spec: spec(func(*v1.VMSpec) {})}})
			return err
		}, codes.AlreadyExists, "vm.name: VM \"" + holder + "\" already exists"},
		{"unknown VM", func() error {
			_, err := a.vms.StartVM(ctx, &v1.StartVMRequest{Name: a.prefix + "ghost"})
			return err
		}, codes.NotFound, "not found"},
		{"change cloud-init", func() error {
			vm, err := a.vms.GetVM(ctx, &v1.GetVMRequest{Name: holder})
			must(t, err)
			s := proto.Clone(vm.GetSpec()).(*v1.VMSpec)
			s.CloudInit = &v1.CloudInit{UserData: "#cloud-config\n"}
			op, err := a.vms.UpdateVM(ctx, &v1.UpdateVMRequest{Name: holder, Spec: s})
			if err != nil {
				return err
			}
			return statusErr(a.waitEnd(t, op))
		}, codes.InvalidArgument, "spec.cloud_init: cannot change"},
		{"negative stop timeout", func() error {
			_, err := a.vms.StopVM(ctx, &v1.StopVMRequest{Name: holder, Timeout: durationpb.New(-time.Second)})
			return err
		}, codes.InvalidArgument, "timeout: must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			statusIs(t, tt.call(), tt.code, tt.msg)
		})
	}
	// Nothing was left behind: the refused VM and volumes do not exist.
	if out, err := virsh(t, "dominfo", newVM); err == nil {
		t.Errorf("refused VM %s exists: %s", newVM, out)
	}
	vols := mustVirsh(t, "vol-list", pool)
	if n := strings.Count(vols, "\n") + 1; n != 1 || !strings.Contains(vols, boot) {
		t.Errorf("pool holds more than the boot volume:\n%s", vols)
	}
	if out := mustVirsh(t, "pool-list", "--all", "--name"); strings.Contains(out, a.prefix+"p2") {
		t.Errorf("refused pool was defined: %s", out)
	}
	if out, _ := virsh(t, "list", "--all", "--name"); strings.Count(out, a.prefix) != 1 {
		t.Errorf("libvirt has other VMs of this test than %s:\n%s", holder, out)
	}
}

// TestCreateFailureIsAtomic: a create that fails after defining the domain
// (here: its bridge does not exist, so start fails) removes the domain and
// its cloud-init seed.
func TestCreateFailureIsAtomic(t *testing.T) {
	a := startLibvirtAgent(t)
	ctx := context.Background()
	name := a.prefix + "atomic"
	a.cleanupVM(t, name)
	op, err := a.vms.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: name, Spec: &v1.VMSpec{
		Vcpus: 1, MemoryMib: 32,
		Nics:      []*v1.NIC{{Type: v1.NIC_TYPE_BRIDGE, Bridge: "dvnobr0"}},
		CloudInit: &v1.CloudInit{UserData: "#cloud-config\nhostname: x\n"},
	}}})
	must(t, err)
	done := a.waitEnd(t, op)
	if done.GetState() != v1.Operation_STATE_FAILED || !strings.Contains(done.GetError(), "start VM") {
		t.Fatalf("create with a missing bridge: %v", done)
	}
	t.Logf("refused: %s", done.GetError())
	if out, err := virsh(t, "dominfo", name); err == nil {
		t.Errorf("failed create left the domain behind: %s", out)
	}
	seeds, _ := filepath.Glob(filepath.Join(a.cfg.StateDir, "vm-seeds", "*"))
	if len(seeds) != 0 {
		t.Errorf("failed create left seed files: %v", seeds)
	}
}

func statusErr(op *v1.Operation) error {
	if op.GetState() == v1.Operation_STATE_SUCCEEDED {
		return nil
	}
	return status.Error(codes.Code(op.GetErrorCode()), op.GetError())
}
