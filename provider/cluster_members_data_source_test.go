package provider

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/debvisor/debvisor/testenv/agent"
)

// startClusterAgent runs an agent on loopback (no libvirt, gossip on a free
// loopback port, no mDNS) with the given enroll file.
func startClusterAgent(t *testing.T, name, enroll string, pki bool) *agent.Agent {
	t.Helper()
	dir := t.TempDir()
	ef := filepath.Join(dir, "enroll.yaml")
	if err := os.WriteFile(ef, []byte(enroll), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := agent.Start(context.Background(), agent.Options{
		Dir: dir, NodeName: name, NoLibvirt: true, NoPKI: !pki,
		ExtraConfig: "cluster:\n  enabled: true\n  bind: 127.0.0.1:0\n  mdns: false\n  enroll_file: " + ef + "\n",
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, a.Log())
		}
	})
	return a
}

// caCertHash is the kubeadm-style pin of a PEM CA certificate.
func caCertHash(t *testing.T, caPEM []byte) string {
	t.Helper()
	b, _ := pem.Decode(caPEM)
	if b == nil {
		t.Fatal("no CA PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TestAccClusterMembersDataSource: two real agents form a cluster (the
// first bootstraps with the CA the harness made, the second joins it by
// address with a token); the data source lists both from either endpoint,
// and a standalone agent gives a clear error.
func TestAccClusterMembersDataSource(t *testing.T) {
	const token = "accacc.0123456789abcdef"
	c1 := startClusterAgent(t, "acc-c1", "bootstrap: true\nname: acc\ntoken: "+token+"\n", true)
	hash := caCertHash(t, c1.Admin.CAPEM)
	c2 := startClusterAgent(t, "acc-c2", fmt.Sprintf("token: %s\nca_cert_hash: %s\njoin: [%q]\n", token, hash, c1.Endpoint), false)
	solo, err := agent.Start(context.Background(), agent.Options{Dir: t.TempDir(), NodeName: "acc-solo", NoLibvirt: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(solo.Stop)

	config := func(endpoint string, cr agent.Credentials) string {
		return fmt.Sprintf(`
provider "debvisor" {
  endpoint = %q
  ca_pem   = %q
  cert_pem = %q
  key_pem  = %q
}
data "debvisor_cluster_members" "this" {}
`, endpoint, cr.CAPEM, cr.CertPEM, cr.KeyPEM)
	}
	ds := "data.debvisor_cluster_members.this"
	members := func(self string) []statecheck.StateCheck {
		return []statecheck.StateCheck{
			statecheck.ExpectKnownValue(ds, tfjsonpath.New("cluster_id"), knownvalue.StringExact("acc")),
			statecheck.ExpectKnownValue(ds, tfjsonpath.New("id"), knownvalue.StringExact("acc")),
			statecheck.ExpectKnownValue(ds, tfjsonpath.New("ca_cert_hash"), knownvalue.StringExact(hash)),
			statecheck.ExpectKnownValue(ds, tfjsonpath.New("self"), knownvalue.StringExact(self)),
			statecheck.ExpectKnownValue(ds, tfjsonpath.New("names"), knownvalue.ListExact([]knownvalue.Check{
				knownvalue.StringExact("acc-c1"), knownvalue.StringExact("acc-c2"),
			})),
			statecheck.ExpectKnownValue(ds, tfjsonpath.New("members"), knownvalue.ListExact([]knownvalue.Check{
				knownvalue.ObjectPartial(map[string]knownvalue.Check{
					"name": knownvalue.StringExact("acc-c1"), "holds_ca": knownvalue.Bool(true), "self": knownvalue.Bool(self == "acc-c1"),
					"api_address": knownvalue.StringExact(c1.Endpoint), "node_id": knownvalue.StringRegexp(regexp.MustCompile(`^[0-9a-f]{32}$`)),
					"gossip_address":   knownvalue.StringRegexp(regexp.MustCompile(`^127\.0\.0\.1:\d+$`)),
					"cert_fingerprint": knownvalue.StringRegexp(regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)),
				}),
				knownvalue.ObjectPartial(map[string]knownvalue.Check{
					"name": knownvalue.StringExact("acc-c2"), "holds_ca": knownvalue.Bool(false), "self": knownvalue.Bool(self == "acc-c2"),
					"api_address": knownvalue.StringExact(c2.Endpoint), "agent_version": knownvalue.StringRegexp(regexp.MustCompile(`.+`)),
				}),
			})),
		}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: config(c1.Endpoint, c1.Admin), ConfigStateChecks: members("acc-c1")},
			// The member that joined answers the same, with itself as self.
			{Config: config(c2.Endpoint, c1.Admin), ConfigStateChecks: members("acc-c2")},
			{
				Config:      config(solo.Endpoint, solo.Admin),
				ExpectError: regexp.MustCompile(`(?s)not in a\s+cluster`),
			},
		},
	})
}
