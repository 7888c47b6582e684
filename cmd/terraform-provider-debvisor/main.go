// Command terraform-provider-debvisor is the DebVisor Terraform provider plugin.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/debvisor/debvisor/internal/buildinfo"
	"github.com/debvisor/debvisor/provider"
)

// Generate the provider docs (docs/index.md, docs/resources, docs/data-sources) from the schema and examples/.
//go:generate ../../scripts/gen-provider-docs

func main() {
	var debug bool
	flag.BoolVar(&debug, "debug", false, "run with support for debuggers like delve (prints TF_REATTACH_PROVIDERS)")
	flag.Parse()

	err := providerserver.Serve(context.Background(), provider.New(buildinfo.Version), providerserver.ServeOpts{
		Address: "registry.terraform.io/debvisor/debvisor",
		Debug:   debug,
	})
	if err != nil {
		log.Fatal(err)
	}
}
