package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tofuWork is examples/quickstart in a directory of its own, applied by
// the pinned OpenTofu with the provider built by this test under
// dev_overrides (no `tofu init`: with overrides there is nothing to
// install, and init would ask a registry), against a node's agent through
// QEMU's loopback forward: what a user of the quickstart runs.
type tofuWork struct {
	t   testing.TB
	bin string
	dir string
	env []string
}

// tofuBinary is the pinned OpenTofu (scripts/build-tofu builds it into the
// cache when cold), or TF_ACC_TERRAFORM_PATH when set.
func tofuBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("TF_ACC_TERRAFORM_PATH"); p != "" {
		return p
	}
	cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "build-tofu"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/build-tofu: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// newQuickstart copies examples/quickstart and points the provider at n.
func newQuickstart(t testing.TB, n *node, poolPath string) *tofuWork {
	t.Helper()
	main, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "quickstart", "main.tf"))
	if err != nil {
		t.Fatal(err)
	}
	return newTofu(t, n, string(main), "TF_VAR_pool_path="+poolPath)
}

// newTofu writes config as main.tf of a fresh directory, with the provider
// pointed at n; env adds TF_VAR_ settings.
func newTofu(t testing.TB, n *node, config string, env ...string) *tofuWork {
	t.Helper()
	dir := t.TempDir()
	plugins := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(binaries(t), "terraform-provider-debvisor"), filepath.Join(plugins, "terraform-provider-debvisor")); err != nil {
		t.Fatal(err)
	}
	rc := fmt.Sprintf(`provider_installation {
  dev_overrides {
    "registry.opentofu.org/debvisor/debvisor"  = %q
    "registry.terraform.io/debvisor/debvisor" = %q
  }
  direct {}
}
`, plugins, plugins)
	if err := os.WriteFile(filepath.Join(dir, "tofurc"), []byte(rc), 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "main.tf"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return &tofuWork{t: t, bin: tofuBinary(t), dir: work, env: append(append(os.Environ(),
		"TF_CLI_CONFIG_FILE="+filepath.Join(dir, "tofurc"), "TF_IN_AUTOMATION=1",
		"DEBVISOR_ENDPOINT="+n.m.AgentEndpoint(), "DEBVISOR_CA="+n.seed.Creds.CA,
		"DEBVISOR_CERT="+n.seed.Creds.Cert, "DEBVISOR_KEY="+n.seed.Creds.Key), env...)}
}

// nodeConfig is a debvisor_node whose image is var.image.
const nodeConfig = `terraform {
  required_providers {
    debvisor = { source = "debvisor/debvisor" }
  }
}

provider "debvisor" {}

variable "image" { type = string }

resource "debvisor_node" "this" {
  image = var.image
}

output "booted" {
  value = "${debvisor_node.this.booted_slot} ${debvisor_node.this.booted_version}"
}
`

// tofuUpgrade adopts the node at image from (an apply that changes
// nothing on the node), then changes the image to to: tofu apply upgrades
// the node and returns once the new slot is committed. It returns the
// booted "slot version" the provider read back.
func tofuUpgrade(ctx context.Context, t *testing.T, n *node, from, to string) string {
	t.Helper()
	w := newTofu(t, n, nodeConfig, "TF_VAR_image="+from)
	w.must(ctx, "apply", "-auto-approve", "-input=false", "-no-color")
	before := w.output(ctx, "booted")
	w.planEmpty(ctx, "after adopting the node")
	w.env = append(w.env, "TF_VAR_image="+to)
	t0 := time.Now()
	w.must(ctx, "apply", "-auto-approve", "-input=false", "-no-color")
	after := w.output(ctx, "booted")
	t.Logf("tofu apply of debvisor_node %s -> %s took %s: booted %q -> %q", from, to, time.Since(t0).Round(time.Second), before, after)
	w.planEmpty(ctx, "after the upgrade")
	return after
}

// run runs tofu with args and returns its output and exit code; an error
// other than a non-zero exit fails the test.
func (w *tofuWork) run(ctx context.Context, args ...string) (string, int) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bin, args...)
	cmd.Dir, cmd.Env = w.dir, w.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	default:
		w.t.Fatalf("tofu %s: %v\n%s", strings.Join(args, " "), err, out.String())
		return "", -1
	}
}

// must runs tofu and fails the test unless it exits 0.
func (w *tofuWork) must(ctx context.Context, args ...string) string {
	w.t.Helper()
	out, code := w.run(ctx, args...)
	if code != 0 {
		w.t.Fatalf("tofu %s exited %d:\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// planEmpty fails the test unless a plan proposes no change.
func (w *tofuWork) planEmpty(ctx context.Context, when string) {
	w.t.Helper()
	out, code := w.run(ctx, "plan", "-input=false", "-detailed-exitcode", "-no-color")
	if code != 0 {
		w.t.Fatalf("the plan %s is not empty (exit %d):\n%s", when, code, out)
	}
}

// output is one tofu output value.
func (w *tofuWork) output(ctx context.Context, name string) string {
	w.t.Helper()
	return strings.TrimSpace(w.must(ctx, "output", "-raw", name))
}

// quickstartApply applies examples/quickstart against n and proves with
// virsh inside the node that the VM is defined, running and autostarted,
// and that a second plan is empty.
func quickstartApply(ctx context.Context, t *testing.T, n *node, poolPath string) *tofuWork {
	t.Helper()
	w := newQuickstart(t, n, poolPath)
	t0 := time.Now()
	w.must(ctx, "apply", "-auto-approve", "-input=false", "-no-color")
	vm := w.output(ctx, "vm")
	t.Logf("tofu apply against the node took %s: %s", time.Since(t0).Round(time.Second), vm)
	// The VM runs under KVM when the node has a usable /dev/kvm (QEMU's
	// TCG with -cpu max emulates SVM, so the guest may have one) and under
	// plain QEMU emulation when not, and says which.
	want := "is running on qemu"
	if _, err := n.ssh(ctx, "test -c /dev/kvm && test -w /dev/kvm"); err == nil {
		want = "is running on kvm"
	}
	if !strings.Contains(vm, want) {
		t.Fatalf("quickstart VM: %q, want %q", vm, want)
	}
	checkQuickstartVM(ctx, t, n, "after tofu apply")
	w.planEmpty(ctx, "after apply")
	return w
}

// checkQuickstartVM: virsh inside the node sees the quickstart VM running,
// set to autostart, on its volume in the pool.
func checkQuickstartVM(ctx context.Context, t *testing.T, n *node, when string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		state, err := n.ssh(ctx, "virsh -c qemu:///system domstate hello")
		if err == nil && state == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: virsh domstate hello: %q (%v)", when, state, err)
		}
		time.Sleep(5 * time.Second)
	}
	if out := n.mustSSH(ctx, "virsh -c qemu:///system dominfo hello | grep -i '^autostart'"); !strings.Contains(out, "enable") {
		t.Fatalf("%s: hello autostart: %q", when, out)
	}
	if out := n.mustSSH(ctx, "virsh -c qemu:///system vol-list quickstart"); !strings.Contains(out, "hello-root") {
		t.Fatalf("%s: volumes of the quickstart pool: %q", when, out)
	}
}

// quickstartDestroy destroys what the quickstart made and proves nothing
// is left: no domain, no pool, no pool directory, an empty state.
func quickstartDestroy(ctx context.Context, t *testing.T, n *node, w *tofuWork, poolPath string) {
	t.Helper()
	w.must(ctx, "destroy", "-auto-approve", "-input=false", "-no-color")
	if out := w.must(ctx, "state", "list"); strings.TrimSpace(out) != "" {
		t.Fatalf("state after destroy: %q", out)
	}
	if out := n.mustSSH(ctx, "virsh -c qemu:///system list --all --name"); strings.TrimSpace(out) != "" {
		t.Fatalf("domains left on the node after destroy: %q", out)
	}
	if out := n.mustSSH(ctx, "virsh -c qemu:///system pool-list --all --name"); strings.Contains(out, "quickstart") {
		t.Fatalf("pools left on the node after destroy: %q", out)
	}
	if out, err := n.ssh(ctx, "ls -A "+poolPath); err == nil {
		t.Fatalf("%s left on the node after destroy: %q", poolPath, out)
	}
}
