package provider

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/compare"
	"github.com/hashicorp/terraform-plugin-testing/helper/acctest"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// testAccVMConfig is a pool with two volumes and a VM using the first (and the second when
// twoDisks), so that adding a disk can be shown to be an update.
func testAccVMConfig(poolCfg, name string, memory int, twoDisks bool, power string) string {
	disks := `{ pool = debvisor_volume.d0.pool, volume = debvisor_volume.d0.name, boot_order = 1 }`
	if twoDisks {
		disks += `,
    { pool = debvisor_volume.d1.pool, volume = debvisor_volume.d1.name, bus = "sata" }`
	}
	return poolCfg + fmt.Sprintf(`
resource "debvisor_volume" "d0" {
  pool           = debvisor_storage_pool.pool.id
  name           = "%[1]s-root"
  capacity_bytes = 16777216
}

resource "debvisor_volume" "d1" {
  pool           = debvisor_storage_pool.pool.id
  name           = "%[1]s-data"
  capacity_bytes = 8388608
}

resource "debvisor_vm" "test" {
  name           = %[1]q
  vcpus          = 1
  max_vcpus      = 2
  memory_mib     = %[2]d
  max_memory_mib = 128
  power_state    = %[4]q

  disks = [
    %[3]s
  ]
  nics = [{}]

  cloud_init = {
    user_data = "#cloud-config\nhostname: %[1]s\n"
  }
}
`, name, memory, disks, power)
}

func TestAccVMResource(t *testing.T) {
	testAccAgent(t)
	name := acctest.RandomWithPrefix("tf-acc-vm")
	poolCfg := testAccPoolConfig(t, name+"-pool")
	addr := "debvisor_vm.test"
	sameUUID := statecheck.CompareValue(compare.ValuesSame())
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: testAccVMConfig(poolCfg, name, 64, false, "running"),
				ConfigStateChecks: []statecheck.StateCheck{
					sameUUID.AddStateValue(addr, tfjsonpath.New("uuid")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact(name)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("uuid"), knownvalue.StringRegexp(uuidRE)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("running")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("max_memory_mib"), knownvalue.Int64Exact(128)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("disks"), knownvalue.ListSizeExact(1)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("disks").AtSliceIndex(0).AtMapKey("target"), knownvalue.StringExact("vda")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("nics").AtSliceIndex(0).AtMapKey("mac"), knownvalue.StringRegexp(regexp.MustCompile(`^52:54:00(:[0-9a-f]{2}){3}$`))),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("nics").AtSliceIndex(0).AtMapKey("type"), knownvalue.StringExact("user")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("hypervisor"), knownvalue.StringRegexp(regexp.MustCompile(`^(kvm|qemu)$`))),
				},
			},
			{
				ResourceName:      addr,
				ImportState:       true,
				ImportStateId:     name,
				ImportStateVerify: true,
			},
			// Adding a disk and changing memory within max_memory_mib: an update, not a replacement.
			{
				Config: testAccVMConfig(poolCfg, name, 96, true, "running"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					sameUUID.AddStateValue(addr, tfjsonpath.New("uuid")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("memory_mib"), knownvalue.Int64Exact(96)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("disks"), knownvalue.ListSizeExact(2)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("disks").AtSliceIndex(0).AtMapKey("target"), knownvalue.StringExact("vda")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("disks").AtSliceIndex(1).AtMapKey("bus"), knownvalue.StringExact("sata")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("disks").AtSliceIndex(1).AtMapKey("target"), knownvalue.StringRegexp(regexp.MustCompile(`^sd[a-z]$`))),
				},
			},
			// Power off in place.
			{
				Config: testAccVMConfig(poolCfg, name, 96, true, "stopped"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					sameUUID.AddStateValue(addr, tfjsonpath.New("uuid")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("stopped")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("power_state"), knownvalue.StringExact("stopped")),
				},
			},
		},
	})
}

// TestAccVMResource_drift changes and deletes the VM behind the provider's back, through the
// agent's API as another client would, and checks that the next plan shows it and apply repairs it.
func TestAccVMResource_drift(t *testing.T) {
	a := testAccAgent(t)
	name := acctest.RandomWithPrefix("tf-acc-drift")
	poolCfg := testAccPoolConfig(t, name+"-pool")
	cfg := testAccVMConfig(poolCfg, name, 64, false, "running")
	addr := "debvisor_vm.test"
	api := func() *client.Client {
		c, err := client.New(client.Config{Endpoint: a.Endpoint, CAPEM: a.Admin.CAPEM, CertPEM: a.Admin.CertPEM, KeyPEM: a.Admin.KeyPEM})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	behindOurBack := func(what string, f func(ctx context.Context, c *client.Client) (*v1.Operation, error)) func() {
		return func() {
			c := api()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			op, err := f(ctx, c)
			if err == nil {
				_, err = c.Wait(ctx, op, nil)
			}
			if err != nil {
				t.Fatalf("%s behind the provider's back: %v", what, err)
			}
		}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: cfg},
			// Memory changed and the guest stopped by someone else: the plan is an update back.
			{
				PreConfig: behindOurBack("change memory and stop", func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
					vm, err := c.VMs.GetVM(ctx, &v1.GetVMRequest{Name: name})
					if err != nil {
						return nil, err
					}
					spec := vm.GetSpec()
					spec.MemoryMib = 80
					spec.PowerState = v1.PowerState_POWER_STATE_STOPPED
					return c.VMs.UpdateVM(ctx, &v1.UpdateVMRequest{Name: name, Spec: spec})
				}),
				Config: cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
						plancheck.ExpectKnownValue(addr, tfjsonpath.New("memory_mib"), knownvalue.Int64Exact(64)),
						plancheck.ExpectKnownValue(addr, tfjsonpath.New("power_state"), knownvalue.StringExact("running")),
					},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("memory_mib"), knownvalue.Int64Exact(64)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("running")),
				},
			},
			// Deleted by someone else: the plan creates it again.
			{
				PreConfig: behindOurBack("delete", func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
					return c.VMs.DeleteVM(ctx, &v1.DeleteVMRequest{Name: name})
				}),
				Config: cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionCreate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("running")),
				},
			},
		},
	})
}

func TestAccVMResource_invalid(t *testing.T) {
	testAccAgent(t)
	vm := func(body string) string {
		return "resource \"debvisor_vm\" \"bad\" {\n" + body + "\n}\n"
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      vm("name = \"ok\"\nvcpus = 1\nmemory_mib = -512"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Attribute memory_mib value must be between 16 and\s+4194304, got: -512`),
			},
			{
				Config:      vm("name = \"not ok!\"\nvcpus = 1\nmemory_mib = 64"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Attribute name must be 1-64 of`),
			},
			{
				Config:      vm("name = \"ok\"\nvcpus = 4\nmax_vcpus = 2\nmemory_mib = 64"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)max_vcpus.*at\s+least`),
			},
			{
				Config:      vm("name = \"ok\"\nvcpus = 1\nmemory_mib = 64\npower_state = \"asleep\""),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Attribute power_state value must be one of`),
			},
		},
	})
}

// TestAccVMResource_waitForIP: a guest with no OS never reports an address, so wait_for_ip runs
// into the create timeout and says so; the VM stays in state (tainted) and is destroyed after.
// (A guest that does report one needs an OS image with qemu-guest-agent; see docs/provider.md.)
func TestAccVMResource_waitForIP(t *testing.T) {
	testAccAgent(t)
	name := acctest.RandomWithPrefix("tf-acc-ip")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: fmt.Sprintf(`
resource "debvisor_vm" "test" {
  name        = %q
  vcpus       = 1
  memory_mib  = 32
  nics        = [{}]
  wait_for_ip = true
  timeouts {
    create = "10s"
  }
}`, name),
				ExpectError: regexp.MustCompile(`(?s)Wait for the VM's IP address.*` + regexp.QuoteMeta(name) + `\s+reported\s+no\s+IP\s+address`),
			},
		},
	})
}
