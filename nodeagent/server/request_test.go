package server

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// TestCreateVMRequestID: a create sent again with the same request id — at once, concurrently,
// or to an agent that restarted and forgot it — yields one VM; the same id for another request
// and a VM someone else made are refused. Real libvirtd; virsh is the witness.
func TestCreateVMRequestID(t *testing.T) {
	a := startLibvirtAgent(t)
	ctx := context.Background()
	name := a.prefix + "rid"
	a.cleanupVM(t, name)
	spec := &v1.VMSpec{Vcpus: 1, MemoryMib: 64, Nics: []*v1.NIC{{Type: v1.NIC_TYPE_USER}}}
	const rid = "5d0c7a8e-1b2f-4e55-9a0e-3c1f0b6d7e21"
	create := func(a *lvAgent, name, rid string, spec *v1.VMSpec) (*v1.Operation, error) {
		return a.vms.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: name, Spec: spec}, RequestId: rid})
	}

	_, err := create(a, name, "../../etc", spec)
	statusIs(t, err, codes.InvalidArgument, "request_id:")

	// Five sends at once (a client retrying while the first answer is in flight): one operation.
	ops := make([]*v1.Operation, 5)
	var wg sync.WaitGroup
	for i := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, err := create(a, name, rid, spec)
			if err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
			ops[i] = op
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, op := range ops[1:] {
		if op.GetId() != ops[0].GetId() {
			t.Fatalf("sends of one request got operations %s and %s", ops[0].GetId(), op.GetId())
		}
	}
	done := a.ok(t)(ops[0], nil)
	uuid := done.GetResult()["uuid"]
	// Sent again after it finished: the same, finished operation.
	if again := a.ok(t)(create(a, name, rid, spec)); again.GetId() != done.GetId() {
		t.Fatalf("resend after the end started operation %s, want %s", again.GetId(), done.GetId())
	}
	if got := mustVirsh(t, "list", "--all", "--name"); count(strings.Fields(got), name) != 1 {
		t.Fatalf("virsh lists %s other than once:\n%s", name, got)
	}
	vm, err := a.vms.GetVM(ctx, &v1.GetVMRequest{Name: name})
	must(t, err)
	if vm.GetStatus().GetCreateRequestId() != rid || vm.GetStatus().GetUuid() != uuid {
		t.Fatalf("GetVM status = %v, want create_request_id %s and uuid %s", vm.GetStatus(), rid, uuid)
	}

	// The same id for a different request is refused, and nothing changes.
	other := &v1.VMSpec{Vcpus: 2, MemoryMib: 64, Nics: []*v1.NIC{{Type: v1.NIC_TYPE_USER}}}
	_, err = create(a, name, rid, other)
	statusIs(t, err, codes.InvalidArgument, "request_id:")

	// The agent restarts (a new one forgets every operation) after making the VM but before
	// starting it: the resent create finishes the same VM instead of failing or making another.
	mustVirsh(t, "destroy", name)
	b := startLibvirtAgent(t)
	finished := b.ok(t)(create(b, name, rid, spec))
	if finished.GetResult()["uuid"] != uuid {
		t.Fatalf("after the restart the create reports uuid %s, want the first VM's %s", finished.GetResult()["uuid"], uuid)
	}
	if st := mustVirsh(t, "domstate", name); st != "running" {
		t.Fatalf("resent create left the VM %q, want running", st)
	}
	if u := mustVirsh(t, "domuuid", name); u != uuid {
		t.Fatalf("virsh domuuid = %s, want %s (the same VM)", u, uuid)
	}
	// ... and the restarted agent still refuses the id for another request.
	_, err = create(b, name, rid, other)
	statusIs(t, err, codes.InvalidArgument, "request_id:")

	// A VM this request did not make is not adopted.
	_, err = create(b, name, "another-request", spec)
	statusIs(t, err, codes.AlreadyExists, `vm.name: VM "`+name+`" already exists and was not made by this request`)
	_, err = create(b, name, "", spec)
	statusIs(t, err, codes.AlreadyExists, "already exists")
}

// TestCreateStorageRequestID: pool and volume creates sent again with the same request id get the
// first send's operation; the id is checked.
func TestCreateStorageRequestID(t *testing.T) {
	a := startLibvirtAgent(t)
	ctx := context.Background()
	pool := a.prefix + "rpool"
	preq := &v1.CreatePoolRequest{Pool: &v1.Pool{Name: pool, Type: v1.Pool_TYPE_DIR, Path: a.dir + "/rpool"}, Build: true, RequestId: "pool-req-1"}
	first := a.ok(t)(a.storage.CreatePool(ctx, preq))
	t.Cleanup(func() {
		op, err := a.storage.DeletePool(context.Background(), &v1.DeletePoolRequest{Name: pool, DeleteVolumes: true, DeleteStorage: true})
		if err == nil {
			a.waitEnd(t, op)
		}
	})
	if again := a.ok(t)(a.storage.CreatePool(ctx, preq)); again.GetId() != first.GetId() {
		t.Fatalf("resent CreatePool started %s, want %s", again.GetId(), first.GetId())
	}
	_, err := a.storage.CreatePool(ctx, &v1.CreatePoolRequest{Pool: &v1.Pool{Name: pool + "x", Type: v1.Pool_TYPE_DIR, Path: a.dir + "/rpoolx"}, RequestId: "pool-req-1"})
	statusIs(t, err, codes.InvalidArgument, "request_id:")
	_, err = a.storage.CreatePool(ctx, &v1.CreatePoolRequest{Pool: preq.GetPool(), RequestId: "a b"})
	statusIs(t, err, codes.InvalidArgument, "request_id:")

	vreq := &v1.CreateVolumeRequest{Volume: &v1.Volume{Pool: pool, Name: "v.raw", Format: v1.Volume_FORMAT_RAW, CapacityBytes: 1 << 20}, RequestId: "vol-req-1"}
	vfirst := a.ok(t)(a.storage.CreateVolume(ctx, vreq))
	if again := a.ok(t)(a.storage.CreateVolume(ctx, vreq)); again.GetId() != vfirst.GetId() {
		t.Fatalf("resent CreateVolume started %s, want %s", again.GetId(), vfirst.GetId())
	}
	if got := mustVirsh(t, "vol-list", "--pool", pool); len(strings.Split(got, "\n")) != 1 || !strings.HasPrefix(got, "v.raw ") {
		t.Fatalf("virsh vol-list = %q, want the one volume", got)
	}
}

func count(words []string, w string) int {
	n := 0
	for _, x := range words {
		if x == w {
			n++
		}
	}
	return n
}
