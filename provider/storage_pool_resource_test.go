package provider

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/acctest"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

func testAccStoragePoolConfig(name, dir string, forceDestroy bool) string {
	return fmt.Sprintf(`
resource "debvisor_storage_pool" "test" {
  name           = %[1]q
  type           = "dir"
  path           = %[2]q
  force_destroy  = %[3]t
  delete_storage = true
}

data "debvisor_storage_pool" "test" {
  name = debvisor_storage_pool.test.id
}
`, name, dir, forceDestroy)
}

func TestAccStoragePoolResource(t *testing.T) {
	testAccAgent(t)
	name := acctest.RandomWithPrefix("tf-acc-pool")
	dir := t.TempDir() + "/" + name
	addr := "debvisor_storage_pool.test"
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			// Create and read.
			{
				Config: testAccStoragePoolConfig(name, dir, false),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact(name)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("path"), knownvalue.StringExact(dir)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("running")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("uuid"), knownvalue.StringRegexp(uuidRE)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("capacity_bytes"), knownvalue.Int64Func(positive)),
					statecheck.ExpectKnownValue("data."+addr, tfjsonpath.New("type"), knownvalue.StringExact("dir")),
					statecheck.ExpectKnownValue("data."+addr, tfjsonpath.New("autostart"), knownvalue.Bool(true)),
					statecheck.ExpectKnownValue("data."+addr, tfjsonpath.New("volume_count"), knownvalue.Int64Exact(0)),
				},
			},
			// Import by name.
			{
				ResourceName:      addr,
				ImportState:       true,
				ImportStateId:     name,
				ImportStateVerify: true,
				// Flags that only steer destroy are not on the node; import gives them their defaults.
				ImportStateVerifyIgnore: []string{"delete_storage"},
			},
			// A provider-side flag changes in place, without touching the pool.
			{
				Config: testAccStoragePoolConfig(name, dir, true),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("force_destroy"), knownvalue.Bool(true)),
				},
			},
			// A new path cannot be applied in place: the plan says replace.
			{
				Config: testAccStoragePoolConfig(name, dir+"-moved", true),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionReplace)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("path"), knownvalue.StringExact(dir+"-moved")),
				},
			},
		},
	})
}

func TestAccStoragePoolResource_invalid(t *testing.T) {
	testAccAgent(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      `resource "debvisor_storage_pool" "bad" { name = "-bad name" }`,
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Attribute name must be 1-64 of A-Z a-z 0-9`),
			},
			{
				Config:      "resource \"debvisor_storage_pool\" \"bad\" {\n  name = \"ok\"\n  type = \"ceph\"\n}",
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Attribute type value must be one of`),
			},
			{
				Config:      `data "debvisor_storage_pool" "missing" { name = "no-such-pool" }`,
				ExpectError: regexp.MustCompile(`(?s)no storage pool\s+"no-such-pool"`),
			},
		},
	})
}
