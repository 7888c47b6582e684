package upgrade

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	ggcr "github.com/google/go-containerregistry/pkg/registry"

	"github.com/debvisor/debvisor/nodeagent/fault"
	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
	"github.com/debvisor/debvisor/osimage/registry"
	"github.com/debvisor/debvisor/osimage/signature"
)

// tamperingRegistry is a real in-process registry that can flip a byte in
// every blob it serves above a size (the slot), as a compromised mirror
// would.
type tamperingRegistry struct {
	h      http.Handler
	tamper atomic.Bool
}

func (r *tamperingRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if !r.tamper.Load() || req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/blobs/") {
		r.h.ServeHTTP(w, req)
		return
	}
	rec := httptest.NewRecorder()
	r.h.ServeHTTP(rec, req)
	b := rec.Body.Bytes()
	if len(b) > 1<<20 {
		b[len(b)/2] ^= 0xff
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(b)
}

func signer(t testing.TB) (*signature.Signer, *signature.Verifier) {
	t.Helper()
	k, err := signature.GenerateKey(nil)
	must(t, err)
	s, err := signature.NewSigner(k)
	must(t, err)
	v, err := signature.NewVerifier(&k.PublicKey)
	must(t, err)
	return s, v
}

// TestUpgradeFromRegistry runs upgrades against a real registry: a signed
// release is written; unsigned, wrongly signed, tampered and unreachable
// ones are refused before (or, for a blob tampered in flight, without) a
// bootable byte reaching the slot.
func TestUpgradeFromRegistry(t *testing.T) {
	reg := &tamperingRegistry{h: ggcr.New()}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	client, err := registry.New(registry.WithInsecureHTTP(true))
	must(t, err)
	good, verifier := signer(t)
	other, _ := signer(t)

	push := func(tag, version string, seed uint64, s *signature.Signer) string {
		dir := t.TempDir()
		artifacttest.Write(t, dir, artifacttest.Spec{Version: version, Seed: seed, SlotSize: 2<<20 + 333})
		l, err := artifact.FromDir(context.Background(), dir)
		must(t, err)
		ref, err := client.ParseReference(host + "/debvisor/os:" + tag)
		must(t, err)
		res, err := client.Push(context.Background(), ref, l.Index())
		must(t, err)
		if s != nil {
			_, err := client.Sign(context.Background(), res.Digest, s)
			must(t, err)
		}
		return host + "/debvisor/os:" + tag
	}
	signed := push("0.2.0", "0.2.0", 2, good)
	unsigned := push("0.3.0", "0.3.0", 3, nil)
	foreign := push("0.4.0", "0.4.0", 4, other)

	n := newNode(t, osimage.SlotA, "0.1.0")
	n.grubBoots()
	m := newManager(t, n, RegistrySource{Client: client, Verifier: verifier})
	must(t, m.Boot(context.Background()))

	for _, tc := range []struct {
		name, ref string
		tamper    bool
		kind      fault.Kind
		want      string
	}{
		{"unsigned", unsigned, false, fault.FailedPrecondition, "no signature"},
		{"signed by an unknown key", foreign, false, fault.FailedPrecondition, "key"},
		{"unknown tag", host + "/debvisor/os:9.9.9", false, fault.NotFound, "not found"},
		{"unreachable registry", "127.0.0.1:1/debvisor/os:0.2.0", false, fault.Unavailable, "unreachable"},
		{"bad reference", "Not A Ref!", false, fault.Invalid, "ref:"},
		{"tampered slot blob", signed, true, fault.FailedPrecondition, "digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg.tamper.Store(tc.tamper)
			defer reg.tamper.Store(false)
			before := n.slotSum(osimage.SlotB)
			err := m.Upgrade(context.Background(), Request{Ref: tc.ref}, &progress{})
			if err == nil || fault.KindOf(err) != tc.kind || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.want)) {
				t.Fatalf("Upgrade = %v (kind %v), want %v containing %q", err, fault.KindOf(err), tc.kind, tc.want)
			}
			e := n.loadEnv()
			if ok, _ := e.SlotState(osimage.SlotB); ok {
				t.Fatal("slot B is bootable after a refused upgrade")
			}
			if !tc.tamper && n.slotSum(osimage.SlotB) != before {
				t.Fatal("slot B changed although the release was refused before any write")
			}
		})
	}

	var p progress
	must(t, m.Upgrade(context.Background(), Request{Ref: signed}, &p))
	e := n.loadEnv()
	if ok, tried := e.SlotState(osimage.SlotB); !ok || tried || e.Order()[0] != osimage.SlotB {
		t.Fatalf("after the signed upgrade: ok=%v tried=%v order=%v", ok, tried, e.Order())
	}
	if p.result["version"] != "0.2.0" || p.last != 2<<20+333 {
		t.Fatalf("progress: %+v", p)
	}
}
