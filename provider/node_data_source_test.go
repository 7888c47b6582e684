package provider

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

func TestAccNodeDataSource(t *testing.T) {
	a := testAccAgent(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: `data "debvisor_node" "this" {}`,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("data.debvisor_node.this", tfjsonpath.New("name"), knownvalue.StringExact(a.NodeName)),
					statecheck.ExpectKnownValue("data.debvisor_node.this", tfjsonpath.New("id"), knownvalue.StringExact(a.NodeName)),
					statecheck.ExpectKnownValue("data.debvisor_node.this", tfjsonpath.New("agent_version"), knownvalue.StringRegexp(regexp.MustCompile(`.+`))),
					statecheck.ExpectKnownValue("data.debvisor_node.this", tfjsonpath.New("architecture"), knownvalue.StringRegexp(regexp.MustCompile(`^(amd64|arm64|x86_64|aarch64)$`))),
					statecheck.ExpectKnownValue("data.debvisor_node.this", tfjsonpath.New("boot_time"), knownvalue.StringRegexp(regexp.MustCompile(`^\d{4}-\d\d-\d\dT`))),
					statecheck.ExpectKnownValue("data.debvisor_node.this", tfjsonpath.New("health"), knownvalue.StringRegexp(regexp.MustCompile(`^(healthy|degraded|failing|unknown)$`))),
				},
			},
		},
	})
}

// TestAccProviderConfig covers the provider block itself: inline PEM instead of the DEBVISOR_*
// files, and the diagnostics for an unreachable agent and a refused certificate.
func TestAccProviderConfig(t *testing.T) {
	a := testAccAgent(t)
	inline := func(endpoint string, ca, cert, key []byte) string {
		return fmt.Sprintf(`
provider "debvisor" {
  endpoint = %q
  ca_pem   = %q
  cert_pem = %q
  key_pem  = %q
  request_timeout = "5s"
}
data "debvisor_node" "this" {}
`, endpoint, ca, cert, key)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				// Nothing listens on port 1.
				Config:      inline("127.0.0.1:1", a.Admin.CAPEM, a.Admin.CertPEM, a.Admin.KeyPEM),
				ExpectError: regexp.MustCompile(`(?s)Cannot use the DebVisor agent at 127\.0\.0\.1:1.*unreachable`),
			},
			{
				// A client certificate from another cluster's CA.
				Config:      inline(a.Endpoint, a.Foreign.CAPEM, a.Foreign.CertPEM, a.Foreign.KeyPEM),
				ExpectError: regexp.MustCompile(`(?s)refused the client\s+certificate`),
			},
			{
				// Trusting the wrong CA: the agent's certificate is not accepted.
				Config:      inline(a.Endpoint, a.ForeignCAPEM, a.Admin.CertPEM, a.Admin.KeyPEM),
				ExpectError: regexp.MustCompile(`(?s)agent's certificate was not\s+accepted`),
			},
			{
				Config:      `provider "debvisor" { request_timeout = "soon" }` + "\n" + `data "debvisor_node" "this" {}`,
				ExpectError: regexp.MustCompile(`(?s)request_timeout.*not a positive\s+duration`),
			},
			{
				// A reader certificate given inline is enough to read the node.
				Config: inline(a.Endpoint, a.Reader.CAPEM, a.Reader.CertPEM, a.Reader.KeyPEM),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("data.debvisor_node.this", tfjsonpath.New("name"), knownvalue.StringExact(a.NodeName)),
				},
			},
		},
	})
}
