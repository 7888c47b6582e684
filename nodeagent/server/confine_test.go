package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// TestPoolConfinement is the attack an operator certificate could make
// before storage was confined: make a pool of a directory that already
// holds files (or of /etc, the agent's state, a symlink into them), read or
// clone a file out of it, and have a pool delete remove files the agent
// never made. Each refusal is a clear InvalidArgument/FailedPrecondition
// naming the rule, nothing changes, and an allowed pool still works end to
// end. virsh and the files themselves are the witnesses.
func TestPoolConfinement(t *testing.T) {
	a := startLibvirtAgent(t)
	ctx := context.Background()
	op := v1.NewStorageServiceClient(a.dial(t, "operator"))

	// Files the agent did not make: an existing directory with a secret in
	// it, inside the pool root, and another outside it.
	existing := filepath.Join(a.dir, "existing")
	must(t, os.MkdirAll(existing, 0o755))
	secret := filepath.Join(existing, "secret.img")
	must(t, os.WriteFile(secret, []byte("do not read me"), 0o644))
	outside, err := os.MkdirTemp("/var/tmp", "dvtest-outside-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(outside) })
	must(t, os.Chmod(outside, 0o755))
	outsideSecret := filepath.Join(outside, "secret.img")
	must(t, os.WriteFile(outsideSecret, []byte("nor me"), 0o644))
	linkToState := filepath.Join(a.dir, "to-state")
	must(t, os.Symlink(a.cfg.StateDir, linkToState))

	refusals := []struct {
		name string
		path string
		code codes.Code
		want string
	}{
		{"/etc", "/etc", codes.InvalidArgument, "pool.path: /etc is inside /etc"},
		{"/", "/", codes.InvalidArgument, "system directory"},
		{"/root", "/root/pool", codes.InvalidArgument, "inside /root"},
		{"the agent's state", filepath.Join(a.cfg.StateDir, "p"), codes.InvalidArgument, "inside " + a.cfg.StateDir},
		{"the agent's PKI", filepath.Join(filepath.Dir(a.cfg.TLS.CA), "p"), codes.InvalidArgument, "inside " + filepath.Dir(a.cfg.TLS.CA)},
		{"a symlink into the state", filepath.Join(linkToState, "p"), codes.InvalidArgument, "resolves to " + filepath.Join(a.cfg.StateDir, "p")},
		{"dot-dot", a.dir + "/x/../../etc", codes.InvalidArgument, "clean absolute path"},
		{"outside the roots", filepath.Join(outside, "p"), codes.InvalidArgument, "not inside a permitted pool root"},
		{"an existing directory with files", existing, codes.FailedPrecondition, `already holds files (e.g. "secret.img")`},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			name := a.prefix + "bad"
			_, err := op.CreatePool(ctx, &v1.CreatePoolRequest{Pool: &v1.Pool{Name: name, Type: v1.Pool_TYPE_DIR, Path: r.path}, Build: true})
			if status.Code(err) != r.code || !strings.Contains(status.Convert(err).Message(), r.want) {
				t.Fatalf("CreatePool(%s) = %v, want %s containing %q", r.path, err, r.code, r.want)
			}
			if out, err := virsh(t, "pool-info", name); err == nil {
				t.Fatalf("a refused pool was defined: %s", out)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(a.cfg.StateDir, "p")); !os.IsNotExist(err) {
		t.Errorf("a refused pool left a directory in the agent's state: %v", err)
	}

	// A pool someone defined behind the agent's back, outside the roots:
	// the agent lists it but serves none of its files.
	foreign := a.prefix + "foreign"
	mustVirsh(t, "pool-define-as", foreign, "dir", "--target", outside)
	mustVirsh(t, "pool-start", foreign)
	t.Cleanup(func() { _, _ = virsh(t, "pool-destroy", foreign); _, _ = virsh(t, "pool-undefine", foreign) })
	_, err = op.GetVolume(ctx, &v1.GetVolumeRequest{Pool: foreign, Name: "secret.img"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "outside the permitted pool roots") {
		t.Errorf("GetVolume from a pool outside the roots = %v", err)
	}

	// An allowed pool works end to end, and a clone out of the foreign pool
	// into it is refused.
	good := a.prefix + "good"
	goodPath := filepath.Join(a.dir, "good")
	a.ok(t)(op.CreatePool(ctx, &v1.CreatePoolRequest{Pool: &v1.Pool{Name: good, Type: v1.Pool_TYPE_DIR, Path: goodPath}, Build: true}))
	a.ok(t)(op.CreateVolume(ctx, &v1.CreateVolumeRequest{Volume: &v1.Volume{Pool: good, Name: "disk.raw", CapacityBytes: 1 << 20}}))
	if out := mustVirsh(t, "vol-list", good); !strings.Contains(out, "disk.raw") {
		t.Errorf("virsh vol-list %s: %s", good, out)
	}
	cloneOp, err := op.CloneVolume(ctx, &v1.CloneVolumeRequest{Pool: foreign, Name: "secret.img", NewPool: good, NewName: "stolen.img"})
	if err == nil {
		cloneOp = a.waitEnd(t, cloneOp)
		if cloneOp.GetState() == v1.Operation_STATE_SUCCEEDED {
			t.Fatalf("cloned a file out of a pool outside the roots: %v", cloneOp)
		}
		err = status.Error(codes.Code(cloneOp.GetErrorCode()), cloneOp.GetError())
	}
	if status.Code(err) != codes.FailedPrecondition && status.Code(err) != codes.InvalidArgument {
		t.Errorf("CloneVolume out of the foreign pool = %v", err)
	}
	if _, err := os.Stat(filepath.Join(goodPath, "stolen.img")); !os.IsNotExist(err) {
		t.Errorf("the clone left a file: %v", err)
	}

	// Deleting the foreign pool's volumes or storage is refused (admin or
	// not), and the files stay.
	admin := a.storage
	for _, req := range []*v1.DeletePoolRequest{
		{Name: foreign, DeleteVolumes: true},
		{Name: foreign, DeleteStorage: true},
	} {
		_, err := admin.DeletePool(ctx, req)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "was not created by this agent") {
			t.Errorf("DeletePool(%v) = %v", req, err)
		}
	}
	if b, err := os.ReadFile(outsideSecret); err != nil || string(b) != "nor me" {
		t.Errorf("the foreign pool's file changed: %q %v", b, err)
	}

	// The allowed pool deletes with its volumes and directory: the agent
	// made both.
	a.ok(t)(admin.DeletePool(ctx, &v1.DeletePoolRequest{Name: good, DeleteVolumes: true, DeleteStorage: true}))
	if _, err := os.Stat(goodPath); !os.IsNotExist(err) {
		t.Errorf("delete_storage left %s: %v", goodPath, err)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "do not read me" {
		t.Errorf("the pre-existing file changed: %q %v", b, err)
	}
}
