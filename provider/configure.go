package provider

import (
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/diag"
)

// configuredData unpacks what the provider's Configure handed over. nil data (the provider is not
// configured yet, e.g. during validation) is not an error: the framework calls Configure again.
func configuredData(data any, diags *diag.Diagnostics) *providerData {
	if data == nil {
		return nil
	}
	pd, ok := data.(*providerData)
	if !ok {
		diags.AddError("Unexpected provider data", fmt.Sprintf("expected *providerData, got %T; please report this as a bug", data))
		return nil
	}
	return pd
}

// configured reports whether the provider handed over a connection, adding an error when not
// (the provider block had values unknown until apply, e.g. an endpoint from another resource).
func configured(p *providerData, diags *diag.Diagnostics) bool {
	if p == nil {
		diags.AddError("DebVisor provider not configured",
			"The provider has no connection to an agent yet: its endpoint or TLS material is not known at this point.")
		return false
	}
	return true
}
