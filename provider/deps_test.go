package provider

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies enforces the design rule that the provider (and its binary) import only the API
// packages of this module — api/... and internal/buildinfo — never agent or image-builder internals.
// Test-only infrastructure (internal/testenv/...) is outside the non-test import graph checked here.
func TestDependencies(t *testing.T) {
	const mod = "github.com/debvisor/debvisor/"
	allowed := []string{mod + "api/", mod + "provider", mod + "internal/buildinfo", mod + "cmd/terraform-provider-debvisor"}
	for _, pkg := range []string{mod + "provider", mod + "cmd/terraform-provider-debvisor"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		n := 0
		for _, dep := range strings.Fields(string(out)) {
			if !strings.HasPrefix(dep, mod) {
				continue
			}
			n++
			ok := false
			for _, a := range allowed {
				if strings.HasPrefix(dep, a) {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s imports %s: the provider may import only api/... (and internal/buildinfo)", pkg, dep)
			}
		}
		if n == 0 {
			t.Errorf("go list -deps %s listed no package of this module; the check would pass vacuously", pkg)
		}
	}
}
