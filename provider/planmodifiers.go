package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
)

var objectAsOptions = basetypes.ObjectAsOptions{UnhandledNullAsEmpty: true, UnhandledUnknownAsEmpty: true}

// defaultFromAttr plans an unset Optional+Computed integer as the planned value of another
// top-level attribute (max_vcpus follows vcpus), which is what the agent does with 0. Without
// it, "known after apply" would show on every change and UseStateForUnknown would plan a stale value.
type defaultFromAttr struct{ attr string }

func (d defaultFromAttr) Description(context.Context) string {
	return "defaults to the value of " + d.attr
}
func (d defaultFromAttr) MarkdownDescription(ctx context.Context) string { return d.Description(ctx) }

func (d defaultFromAttr) PlanModifyInt64(ctx context.Context, req planmodifier.Int64Request, resp *planmodifier.Int64Response) {
	if !req.ConfigValue.IsNull() {
		return
	}
	var other types.Int64
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root(d.attr), &other)...)
	resp.PlanValue = other
}

// diskTargetFromState plans a disk's guest device name as the one the same volume had in state:
// the agent keeps targets per volume across updates, so adding or removing another disk does
// not show as a change here. A newly attached volume gets "known after apply".
type diskTargetFromState struct{}

func (diskTargetFromState) Description(context.Context) string {
	return "keeps the device name of an attached volume"
}
func (d diskTargetFromState) MarkdownDescription(ctx context.Context) string {
	return d.Description(ctx)
}

func (diskTargetFromState) PlanModifyString(ctx context.Context, req planmodifier.StringRequest, resp *planmodifier.StringResponse) {
	if req.State.Raw.IsNull() || !req.PlanValue.IsUnknown() {
		return
	}
	parent := req.Path.ParentPath()
	var pool, volume types.String
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, parent.AtName("pool"), &pool)...)
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, parent.AtName("volume"), &volume)...)
	if resp.Diagnostics.HasError() || pool.IsUnknown() || volume.IsUnknown() {
		return
	}
	var disks []diskModel
	resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("disks"), &disks)...)
	for _, d := range disks {
		if d.Pool.Equal(pool) && d.Volume.Equal(volume) && !d.Target.IsNull() && d.Target.ValueString() != "" {
			resp.PlanValue = d.Target
			return
		}
	}
}
