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
