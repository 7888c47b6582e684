package provider

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
	"github.com/debvisor/debvisor/osimage/registry"
	"github.com/debvisor/debvisor/osimage/signature"
	"github.com/debvisor/debvisor/testenv/agent"
)

// upgradeNode is a real debvisor-agent that believes it booted slot A of a DebVisor node: the
// slots are files, the ESP a directory, the kernel command line and release file are written
// here. Slot A holds the signed release `installed` pushed to an in-process registry; `unsigned`
// is a newer release there that carries no signature. Nothing here can make the agent reboot:
// every upgrade the tests ask for is either the running image (a no-op) or refused before a write.
type upgradeNode struct {
	agent     *agent.Agent
	dir       string
	installed string // reference of the release slot A holds (1.0.0)
	unsigned  string // reference of an unsigned 2.0.0
}

func newUpgradeNode(t *testing.T) *upgradeNode {
	t.Helper()
	ctx := context.Background()
	srv := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	rc, err := registry.New(registry.WithInsecureHTTP(true))
	must(t, err)
	key, err := signature.GenerateKey(nil)
	must(t, err)
	signer, err := signature.NewSigner(key)
	must(t, err)
	pub, err := signature.MarshalPublicKey(&key.PublicKey)
	must(t, err)

	work := t.TempDir()
	push := func(tag, version string, seed uint64, sign bool) (ref string, slot []byte) {
		src := filepath.Join(work, "release-"+tag)
		artifacttest.Write(t, src, artifacttest.Spec{Version: version, Seed: seed, NoDisk: true})
		l, err := artifact.FromDir(ctx, src, artifact.WithKinds(artifact.Slot))
		must(t, err)
		r, err := rc.ParseReference(host + "/debvisor/os:" + tag)
		must(t, err)
		res, err := rc.Push(ctx, r, l.Index())
		must(t, err)
		if sign {
			_, err := rc.Sign(ctx, res.Digest, signer)
			must(t, err)
		}
		slot, err = os.ReadFile(filepath.Join(src, artifact.SlotFile))
		must(t, err)
		return r.String(), slot
	}
	n := &upgradeNode{dir: filepath.Join(work, "node")}
	var slotA []byte
	n.installed, slotA = push("1.0.0", "1.0.0", 1, true)
	n.unsigned, _ = push("2.0.0", "2.0.0", 2, false)

	// Slot A holds 1.0.0 as an installer writes it (no record of where it came from); slot B is
	// empty and not bootable; GRUB's environment is a fresh install's: A primary and committed.
	must(t, os.MkdirAll(filepath.Join(n.dir, "esp"), 0o755))
	must(t, bootenv.NewStore(bootenv.DirFS{Root: filepath.Join(n.dir, "esp")}).Save(ctx, bootenv.New()))
	slotSize := int64(len(slotA)) + 4<<20
	for s, content := range map[string][]byte{"a": slotA, "b": nil} {
		p := filepath.Join(n.dir, "slot-"+s)
		must(t, os.WriteFile(p, content, 0o644))
		must(t, os.Truncate(p, slotSize))
	}
	must(t, os.WriteFile(filepath.Join(n.dir, "cmdline"), []byte("ro debvisor.slot=A debvisor.fallback=0\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(n.dir, "release"), osimage.Release{Version: "1.0.0", Arch: osimage.Arch}.Marshal(), 0o644))
	must(t, os.WriteFile(filepath.Join(n.dir, "release.pub"), pub, 0o644))

	n.agent, err = agent.Start(ctx, agent.Options{
		Binary: agentBinary(t), Dir: filepath.Join(work, "agent"), NodeName: "acc-upgrade-node", NoLibvirt: true,
		ExtraConfig: fmt.Sprintf(`upgrade:
  esp: %[1]s/esp
  slot_a: %[1]s/slot-a
  slot_b: %[1]s/slot-b
  trusted_keys: [%[1]s/release.pub]
  insecure_http: true
  cmdline_file: %[1]s/cmdline
  release_file: %[1]s/release
`, n.dir)})
	must(t, err)
	t.Cleanup(func() {
		n.agent.Stop()
		if t.Failed() {
			t.Logf("debvisor-agent log (%s):\n%s", n.agent.LogFile, n.agent.Log())
		}
	})
	return n
}

var agentBin struct {
	sync.Once
	path string
	err  error
}

// agentBinary builds debvisor-agent once for the tests that start their own agent (or reuses the
// shared agent's).
func agentBinary(t *testing.T) string {
	t.Helper()
	if testAgent != nil {
		return testAgent.Binary()
	}
	agentBin.Do(func() { agentBin.path, agentBin.err = agent.Build(context.Background(), agentDir) })
	if agentBin.err != nil {
		t.Fatal(agentBin.err)
	}
	return agentBin.path
}

// config is a debvisor_node with image, with a provider block for this agent.
func (n *upgradeNode) config(image, extra string) string {
	a := n.agent
	return fmt.Sprintf(`
provider "debvisor" {
  endpoint  = %q
  ca_file   = %q
  cert_file = %q
  key_file  = %q
}

resource "debvisor_node" "this" {
  image = %q
%s}
`, a.Endpoint, a.Admin.CAFile, a.Admin.CertFile, a.Admin.KeyFile, image, extra)
}

// fingerprint is the slots' bytes and the boot environment: what an upgrade would change.
func (n *upgradeNode) fingerprint(t *testing.T) [][sha256.Size]byte {
	t.Helper()
	var out [][sha256.Size]byte
	for _, f := range []string{"slot-a", "slot-b", "esp/" + osimage.ESPGrubEnv, "esp/" + osimage.ESPGrubEnvBackup} {
		b, err := os.ReadFile(filepath.Join(n.dir, f))
		must(t, err)
		out = append(out, sha256.Sum256(b))
	}
	return out
}

// unchanged checks that no slot and no copy of the boot environment changed since before.
func (n *upgradeNode) unchanged(t *testing.T, before [][sha256.Size]byte) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for i, h := range n.fingerprint(t) {
			if !bytes.Equal(h[:], before[i][:]) {
				return fmt.Errorf("file %d of the slots and boot environment changed: the apply was not a no-op", i)
			}
		}
		return nil
	}
}

func TestAccNodeResource(t *testing.T) {
	n := newUpgradeNode(t)
	addr := "debvisor_node.this"
	before := n.fingerprint(t)
	slot := func(i int) tfjsonpath.Path { return tfjsonpath.New("slots").AtSliceIndex(i) }
	keep := []statecheck.StateCheck{
		statecheck.ExpectKnownValue(addr, tfjsonpath.New("image"), knownvalue.StringExact(n.installed)),
		statecheck.ExpectKnownValue(addr, tfjsonpath.New("booted_image"), knownvalue.StringExact(n.installed)),
		statecheck.ExpectKnownValue(addr, tfjsonpath.New("booted_version"), knownvalue.StringExact("1.0.0")),
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			// Adopt: slot A already holds the image. Nothing is written or activated, and the
			// agent now records which reference slot A came from.
			{
				Config: n.config(n.installed, ""),
				ConfigStateChecks: append([]statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact(n.agent.NodeName)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("force"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("booted_slot"), knownvalue.StringExact("A")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("booted_digest"), knownvalue.StringRegexp(regexp.MustCompile(`^sha256:[0-9a-f]{64}$`))),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("next_boot"), knownvalue.StringExact("A")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("slots"), knownvalue.ListSizeExact(2)),
					statecheck.ExpectKnownValue(addr, slot(0), knownvalue.ObjectPartial(map[string]knownvalue.Check{
						"name": knownvalue.StringExact("A"), "booted": knownvalue.Bool(true), "bootable": knownvalue.Bool(true),
						"primary": knownvalue.Bool(true), "committed": knownvalue.Bool(true), "image": knownvalue.StringExact(n.installed),
						"version": knownvalue.StringExact("1.0.0"),
					})),
					statecheck.ExpectKnownValue(addr, slot(1), knownvalue.ObjectPartial(map[string]knownvalue.Check{
						"name": knownvalue.StringExact("B"), "booted": knownvalue.Bool(false), "bootable": knownvalue.Bool(false),
						"image": knownvalue.StringExact(""),
					})),
				}, keep...),
				Check: n.unchanged(t, before),
			},
			// Import by the node's name: image comes from the booted slot's record.
			{
				ResourceName:      addr,
				ImportState:       true,
				ImportStateId:     n.agent.NodeName,
				ImportStateVerify: true,
			},
			// An unsigned release is refused before anything is written: the apply fails with
			// the agent's reason and the state keeps the image the node runs.
			{
				Config:      n.config(n.unsigned, "  timeouts {\n    update = \"2m\"\n  }\n"),
				ExpectError: regexp.MustCompile(`(?s)Upgrade node acc-upgrade-node.*refused or failed the upgrade.*resolve phase.*refused:.*no\s+signature`),
			},
			// An unreachable registry: the operation fails UNAVAILABLE; that is the registry's
			// state, not the agent's, and it must not be retried until the timeout.
			{
				Config:      n.config("127.0.0.1:1/debvisor/os:2.0.0", "  timeouts {\n    update = \"2m\"\n  }\n"),
				ExpectError: regexp.MustCompile(`(?s)refused or failed the upgrade.*Unavailable.*registry\s+unreachable`),
			},
			// Back to the running image: nothing to do, nothing changed on the node.
			{
				Config: n.config(n.installed, ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				ConfigStateChecks: keep,
				Check:             n.unchanged(t, before),
			},
		},
	})
}

func TestAccNodeResource_invalid(t *testing.T) {
	n := newUpgradeNode(t)
	tests := []struct {
		image string
		want  string
	}{
		{"", `(?s)Invalid OCI reference.*must not be\s+empty`},
		{"Not A Ref!", `(?s)Invalid OCI reference.*contains\s+whitespace`},
		{"registry.example/Debvisor/OS:1.0", `(?s)Invalid OCI reference.*repository\s+can\s+only\s+contain`},
		{"registry.example/debvisor/os:bad:tag", `(?s)Invalid OCI reference.*repository\s+can\s+only\s+contain.*os:bad`},
		{"registry.example/debvisor/os@sha256:abc", `(?s)Invalid OCI reference.*digest`},
	}
	steps := make([]resource.TestStep, 0, len(tests))
	for _, tt := range tests {
		steps = append(steps, resource.TestStep{
			Config:      n.config(tt.image, ""),
			PlanOnly:    true,
			ExpectError: regexp.MustCompile(tt.want),
		})
	}
	resource.Test(t, resource.TestCase{ProtoV6ProviderFactories: testAccProtoV6ProviderFactories, Steps: steps})
}

func TestCheckReference(t *testing.T) {
	tests := []struct {
		ref string
		ok  bool
	}{
		{"registry.example:5000/debvisor/os:0.2.0", true},
		{"registry.example/debvisor/os@sha256:" + strings.Repeat("ab", 32), true},
		{"127.0.0.1:5000/os", true},
		{"", false},
		{"  ", false},
		{"registry.example/debvisor/os:0.2.0 ", false},
		{"registry.example/Debvisor/os:1", false},
		{"registry.example/debvisor/os@sha256:abc", false},
		{"registry.example/debvisor/os:a:b", false},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			if err := checkReference(tt.ref); (err == nil) != tt.ok {
				t.Fatalf("checkReference(%q) = %v, want ok=%v", tt.ref, err, tt.ok)
			}
		})
	}
}

func TestSameReference(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"registry.example/debvisor/os:1", "registry.example/debvisor/os:1", true},
		{"registry.example/debvisor/os", "registry.example/debvisor/os:latest", true},
		{"registry.example/debvisor/os:1", "registry.example/debvisor/os:2", false},
		{"registry.example/debvisor/os:1", "registry.example/debvisor/os@sha256:" + strings.Repeat("ab", 32), false},
		{"registry.example/debvisor/os:1", "", false},
		{"", "", true},
	}
	for _, tt := range tests {
		if got := sameReference(tt.a, tt.b); got != tt.same {
			t.Errorf("sameReference(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.same)
		}
	}
}

// TestUpgradeDone covers the end of an upgrade as the slots show it while the provider waits: the
// path through a real reboot needs a booted DebVisor image (e2e/), so each state is spelled out.
func TestUpgradeDone(t *testing.T) {
	slots := func(booted string, b *v1.Slot) *v1.SlotStatus {
		a := &v1.Slot{Name: "A", Version: "1.0.0", Bootable: true, Booted: booted == "A", LastResult: "committed"}
		b.Name, b.Booted = "B", booted == "B"
		return &v1.SlotStatus{BootedSlot: booted, Slots: []*v1.Slot{a, b}}
	}
	tests := []struct {
		name string
		st   *v1.SlotStatus
		done bool
		err  string
	}{
		{"staged, not rebooted yet", slots("A", &v1.Slot{Version: "2.0.0", Bootable: true, Primary: true, LastResult: "staged"}), false, ""},
		{"booted, health check running", slots("B", &v1.Slot{Version: "2.0.0", Bootable: true, Tried: true, Primary: true, LastResult: "staged"}), false, ""},
		{"committed", slots("B", &v1.Slot{Version: "2.0.0", Bootable: true, Primary: true, Committed: true, LastResult: "committed"}), true, ""},
		{"health check failed, rolling back", slots("B", &v1.Slot{Version: "2.0.0", LastResult: "health-failed",
			Reason: "health check failed within 5m0s: libvirt: not answering"}), true,
			"slot B (2.0.0) did not take over: health-failed: health check failed within 5m0s: libvirt: not answering; the node is rolling back"},
		{"GRUB fell back", slots("A", &v1.Slot{Version: "2.0.0", LastResult: "rolled-back", Reason: "slot B was booted but never committed"}), true,
			"did not take over: rolled-back: slot B was booted but never committed; the node runs slot A again"},
		{"write failed", slots("A", &v1.Slot{LastResult: "write-failed"}), true, "write-failed: no reason recorded"},
		{"committed earlier, booted from the other slot", slots("A", &v1.Slot{Version: "2.0.0", Bootable: true, Committed: true, LastResult: "staged"}), false, ""},
		{"no such slot", &v1.SlotStatus{BootedSlot: "A"}, true, `no slot "B"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done, err := upgradeDone(tt.st, "B")
			if done != tt.done || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("upgradeDone = %v, %v; want %v, %q", done, err, tt.done, tt.err)
			}
		})
	}
}
