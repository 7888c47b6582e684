package provider

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/acctest"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// testAccPoolConfig is a dir pool in a fresh temporary directory for resources that need one.
func testAccPoolConfig(t *testing.T, name string) string {
	return fmt.Sprintf(`
resource "debvisor_storage_pool" "pool" {
  name           = %[1]q
  path           = %[2]q
  force_destroy  = true
  delete_storage = true
}
`, name, poolParent(t)+"/"+name)
}

// poolParent is a temporary directory QEMU (which runs as its own user) can traverse; t.TempDir
// makes 0700 directories.
func poolParent(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func testAccVolumeConfig(pool string, capacity int64) string {
	return fmt.Sprintf(`
resource "debvisor_volume" "test" {
  pool           = debvisor_storage_pool.pool.id
  name           = "disk0"
  capacity_bytes = %d
}
`, capacity)
}

func TestAccVolumeResource(t *testing.T) {
	testAccAgent(t)
	pool := acctest.RandomWithPrefix("tf-acc-vol")
	poolCfg := testAccPoolConfig(t, pool)
	addr := "debvisor_volume.test"
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: poolCfg + testAccVolumeConfig(pool, 64<<20),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact(pool+"/disk0")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("format"), knownvalue.StringExact("qcow2")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("capacity_bytes"), knownvalue.Int64Exact(64<<20)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("path"), knownvalue.StringRegexp(regexp.MustCompile(`/disk0$`))),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("used_by"), knownvalue.ListSizeExact(0)),
				},
			},
			{
				ResourceName:      addr,
				ImportState:       true,
				ImportStateId:     pool + "/disk0",
				ImportStateVerify: true,
			},
			// Growing is an in-place resize.
			{
				Config: poolCfg + testAccVolumeConfig(pool, 128<<20),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("capacity_bytes"), knownvalue.Int64Exact(128<<20)),
				},
			},
			// Shrinking is refused at plan time.
			{
				Config:      poolCfg + testAccVolumeConfig(pool, 32<<20),
				ExpectError: regexp.MustCompile(`(?s)Volume cannot shrink.*capacity_bytes`),
			},
		},
	})
}

func TestAccVolumeResource_invalid(t *testing.T) {
	testAccAgent(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: `
resource "debvisor_volume" "bad" {
  pool           = "no-such-pool"
  name           = "v"
  capacity_bytes = 1048576
}`,
				ExpectError: regexp.MustCompile(`(?s)Unknown storage pool.*pool.*no storage pool\s+"no-such-pool"`),
			},
			{
				Config: `
resource "debvisor_volume" "bad" {
  pool           = "default"
  name           = "v"
  capacity_bytes = -5
}`,
				ExpectError: regexp.MustCompile(`(?s)Attribute capacity_bytes value must be between 1 and`),
			},
			{
				Config: `
resource "debvisor_volume" "bad" {
  pool           = "default"
  name           = "bad/name"
  capacity_bytes = 1048576
}`,
				ExpectError: regexp.MustCompile(`(?s)Attribute name must be 1-64 of`),
			},
		},
	})
}
