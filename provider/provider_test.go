package provider

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"

	"github.com/debvisor/debvisor/testenv/agent"
	"github.com/debvisor/debvisor/testenv/libvirtd"
)

// testAccProtoV6ProviderFactories runs the provider in-process; the real CLI (OpenTofu from
// tools/tofu, via TF_ACC_TERRAFORM_PATH) talks to it over the reattach protocol.
var testAccProtoV6ProviderFactories = map[string]func() (tfprotov6.ProviderServer, error){
	"debvisor": providerserver.NewProtocol6WithError(New("test")()),
}

// The real debvisor-agent every acceptance test in this package talks to: the first test that
// calls testAccAgent makes sure libvirtd runs and starts it, and it exports DEBVISOR_* so that a
// bare `provider "debvisor" {}` reaches it; TestMain stops it at the end.
var (
	agentOnce sync.Once
	testAgent *agent.Agent
	agentErr  error
	agentDir  string
)

// testAccAgent is the PreCheck of every acceptance test: it fails the test with the reason when
// the agent or libvirtd cannot be had, never skips.
func testAccAgent(t testing.TB) *agent.Agent {
	t.Helper()
	libvirtd.EnsureRunning(t)
	agentOnce.Do(func() {
		testAgent, agentErr = agent.Start(context.Background(), agent.Options{Dir: agentDir})
		if agentErr != nil {
			return
		}
		for _, kv := range testAgent.Env() {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
	})
	if agentErr != nil {
		t.Fatalf("start debvisor-agent: %v", agentErr)
	}
	return testAgent
}

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
	agentDir = dir
	code := m.Run()
	if a := testAgent; a != nil {
		a.Stop()
		if code != 0 {
			fmt.Fprintf(os.Stderr, "debvisor-agent log (%s):\n%s\n", a.LogFile, a.Log())
		}
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
