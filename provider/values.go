package provider

import (
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// optString maps the API's "" to null when the attribute was null before (not configured), so
// an optional attribute that is left out plans no change after a read.
func optString(v string, prev types.String) types.String {
	if v == "" && (prev.IsNull() || prev.IsUnknown()) {
		return types.StringNull()
	}
	return types.StringValue(v)
}

// stringList does the same for optional lists: empty stays null when it was null.
func stringList(v []string, prev types.List) types.List {
	if len(v) == 0 && (prev.IsNull() || prev.IsUnknown()) {
		return types.ListNull(types.StringType)
	}
	elems := make([]attr.Value, len(v))
	for i, s := range v {
		elems[i] = types.StringValue(s)
	}
	return types.ListValueMust(types.StringType, elems)
}
