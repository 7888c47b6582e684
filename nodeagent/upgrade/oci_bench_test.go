package upgrade

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/debvisor/debvisor/boot/slotwriter"
	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
	"github.com/debvisor/debvisor/osimage/registry"
	"github.com/debvisor/debvisor/osimage/registry/registrytest"
)

// BenchmarkRegistryToSlot is the write path of an upgrade alone, in one
// process so that -cpuprofile sees all of it: a 256 MiB signed slot
// streamed from docker-registry on loopback through RegistrySource into a
// slot file by the slot writer (hash, write, fsync, read back).
//
//	go test -run '^$' -bench RegistryToSlot -cpuprofile cpu.out ./nodeagent/upgrade/
func BenchmarkRegistryToSlot(b *testing.B) {
	const size = 256 << 20
	ctx := context.Background()
	dir := b.TempDir()
	artifacttest.Write(b, dir, artifacttest.Spec{SlotSize: size, NoDisk: true, Version: "9.0.0"})
	reg := registrytest.StartDistribution(b, registrytest.DistributionConfig{})
	client, err := registry.New(registry.WithInsecureHTTP(true))
	if err != nil {
		b.Fatal(err)
	}
	s, v := signer(b)
	l, err := artifact.FromDir(ctx, dir, artifact.WithKinds(artifact.Slot))
	if err != nil {
		b.Fatal(err)
	}
	ref, err := client.ParseReference(reg.Host + "/debvisor/os:9.0.0")
	if err != nil {
		b.Fatal(err)
	}
	res, err := client.Push(ctx, ref, l.Index())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := client.Sign(ctx, res.Digest, s); err != nil {
		b.Fatal(err)
	}
	art, err := RegistrySource{Client: client, Verifier: v}.Resolve(ctx, ref.String())
	if err != nil {
		b.Fatal(err)
	}
	// The slot: a file larger than the image that holds data already, as
	// a partition does (writing into a file's holes is an allocation
	// benchmark of the file system instead).
	slot := filepath.Join(dir, "slot")
	if err := os.WriteFile(slot, bytes.Repeat([]byte{0xA5}, size+16<<20), 0o600); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dev, err := os.OpenFile(slot, os.O_RDWR, 0)
		if err != nil {
			b.Fatal(err)
		}
		rc, err := art.Open(ctx)
		if err != nil {
			b.Fatal(err)
		}
		_, err = slotwriter.Write(ctx, rc, slotwriter.Target{Device: dev, Size: size},
			slotwriter.WithExpectedSize(art.Size), slotwriter.WithExpectedDigest(art.Digest))
		rc.Close()
		dev.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
}
