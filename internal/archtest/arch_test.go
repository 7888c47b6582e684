// Package archtest guards the dependency rules of DESIGN.md: the provider
// talks to agents only through the API, and the image builder and the node
// agent share only osimage/.
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

func TestDependencyRules(t *testing.T) {
	rules := []struct {
		from    string
		allowed func(dep string) bool
		why     string
	}{
		{"./provider/...", func(d string) bool {
			return strings.HasPrefix(d, mod+"api/") || strings.HasPrefix(d, mod+"internal/buildinfo")
		}, "the provider may import only api/ (and the client under it), never agent internals"},
		{"./cmd/terraform-provider-debvisor", func(d string) bool {
			return strings.HasPrefix(d, mod+"api/") || strings.HasPrefix(d, mod+"provider") || strings.HasPrefix(d, mod+"internal/buildinfo")
		}, "the provider binary must not link agent or builder code"},
		{"./imagebuilder/...", func(d string) bool { return !strings.HasPrefix(d, mod+"nodeagent") }, "imagebuilder and nodeagent share only osimage/"},
		{"./nodeagent/...", func(d string) bool { return !strings.HasPrefix(d, mod+"imagebuilder") }, "nodeagent and imagebuilder share only osimage/"},
		{"./api/...", func(d string) bool { return strings.HasPrefix(d, mod+"api/") }, "api/ is the bottom layer"},
		{"./osimage/...", func(d string) bool { return strings.HasPrefix(d, mod+"osimage") }, "osimage/ is a contract package with no project imports"},
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
