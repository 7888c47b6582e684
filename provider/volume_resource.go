package provider

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/boolplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
)

var (
	_ resource.ResourceWithConfigure   = &VolumeResource{}
	_ resource.ResourceWithImportState = &VolumeResource{}
	_ resource.ResourceWithModifyPlan  = &VolumeResource{}
)

// maxVolumeBytes is the agent's limit (64 TiB).
const maxVolumeBytes = rules.MaxVolumeBytes

// NewVolumeResource is the constructor the provider lists.
func NewVolumeResource() resource.Resource { return &VolumeResource{} }

// VolumeResource manages a volume in a storage pool.
type VolumeResource struct{ p *providerData }

// VolumeResourceModel is the debvisor_volume resource.
type VolumeResourceModel struct {
	ID           types.String   `tfsdk:"id"`
	Pool         types.String   `tfsdk:"pool"`
	Name         types.String   `tfsdk:"name"`
	Format       types.String   `tfsdk:"format"`
	Capacity     types.Int64    `tfsdk:"capacity_bytes"`
	OCIReference types.String   `tfsdk:"oci_reference"`
	OCIInsecure  types.Bool     `tfsdk:"oci_insecure"`
	Path         types.String   `tfsdk:"path"`
	Allocation   types.Int64    `tfsdk:"allocation_bytes"`
	UsedBy       types.List     `tfsdk:"used_by"`
	Timeouts     timeouts.Value `tfsdk:"timeouts"`
}

func (r *VolumeResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_volume"
}

func (r *VolumeResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A volume in a storage pool: blank, or filled from an OCI artifact (a disk image pushed with " +
			"`debvisor-image push`). Growing `capacity_bytes` resizes the volume in place; shrinking is refused at plan " +
			"time, since it would destroy data. Import with `POOL/NAME`.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "`POOL/NAME`.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"pool": schema.StringAttribute{
				MarkdownDescription: "The pool the volume lives in. Checked at plan time when known: reference a pool managed in " +
					"the same configuration as `debvisor_storage_pool.NAME.id`, so the check waits for it to exist.",
				Required:      true,
				Validators:    nameValidators(),
				PlanModifiers: replace,
			},
			"name": schema.StringAttribute{
				MarkdownDescription: "The volume's name: 1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.",
				Required:            true,
				Validators:          nameValidators(),
				PlanModifiers:       replace,
			},
			"format": schema.StringAttribute{
				MarkdownDescription: "On-disk format: " + quoted(volumeFormat.words()) + ". Default `qcow2`. Logical, zfs and rbd pools hold raw volumes only.",
				Optional:            true,
				Computed:            true,
				Default:             stringdefault.StaticString("qcow2"),
				Validators:          []validator.String{stringvalidator.OneOf(volumeFormat.words()...)},
				PlanModifiers:       replace,
			},
			"capacity_bytes": schema.Int64Attribute{
				MarkdownDescription: "Virtual size in bytes (at most 64 TiB). Required for a blank volume; with `oci_reference` " +
					"the content's size is used when unset. Growing it resizes in place.",
				Optional: true,
				Computed: true,
				Validators: []validator.Int64{
					int64validator.Between(1, maxVolumeBytes),
				},
				PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown(), noShrink{}},
			},
			"oci_reference": schema.StringAttribute{
				MarkdownDescription: "Fill the volume with the single layer of this OCI artifact (`registry/repo:tag` or `…@sha256:…`).",
				Optional:            true,
				PlanModifiers:       replace,
			},
			"oci_insecure": schema.BoolAttribute{
				MarkdownDescription: "Use plain HTTP for the registry (test and lab registries). Default `false`.",
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(false),
				PlanModifiers:       []planmodifier.Bool{boolplanmodifier.RequiresReplace()},
			},
			"path": schema.StringAttribute{
				MarkdownDescription: "The path (or key) libvirt uses for the volume.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"allocation_bytes": schema.Int64Attribute{
				MarkdownDescription: "Bytes actually allocated in the pool.",
				Computed:            true,
			},
			"used_by": schema.ListAttribute{
				MarkdownDescription: "Names of the VMs whose disks use the volume.",
				ElementType:         types.StringType,
				Computed:            true,
			},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *VolumeResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.p = configuredData(req.ProviderData, &resp.Diagnostics)
}

// ModifyPlan checks, for a volume about to be created, that its pool exists when the name is
// known, so a typo fails the plan rather than the apply. A pool created in the same run is
// referenced through its id, which is unknown until then, and skips the check.
func (r *VolumeResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if r.p == nil || req.Plan.Raw.IsNull() || !req.State.Raw.IsNull() {
		return
	}
	var pool types.String
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root("pool"), &pool)...)
	if resp.Diagnostics.HasError() || pool.IsUnknown() || pool.IsNull() {
		return
	}
	checkPoolExists(ctx, r.p, pool.ValueString(), path.Root("pool"), &resp.Diagnostics)
	// Blank volumes need a size.
	var capacity types.Int64
	var oci types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("capacity_bytes"), &capacity)...)
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("oci_reference"), &oci)...)
	if capacity.IsNull() && oci.IsNull() {
		resp.Diagnostics.AddAttributeError(path.Root("capacity_bytes"), "Missing volume size",
			"A blank volume needs capacity_bytes; only a volume filled from oci_reference can take its content's size.")
	}
}

func (r *VolumeResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data VolumeResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := data.Timeouts.Create(ctx, r.p.operationTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	vol := &v1.Volume{
		Pool:          data.Pool.ValueString(),
		Name:          data.Name.ValueString(),
		Format:        volumeFormat.value(data.Format.ValueString()),
		CapacityBytes: data.Capacity.ValueInt64(), // 0 when unknown: the OCI content's size
	}
	requestID := uuid.NewString()
	out, err := r.p.run(ctx, timeout, "create volume "+vol.Pool+"/"+vol.Name, func(ctx context.Context) (*v1.Operation, error) {
		return r.p.client.Storage.CreateVolume(ctx, &v1.CreateVolumeRequest{
			Volume: vol, OciReference: data.OCIReference.ValueString(), OciInsecure: data.OCIInsecure.ValueBool(), RequestId: requestID,
		})
	}, func(op *v1.Operation) {
		// The agent has the volume from here on: record it so a later failure taints it instead
		// of losing it, with the operation a refresh waits for.
		resp.Diagnostics.Append(createRecord{RequestID: requestID, Operation: op.GetId()}.save(ctx, resp.Private)...)
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), vol.Pool+"/"+vol.Name)...)
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("pool"), vol.Pool)...)
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), vol.Name)...)
	})
	if err != nil {
		if out.refused() {
			// Another object of that name exists: not this resource's, never in this state.
			resp.State.RemoveResource(ctx)
		} else if out.accepted {
			if got, rerr := r.get(ctx, vol.Pool, vol.Name); rerr == nil {
				data.fromAPI(got)
				resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
			}
		}
		resp.Diagnostics.AddError("Create volume", err.Error())
		return
	}
	got, err := r.get(ctx, vol.Pool, vol.Name)
	if err != nil {
		resp.Diagnostics.AddError("Read volume after create", describe(r.p.endpoint, err))
		return
	}
	data.fromAPI(got)
	resp.Diagnostics.Append(clearCreateRecord(ctx, resp.Private)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

func (r *VolumeResource) get(ctx context.Context, pool, name string) (v *v1.Volume, err error) {
	err = r.p.read(ctx, "read volume "+pool+"/"+name, func(ctx context.Context) (err error) {
		v, err = r.p.client.Storage.GetVolume(ctx, &v1.GetVolumeRequest{Pool: pool, Name: name})
		return err
	})
	return v, err
}

func (r *VolumeResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data VolumeResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	rec, diags := loadCreateRecord(ctx, req.Private)
	resp.Diagnostics.Append(diags...)
	var got *v1.Volume
	var err error
	if rec.Operation != "" {
		// A create not seen through: wait for it on the node, then read the volume itself (a
		// listing may predate the create's end).
		r.p.settle(ctx, rec)
		got, err = r.get(ctx, data.Pool.ValueString(), data.Name.ValueString())
	} else {
		got, err = r.p.cachedVolume(ctx, data.Pool.ValueString(), data.Name.ValueString())
	}
	if isNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Read volume", describe(r.p.endpoint, err))
		return
	}
	data.fromAPI(got)
	if rec.Operation != "" {
		resp.Diagnostics.Append(clearCreateRecord(ctx, resp.Private)...)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

// Update grows the volume; every other attribute requires replacement.
func (r *VolumeResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data, state VolumeResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &data)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := data.Timeouts.Update(ctx, r.p.operationTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	pool, name := data.Pool.ValueString(), data.Name.ValueString()
	if !data.Capacity.IsUnknown() && data.Capacity.ValueInt64() != state.Capacity.ValueInt64() {
		_, err := r.p.run(ctx, timeout, "resize volume "+pool+"/"+name, func(ctx context.Context) (*v1.Operation, error) {
			return r.p.client.Storage.ResizeVolume(ctx, &v1.ResizeVolumeRequest{Pool: pool, Name: name, CapacityBytes: data.Capacity.ValueInt64()})
		}, nil)
		if err != nil {
			resp.Diagnostics.AddError("Resize volume", err.Error())
			return
		}
	}
	got, err := r.get(ctx, pool, name)
	if err != nil {
		resp.Diagnostics.AddError("Read volume", describe(r.p.endpoint, err))
		return
	}
	data.fromAPI(got)
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

func (r *VolumeResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data VolumeResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := data.Timeouts.Delete(ctx, r.p.operationTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	pool, name := data.Pool.ValueString(), data.Name.ValueString()
	_, err := r.p.run(ctx, timeout, "delete volume "+pool+"/"+name, func(ctx context.Context) (*v1.Operation, error) {
		return r.p.client.Storage.DeleteVolume(ctx, &v1.DeleteVolumeRequest{Pool: pool, Name: name})
	}, nil)
	if err != nil && !isNotFound(err) {
		resp.Diagnostics.AddError("Delete volume", err.Error())
	}
}

// ImportState takes POOL/NAME.
func (r *VolumeResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	pool, name, ok := strings.Cut(req.ID, "/")
	if !ok || rules.CheckName(pool) != nil || rules.CheckName(name) != nil {
		resp.Diagnostics.AddError("Invalid import ID", fmt.Sprintf("%q is not POOL/NAME", req.ID))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("pool"), pool)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), name)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("oci_insecure"), false)...)
}

func (m *VolumeResourceModel) fromAPI(v *v1.Volume) {
	m.ID = types.StringValue(v.GetPool() + "/" + v.GetName())
	m.Pool = types.StringValue(v.GetPool())
	m.Name = types.StringValue(v.GetName())
	m.Format = types.StringValue(volumeFormat.word(v.GetFormat()))
	m.Capacity = types.Int64Value(v.GetCapacityBytes())
	m.Path = types.StringValue(v.GetPath())
	m.Allocation = types.Int64Value(v.GetAllocationBytes())
	m.UsedBy = stringList(v.GetUsedBy(), types.ListUnknown(types.StringType))
	if m.UsedBy.IsNull() {
		m.UsedBy = types.ListValueMust(types.StringType, nil)
	}
	if m.OCIInsecure.IsNull() || m.OCIInsecure.IsUnknown() {
		m.OCIInsecure = types.BoolValue(false)
	}
}

// noShrink refuses at plan time a capacity smaller than the volume's: the agent cannot shrink a
// volume, and replacing it to get a smaller one would silently destroy its data.
type noShrink struct{}

func (noShrink) Description(context.Context) string {
	return "refuses to shrink an existing volume"
}
func (n noShrink) MarkdownDescription(ctx context.Context) string { return n.Description(ctx) }

func (noShrink) PlanModifyInt64(_ context.Context, req planmodifier.Int64Request, resp *planmodifier.Int64Response) {
	if req.StateValue.IsNull() || req.PlanValue.IsUnknown() || req.PlanValue.IsNull() {
		return
	}
	if req.PlanValue.ValueInt64() < req.StateValue.ValueInt64() {
		resp.Diagnostics.AddAttributeError(req.Path, "Volume cannot shrink",
			fmt.Sprintf("capacity_bytes %d is smaller than the volume's %d bytes; volumes only grow. To start over with a "+
				"smaller volume, taint or replace it explicitly (terraform apply -replace=ADDRESS).",
				req.PlanValue.ValueInt64(), req.StateValue.ValueInt64()))
	}
}

// checkPoolExists adds an error on attr when the node has no pool named name.
func checkPoolExists(ctx context.Context, p *providerData, name string, attr path.Path, diags interface {
	AddAttributeError(path.Path, string, string)
	AddAttributeWarning(path.Path, string, string)
}) {
	cctx, cancel := p.call(ctx)
	defer cancel()
	_, err := p.client.Storage.GetPool(cctx, &v1.GetPoolRequest{Name: name})
	switch {
	case isNotFound(err):
		diags.AddAttributeError(attr, "Unknown storage pool",
			fmt.Sprintf("The node at %s has no storage pool %q. If this configuration creates it, reference it as "+
				"debvisor_storage_pool.NAME.id so the check waits until it exists.", p.endpoint, name))
	case err != nil:
		diags.AddAttributeWarning(attr, "Could not check the storage pool", describe(p.endpoint, err))
	}
}
