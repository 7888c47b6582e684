package provider

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// tofuWork runs the real CLI against a configuration the way a user does: the provider built as
// a binary and installed with dev_overrides (not in-process), so the CLI can be interrupted and
// the agent killed under it. terraform-plugin-testing cannot express "the first apply may fail,
// the next must converge", which the fault tests need.
type tofuWork struct {
	t    testing.TB
	tofu string
	dir  string
	env  []string
}

var (
	providerBinOnce sync.Once
	providerBin     string
	providerBinErr  error
)

// builtProvider builds cmd/terraform-provider-debvisor once per test binary.
func builtProvider(t testing.TB) string {
	t.Helper()
	providerBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "debvisor-provider-bin-")
		if err != nil {
			providerBinErr = err
			return
		}
		providerBin = filepath.Join(dir, "terraform-provider-debvisor")
		if out, err := exec.Command("go", "build", "-o", providerBin, "../cmd/terraform-provider-debvisor").CombinedOutput(); err != nil {
			providerBinErr = fmt.Errorf("build provider: %w\n%s", err, out)
		}
	})
	if providerBinErr != nil {
		t.Fatal(providerBinErr)
	}
	return providerBin
}

// newTofuWork writes config into a fresh directory; env (DEBVISOR_*) points the provider at an
// agent.
func newTofuWork(t testing.TB, config string, env []string) *tofuWork {
	t.Helper()
	tofu := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tofu == "" {
		t.Fatal("TF_ACC_TERRAFORM_PATH is not set (TestMain sets it)")
	}
	dir := t.TempDir()
	rc := filepath.Join(dir, "tofurc")
	must(t, os.WriteFile(rc, []byte(fmt.Sprintf(`provider_installation {
  dev_overrides { "registry.terraform.io/debvisor/debvisor" = %q }
  direct {}
}
`, filepath.Dir(builtProvider(t)))), 0o644))
	work := filepath.Join(dir, "work")
	must(t, os.MkdirAll(work, 0o755))
	must(t, os.WriteFile(filepath.Join(work, "main.tf"), []byte(config), 0o644))
	return &tofuWork{t: t, tofu: tofu, dir: work,
		env: append(append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "TF_IN_AUTOMATION=1"), env...)}
}

// command returns the CLI command for args with its output collected in out.
func (w *tofuWork) command(out *bytes.Buffer, args ...string) *exec.Cmd {
	cmd := exec.Command(w.tofu, args...)
	cmd.Dir = w.dir
	cmd.Env = w.env
	cmd.Stdout, cmd.Stderr = out, out
	return cmd
}

// run runs the CLI to its end and returns its output and exit code.
func (w *tofuWork) run(args ...string) (string, int) {
	w.t.Helper()
	var out bytes.Buffer
	start := time.Now()
	code := exitCode(w.t, w.command(&out, args...).Run())
	w.t.Logf("tofu %s: exit %d after %s", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond))
	return out.String(), code
}

func exitCode(t testing.TB, err error) int {
	t.Helper()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		return ee.ExitCode()
	} else if err != nil {
		t.Fatalf("tofu: %v", err)
	}
	return 0
}
