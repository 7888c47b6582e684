// Package archtest is the one guard of the dependency rules in
// docs/architecture.md ("Packages and dependency rules"): each boundary is
// one rule, checked against the transitive non-test imports that `go list`
// reports, so a rule cannot be dodged through an intermediate package.
package archtest

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/debvisor/debvisor/"

type pkg struct {
	ImportPath string
	Deps       []string
}

func listDeps(t *testing.T, patterns ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-deps=false", "-json=ImportPath,Deps"}, patterns...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list %v: %v\n%s", patterns, err, stderr)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatalf("go list %v matched no packages", patterns)
	}
	return pkgs
}

// only allows the project packages under the given prefixes (relative to
// the module path; a prefix ending in "/" matches a tree, otherwise the
// package itself and its sub-packages).
func only(prefixes ...string) func(string) bool {
	return func(dep string) bool {
		rel := strings.TrimPrefix(dep, mod)
		for _, p := range prefixes {
			if rel == strings.TrimSuffix(p, "/") || strings.HasPrefix(rel, strings.TrimSuffix(p, "/")+"/") {
				return true
			}
		}
		return false
	}
}

// Leaf utilities under internal/ that any layer may use. The test harness
// (testenv/) is deliberately not among them: it imports the agent. The
// console network screen (internal/netcfg) is one because both the agent
// (on the node's console) and dvctl run it.
var leaves = []string{"internal/buildinfo", "internal/yamlstrict", "internal/pki", "internal/netcfg", "internal/atomicfile"}

func TestDependencyRules(t *testing.T) {
	rules := []struct {
		from    string
		allowed func(dep string) bool
		why     string
	}{
		{"./api/rules", only("api/rules"),
			"the API rules package is a leaf: it imports nothing of the project"},
		{"./api/...", only("api/"),
			"api/ is the bottom layer: generated code, the client and the rules"},
		{"./osimage/...", only("osimage", "api/rules"),
			"osimage and its sub-packages (artifact, signature, registry) hold the contracts the builder writes and the agent reads; they import only each other and the API rules"},
		{"./boot/...", only("boot", "osimage", "api/rules", "templates"),
			"the boot packages are shared by the builder, the agent and the installers: contracts below them only"},
		{"./internal/...", only("internal", "api/", "osimage"),
			"internal/ holds leaf utilities; nothing there may reach up into the agent, the builder or the clients"},
		{"./provider/...", only("provider", "api/", "internal/buildinfo"),
			"the provider talks to agents only through api/ (and its client), never agent internals"},
		{"./cmd/terraform-provider-debvisor", only("provider", "api/", "internal/buildinfo"),
			"the provider binary must not link agent or builder code"},
		{"./dvctl/...", only(append([]string{"dvctl", "api/", "boot", "osimage"}, leaves...)...),
			"dvctl is a client: the API, its client, PKI, and the boot packages for the emergency mode; never agent internals"},
		{"./cmd/dvctl", only(append([]string{"dvctl", "api/", "boot", "osimage"}, leaves...)...),
			"the dvctl binary must not link the agent"},
		{"./imagebuilder/...", only(append([]string{"imagebuilder", "osimage", "boot", "api/rules", "templates", "internal/qemu"}, leaves...)...),
			"the image builder shares only osimage/ and the boot packages with the agent"},
		{"./nodeagent/...", only(append([]string{"nodeagent", "osimage", "boot", "api/", "templates"}, leaves...)...),
			"the agent shares only osimage/ and the boot packages with the image builder"},
		{"./nodeagent/network", only("nodeagent/network", "nodeagent/fault", "api/", "internal/atomicfile"),
			"host networking is a domain package: it knows the API types, the rules, the fault kinds and durable file writes; the server and the agent call it, never the other way round"},
		{"./internal/netcfg", only("internal/netcfg", "api/"),
			"the console network screen knows only the API: it drives NetworkService, whether over gRPC or in the agent's process"},
		{"./templates/...", only("templates"),
			"templates are embedded files"},
	}
	for _, r := range rules {
		t.Run(r.from, func(t *testing.T) {
			for _, p := range listDeps(t, r.from) {
				for _, d := range p.Deps {
					if strings.HasPrefix(d, mod) && !r.allowed(d) {
						t.Errorf("%s imports %s: %s", p.ImportPath, d, r.why)
					}
				}
			}
		})
	}
}

// testHelpers are packages that exist for tests: testenv/ starts real
// agents and libvirtd; osimage's artifacttest and registrytest write
// synthetic releases and start docker-registry.
var testHelpers = []string{"testenv", "osimage/artifact/artifacttest", "osimage/registry/registrytest"}

func isTestHelper(path string) bool {
	for _, h := range testHelpers {
		if path == mod+h || strings.HasPrefix(path, mod+h+"/") {
			return true
		}
	}
	return false
}

// TestHarnessOnlyInTests: no shipped package may link a test helper.
func TestHarnessOnlyInTests(t *testing.T) {
	for _, p := range listDeps(t, "./...") {
		if isTestHelper(p.ImportPath) {
			continue
		}
		for _, d := range p.Deps {
			if isTestHelper(d) {
				t.Errorf("%s imports the test helper %s", p.ImportPath, d)
			}
		}
	}
}

// TestRulesAreNotVacuous: every rule's pattern must match packages that
// import something of the project, or a typo in a pattern would pass.
func TestRulesAreNotVacuous(t *testing.T) {
	for _, pattern := range []string{"./provider/...", "./dvctl/...", "./imagebuilder/...", "./nodeagent/..."} {
		n := 0
		for _, p := range listDeps(t, pattern) {
			for _, d := range p.Deps {
				if strings.HasPrefix(d, mod) {
					n++
				}
			}
		}
		if n == 0 {
			t.Errorf("%s imports nothing of the project: the rule checks nothing", pattern)
		}
	}
}
