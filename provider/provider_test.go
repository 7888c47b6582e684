package provider

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"

	"github.com/debvisor/debvisor/internal/testenv/agent"
)

// testAccProtoV6ProviderFactories runs the provider in-process; the real CLI (OpenTofu from
// tools/tofu, via TF_ACC_TERRAFORM_PATH) talks to it over the reattach protocol.
var testAccProtoV6ProviderFactories = map[string]func() (tfprotov6.ProviderServer, error){
	"debvisor": providerserver.NewProtocol6WithError(New("test")()),
}

// testAgent is the real debvisor-agent every acceptance test in this package talks to. TestMain
// starts it and exports DEBVISOR_* so that a bare `provider "debvisor" {}` reaches it.
var testAgent *agent.Agent

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// Acceptance tests are the point of this package: run them always, and fail, never skip, when
	// something they need is missing.
	if os.Getenv("TF_ACC") == "" {
		os.Setenv("TF_ACC", "1")
	}
	// terraform-plugin-testing's default reattach address uses the legacy namespace "-", which
	// OpenTofu rejects; "hashicorp" is what both OpenTofu and Terraform resolve a bare "debvisor" to.
	if os.Getenv("TF_ACC_PROVIDER_NAMESPACE") == "" {
		os.Setenv("TF_ACC_PROVIDER_NAMESPACE", "hashicorp")
	}
	if err := ensureTerraformCLI(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: no Terraform CLI for acceptance tests:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "debvisor-provider-acc-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := prepareHost(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: host not ready for acceptance tests:", err)
		return 1
	}
	a, err := agent.Start(context.Background(), agent.Options{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: start debvisor-agent:", err)
		return 1
	}
	testAgent = a
	for _, kv := range a.Env() {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	code := m.Run()
	a.Stop()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "debvisor-agent log (%s):\n%s\n", a.LogFile, a.Log())
	}
	return code
}

// ensureTerraformCLI points TF_ACC_TERRAFORM_PATH at the pinned OpenTofu build (scripts/build-tofu
// prints its cached path, building it when cold) unless the caller chose a CLI already.
func ensureTerraformCLI() error {
	if p := os.Getenv("TF_ACC_TERRAFORM_PATH"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("TF_ACC_TERRAFORM_PATH=%s: %w", p, err)
		}
		return nil
	}
	script, err := filepath.Abs("../scripts/build-tofu")
	if err != nil {
		return err
	}
	cmd := exec.Command(script)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %w (set TF_ACC_TERRAFORM_PATH to a tofu or terraform ≥ 1.8 binary)", script, err)
	}
	p := strings.TrimSpace(string(out))
	os.Setenv("TF_ACC_TERRAFORM_PATH", p)
	return nil
}
