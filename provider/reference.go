package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
)

// checkReference accepts what the agent's registry client resolves: an OCI reference
// (registry/repository:tag or registry/repository@sha256:digest), parsed as go-containerregistry
// parses it. Checking it here turns an operation that would fail at apply into a plan-time error.
func checkReference(s string) error {
	switch {
	case strings.TrimSpace(s) == "":
		return errors.New("must not be empty")
	case strings.ContainsAny(s, " \t\r\n"):
		return errors.New("contains whitespace")
	}
	// name.ParseReference accepts a tag or a digest reference but only says "could not parse";
	// asking for the form the string has gives the reason (which characters, which part).
	var err error
	if strings.Contains(s, "@") {
		_, err = name.NewDigest(s)
	} else {
		_, err = name.NewTag(s)
	}
	return err
}

// sameReference reports whether a and b name the same image: equal, or equal once defaults are
// filled in (a reference without a tag means tag latest). References by tag and by digest are
// different references even when they resolve to the same image: the agent records the one it
// was asked for, and asking it for the other is a no-op upgrade that records it.
func sameReference(a, b string) bool {
	if a == b {
		return true
	}
	ra, err := name.ParseReference(a)
	if err != nil {
		return false
	}
	rb, err := name.ParseReference(b)
	if err != nil {
		return false
	}
	return ra.Name() == rb.Name()
}

// ociReferenceValidator is checkReference as a schema validator.
type ociReferenceValidator struct{}

func (ociReferenceValidator) Description(context.Context) string {
	return "must be an OCI reference: registry/repository:tag or registry/repository@sha256:digest"
}

func (v ociReferenceValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (ociReferenceValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := checkReference(req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid OCI reference",
			fmt.Sprintf("%s = %q is not an OCI reference (registry/repository:tag or registry/repository@sha256:digest): %v.",
				req.Path, req.ConfigValue.ValueString(), err))
	}
}
