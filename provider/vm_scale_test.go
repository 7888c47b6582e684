package provider

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/acctest"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// TestAccVMResource_parallel50 creates 50 VMs in one apply with -parallelism=50 (the CLI reads
// TF_CLI_ARGS_<command>), requires zero errors and an empty plan afterwards (the framework checks
// that after every apply), then destroys them the same way.
func TestAccVMResource_parallel50(t *testing.T) {
	testAccAgent(t)
	const n = 50
	for _, cmd := range []string{"plan", "apply", "destroy", "refresh"} {
		t.Setenv("TF_CLI_ARGS_"+cmd, "-parallelism=50")
	}
	prefix := acctest.RandomWithPrefix("tf-acc-p50")
	var cfg strings.Builder
	checks := make([]statecheck.StateCheck, 0, n)
	for i := range n {
		fmt.Fprintf(&cfg, `
resource "debvisor_vm" "vm%[1]d" {
  name       = "%[2]s-%[1]d"
  vcpus      = 1
  memory_mib = 32
  nics       = [{}]
}
`, i, prefix)
		checks = append(checks, statecheck.ExpectKnownValue(fmt.Sprintf("debvisor_vm.vm%d", i), tfjsonpath.New("state"), knownvalue.StringExact("running")))
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: cfg.String(), ConfigStateChecks: checks},
		},
	})
}
