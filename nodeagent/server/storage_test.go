package server

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc/codes"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/testenv/libvirtd"
)

// TestVolumes: create, resize, clone, upload and fill-from-OCI through the
// API, with virsh and the files themselves as witnesses; failed uploads
// leave no volume.
func TestVolumes(t *testing.T) {
	a := startLibvirtAgent(t)
	ctx := context.Background()
	pool := a.pool(t)
	vol := func(n string) *v1.Volume {
		v, err := a.storage.GetVolume(ctx, &v1.GetVolumeRequest{Pool: pool, Name: n})
		must(t, err)
		return v
	}
	capacityByVirsh := func(n string) string {
		for _, l := range strings.Split(mustVirsh(t, "vol-dumpxml", "--pool", pool, n), "\n") {
			if strings.Contains(l, "<capacity") {
				return strings.TrimSpace(l)
			}
		}
		return ""
	}

	a.ok(t)(a.storage.CreateVolume(ctx, &v1.CreateVolumeRequest{Volume: &v1.Volume{Pool: pool, Name: "a.raw", CapacityBytes: 4 << 20}}))
	a.ok(t)(a.storage.CreateVolume(ctx, &v1.CreateVolumeRequest{Volume: &v1.Volume{Pool: pool, Name: "b.qcow2", Format: v1.Volume_FORMAT_QCOW2, CapacityBytes: 8 << 20}}))
	if v := vol("b.qcow2"); v.GetFormat() != v1.Volume_FORMAT_QCOW2 || v.GetCapacityBytes() != 8<<20 || capacityByVirsh("b.qcow2") != "<capacity unit='bytes'>8388608</capacity>" {
		t.Errorf("qcow2 volume: API %v, virsh %s", v, capacityByVirsh("b.qcow2"))
	}
	if out, err := exec("qemu-img", "info", vol("b.qcow2").GetPath()); err != nil || !strings.Contains(out, "file format: qcow2") {
		t.Errorf("qemu-img info: %v %s", err, out)
	}

	a.ok(t)(a.storage.ResizeVolume(ctx, &v1.ResizeVolumeRequest{Pool: pool, Name: "b.qcow2", CapacityBytes: 16 << 20}))
	if v := vol("b.qcow2"); v.GetCapacityBytes() != 16<<20 || capacityByVirsh("b.qcow2") != "<capacity unit='bytes'>16777216</capacity>" {
		t.Errorf("after resize: API %d, virsh %s", v.GetCapacityBytes(), capacityByVirsh("b.qcow2"))
	}

	a.upload(t, pool, "boot.img", libvirtd.BootSector(libvirtd.GuestMessage))
	a.ok(t)(a.storage.CloneVolume(ctx, &v1.CloneVolumeRequest{Pool: pool, Name: "boot.img", NewName: "boot-copy.qcow2", Format: v1.Volume_FORMAT_QCOW2}))
	if v := vol("boot-copy.qcow2"); v.GetFormat() != v1.Volume_FORMAT_QCOW2 || v.GetCapacityBytes() != 1<<20 {
		t.Errorf("clone: %v", v)
	}
	// The clone holds the same bytes: qemu-img compares guest-visible content.
	if out, err := exec("qemu-img", "compare", vol("boot.img").GetPath(), vol("boot-copy.qcow2").GetPath()); err != nil {
		t.Errorf("qemu-img compare: %v %s", err, out)
	}

	// An upload that delivers fewer or more bytes than announced fails and
	// leaves nothing.
	for _, tc := range []struct {
		name     string
		announce int64
		send     int
		msg      string
	}{
		{"short.img", 2 << 20, 1 << 20, "ended 1048576 bytes short"},
		{"long.img", 1 << 20, 2 << 20, "more bytes than the announced size"},
	} {
		s, err := a.storage.UploadVolume(ctx)
		must(t, err)
		must(t, s.Send(&v1.UploadVolumeRequest{Msg: &v1.UploadVolumeRequest_Header_{Header: &v1.UploadVolumeRequest_Header{Pool: pool, Name: tc.name, SizeBytes: tc.announce}}}))
		for sent := 0; sent < tc.send; sent += 256 << 10 {
			if err := s.Send(&v1.UploadVolumeRequest{Msg: &v1.UploadVolumeRequest_Chunk{Chunk: make([]byte, 256<<10)}}); err != nil {
				break
			}
		}
		op, err := s.CloseAndRecv()
		must(t, err)
		if op.GetState() != v1.Operation_STATE_FAILED || codes.Code(op.GetErrorCode()) != codes.InvalidArgument || !strings.Contains(op.GetError(), tc.msg) {
			t.Errorf("%s: %v", tc.name, op)
		}
		if out, err := virsh(t, "vol-info", "--pool", pool, tc.name); err == nil {
			t.Errorf("failed upload left %s: %s", tc.name, out)
		}
	}

	// Fill from an OCI artifact in a registry (go-containerregistry's, on
	// loopback): the volume holds the layer's bytes.
	reg := httptest.NewServer(registry.New())
	t.Cleanup(reg.Close)
	content := libvirtd.BootSector("FROM-OCI")
	layer := static.NewLayer(content, types.MediaType("application/vnd.debvisor.disk.raw"))
	img, err := mutate.AppendLayers(empty.Image, layer)
	must(t, err)
	ref := strings.TrimPrefix(reg.URL, "http://") + "/images/tiny:1"
	r, err := name.ParseReference(ref, name.Insecure)
	must(t, err)
	must(t, remote.Write(r, img))
	op := a.ok(t)(a.storage.CreateVolume(ctx, &v1.CreateVolumeRequest{Volume: &v1.Volume{Pool: pool, Name: "oci.img"}, OciReference: ref, OciInsecure: true}))
	if op.GetDone() != int64(len(content)) && op.GetTotal() != 0 {
		t.Logf("progress %d/%d", op.GetDone(), op.GetTotal())
	}
	got, err := os.ReadFile(vol("oci.img").GetPath())
	must(t, err)
	if !bytes.Equal(got, content) {
		t.Errorf("OCI volume content differs (%d bytes, want %d)", len(got), len(content))
	}
	// A reference to nothing fails clearly and leaves nothing.
	op, err = a.storage.CreateVolume(ctx, &v1.CreateVolumeRequest{Volume: &v1.Volume{Pool: pool, Name: "missing.img"}, OciReference: strings.TrimPrefix(reg.URL, "http://") + "/images/none:1", OciInsecure: true})
	must(t, err)
	if done := a.waitEnd(t, op); codes.Code(done.GetErrorCode()) != codes.FailedPrecondition || !strings.Contains(done.GetError(), "oci_reference") {
		t.Errorf("missing artifact: %v", done)
	}

	l, err := a.storage.ListVolumes(ctx, &v1.ListVolumesRequest{Pool: pool})
	must(t, err)
	var names []string
	for _, v := range l.GetVolumes() {
		names = append(names, v.GetName())
	}
	if got, want := strings.Join(names, " "), "a.raw b.qcow2 boot-copy.qcow2 boot.img oci.img"; got != want {
		t.Errorf("ListVolumes = %s, want %s", got, want)
	}
	if vl := mustVirsh(t, "vol-list", pool); strings.Count(vl, "\n")+1 != len(names) {
		t.Errorf("virsh vol-list disagrees:\n%s", vl)
	}
	p, err := a.storage.GetPool(ctx, &v1.GetPoolRequest{Name: pool})
	must(t, err)
	if p.GetVolumeCount() != int32(len(names)) {
		t.Errorf("pool volume_count = %d, want %d", p.GetVolumeCount(), len(names))
	}
}
