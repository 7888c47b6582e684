package provider

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
)

var (
	_ resource.ResourceWithConfigure   = &StoragePoolResource{}
	_ resource.ResourceWithImportState = &StoragePoolResource{}
)

// NewStoragePoolResource is the constructor the provider lists.
func NewStoragePoolResource() resource.Resource { return &StoragePoolResource{} }

// StoragePoolResource manages a libvirt storage pool on the node.
type StoragePoolResource struct{ p *providerData }

// StoragePoolResourceModel is the debvisor_storage_pool resource.
type StoragePoolResourceModel struct {
	ID             types.String   `tfsdk:"id"`
	Name           types.String   `tfsdk:"name"`
	Type           types.String   `tfsdk:"type"`
	Path           types.String   `tfsdk:"path"`
	SourceDevices  types.List     `tfsdk:"source_devices"`
	SourceHosts    types.List     `tfsdk:"source_hosts"`
	SourcePath     types.String   `tfsdk:"source_path"`
	SourceName     types.String   `tfsdk:"source_name"`
	SourceFormat   types.String   `tfsdk:"source_format"`
	AuthUsername   types.String   `tfsdk:"auth_username"`
	AuthSecretUUID types.String   `tfsdk:"auth_secret_uuid"`
	Build          types.Bool     `tfsdk:"build"`
	FormatSource   types.Bool     `tfsdk:"format_source"`
	ForceDestroy   types.Bool     `tfsdk:"force_destroy"`
	DeleteStorage  types.Bool     `tfsdk:"delete_storage"`
	UUID           types.String   `tfsdk:"uuid"`
	State          types.String   `tfsdk:"state"`
	Capacity       types.Int64    `tfsdk:"capacity_bytes"`
	Allocation     types.Int64    `tfsdk:"allocation_bytes"`
	Available      types.Int64    `tfsdk:"available_bytes"`
	Timeouts       timeouts.Value `tfsdk:"timeouts"`
}

func (r *StoragePoolResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_storage_pool"
}

func (r *StoragePoolResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	// Attributes the node derives when they are not set (path for logical pools, source_name,
	// source_format): keep the state's value instead of planning "known after apply" each time.
	derived := []planmodifier.String{stringplanmodifier.RequiresReplaceIfConfigured(), stringplanmodifier.UseStateForUnknown()}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A libvirt storage pool on the node: a directory, a mounted filesystem, an LVM volume group, " +
			"an NFS export, a ZFS pool or a Ceph RBD pool. The agent has no way to change a pool in place, so changing " +
			"its definition replaces it; `build`, `format_source`, `force_destroy` and `delete_storage` only steer " +
			"what the provider asks for and change without touching the pool. Pools shared with other configurations " +
			"are better read with the `debvisor_storage_pool` data source.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The pool's name, known once the pool exists. Reference it (rather than `name`) from " +
					"volumes created in the same configuration: the plan-time check that a pool exists then waits for it.",
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				MarkdownDescription: "The pool's name: 1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.",
				Required:            true,
				Validators:          nameValidators(),
				PlanModifiers:       replace,
			},
			"type": schema.StringAttribute{
				MarkdownDescription: "Pool type: " + quoted(poolTypes.words()) + ". Default `dir`.",
				Optional:            true,
				Computed:            true,
				Default:             stringdefault.StaticString("dir"),
				Validators:          []validator.String{stringvalidator.OneOf(poolTypes.words()...)},
				PlanModifiers:       replace,
			},
			"path": schema.StringAttribute{
				MarkdownDescription: "Target path: the directory (`dir`), the mount point (`fs`, `netfs`) or `/dev/VG` " +
					"(`logical`, derived when unset). Unused for `zfs` and `rbd`.",
				Optional:      true,
				Computed:      true,
				PlanModifiers: derived,
			},
			"source_devices": schema.ListAttribute{
				MarkdownDescription: "Block devices: `fs` (exactly one), `logical` (physical volumes), `zfs` (vdevs).",
				ElementType:         types.StringType,
				Optional:            true,
				PlanModifiers:       []planmodifier.List{listplanmodifier.RequiresReplace()},
			},
			"source_hosts": schema.ListAttribute{
				MarkdownDescription: "Hosts: `netfs` (the NFS server), `rbd` (Ceph monitors, `host` or `host:port`).",
				ElementType:         types.StringType,
				Optional:            true,
				PlanModifiers:       []planmodifier.List{listplanmodifier.RequiresReplace()},
			},
			"source_path": schema.StringAttribute{
				MarkdownDescription: "`netfs`: the exported directory.",
				Optional:            true,
				PlanModifiers:       replace,
			},
			"source_name": schema.StringAttribute{
				MarkdownDescription: "`logical`: volume group; `zfs`: zpool; `rbd`: Ceph pool. Defaults to `name`.",
				Optional:            true,
				Computed:            true,
				PlanModifiers:       derived,
			},
			"source_format": schema.StringAttribute{
				MarkdownDescription: "`fs`: filesystem type (default auto); `netfs`: `nfs` (default) or `cifs`.",
				Optional:            true,
				Computed:            true,
				PlanModifiers:       derived,
			},
			"auth_username": schema.StringAttribute{
				MarkdownDescription: "`rbd`: the cephx user.",
				Optional:            true,
				PlanModifiers:       replace,
			},
			"auth_secret_uuid": schema.StringAttribute{
				MarkdownDescription: "`rbd`: UUID of the libvirt secret holding the cephx key.",
				Optional:            true,
				PlanModifiers:       replace,
			},
			"build": schema.BoolAttribute{
				MarkdownDescription: "Run libvirt's pool build when creating (mkdir for `dir`, vgcreate for `logical`). Default `true`.",
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(true),
			},
			"format_source": schema.BoolAttribute{
				MarkdownDescription: "With `build`: format the source devices (`fs`: mkfs; `logical`: pvcreate). Destroys their data. Default `false`.",
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(false),
			},
			"force_destroy": schema.BoolAttribute{
				MarkdownDescription: "On destroy, delete the pool's volumes first instead of failing when it still holds some. Default `false`.",
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(false),
			},
			"delete_storage": schema.BoolAttribute{
				MarkdownDescription: "On destroy, also delete the underlying storage (rmdir for `dir`, vgremove for `logical`). Default `false`.",
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(false),
			},
			"uuid": schema.StringAttribute{
				MarkdownDescription: "libvirt's UUID of the pool.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"state": schema.StringAttribute{
				MarkdownDescription: "Pool state reported by the node: " + quoted(poolStates.words()) + ".",
				Computed:            true,
			},
			"capacity_bytes": schema.Int64Attribute{
				MarkdownDescription: "Size of the pool's storage.",
				Computed:            true,
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
			},
			"allocation_bytes": schema.Int64Attribute{MarkdownDescription: "Bytes allocated.", Computed: true},
			"available_bytes":  schema.Int64Attribute{MarkdownDescription: "Bytes free.", Computed: true},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Delete: true}),
		},
	}
}

func (r *StoragePoolResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.p = configuredData(req.ProviderData, &resp.Diagnostics)
}

func (r *StoragePoolResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data StoragePoolResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := data.Timeouts.Create(ctx, r.p.operationTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	pool := &v1.Pool{
		Name:           data.Name.ValueString(),
		Type:           poolTypes.value(data.Type.ValueString()),
		Path:           data.Path.ValueString(),
		SourcePath:     data.SourcePath.ValueString(),
		SourceName:     data.SourceName.ValueString(),
		SourceFormat:   data.SourceFormat.ValueString(),
		AuthUsername:   data.AuthUsername.ValueString(),
		AuthSecretUuid: data.AuthSecretUUID.ValueString(),
	}
	resp.Diagnostics.Append(data.SourceDevices.ElementsAs(ctx, &pool.SourceDevices, true)...)
	resp.Diagnostics.Append(data.SourceHosts.ElementsAs(ctx, &pool.SourceHosts, true)...)
	if resp.Diagnostics.HasError() {
		return
	}
	requestID := uuid.NewString()
	out, err := r.p.run(ctx, timeout, "create pool "+pool.Name, func(ctx context.Context) (*v1.Operation, error) {
		return r.p.client.Storage.CreatePool(ctx, &v1.CreatePoolRequest{
			Pool: pool, Build: data.Build.ValueBool(), FormatSource: data.FormatSource.ValueBool(), RequestId: requestID,
		})
	}, func(op *v1.Operation) {
		// The agent has the pool from here on: record it (with the flags its delete needs) so a
		// later failure taints it instead of losing it, with the operation a refresh waits for.
		resp.Diagnostics.Append(createRecord{RequestID: requestID, Operation: op.GetId()}.save(ctx, resp.Private)...)
		for attr, v := range map[string]attr.Value{
			"id": types.StringValue(pool.Name), "name": data.Name, "build": data.Build, "format_source": data.FormatSource,
			"force_destroy": data.ForceDestroy, "delete_storage": data.DeleteStorage,
		} {
			resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root(attr), v)...)
		}
	})
	if err != nil {
		if out.refused() {
			// Another object of that name exists: not this resource's, never in this state.
			resp.State.RemoveResource(ctx)
		} else if out.accepted {
			if got, rerr := r.get(ctx, pool.Name); rerr == nil {
				data.fromAPI(got)
				resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
			}
		}
		resp.Diagnostics.AddError("Create storage pool", err.Error())
		return
	}
	got, err := r.get(ctx, pool.Name)
	if err != nil {
		resp.Diagnostics.AddError("Read storage pool after create", describe(r.p.endpoint, err))
		return
	}
	data.fromAPI(got)
	resp.Diagnostics.Append(clearCreateRecord(ctx, resp.Private)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

func (r *StoragePoolResource) get(ctx context.Context, name string) (p *v1.Pool, err error) {
	err = r.p.read(ctx, "read pool "+name, func(ctx context.Context) (err error) {
		p, err = r.p.client.Storage.GetPool(ctx, &v1.GetPoolRequest{Name: name})
		return err
	})
	return p, err
}

func (r *StoragePoolResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data StoragePoolResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	rec, diags := loadCreateRecord(ctx, req.Private)
	resp.Diagnostics.Append(diags...)
	r.p.settle(ctx, rec) // a create not seen through: wait for it on the node first
	got, err := r.get(ctx, data.Name.ValueString())
	if isNotFound(err) {
		// Deleted behind our back: drop it from state so the plan recreates it.
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Read storage pool", describe(r.p.endpoint, err))
		return
	}
	data.fromAPI(got)
	if rec.Operation != "" {
		resp.Diagnostics.Append(clearCreateRecord(ctx, resp.Private)...)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

// Update only ever changes the provider-side flags (build, format_source, force_destroy,
// delete_storage): every attribute of the pool itself requires replacement.
func (r *StoragePoolResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data StoragePoolResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	got, err := r.get(ctx, data.Name.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Read storage pool", describe(r.p.endpoint, err))
		return
	}
	data.fromAPI(got)
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

func (r *StoragePoolResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data StoragePoolResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := data.Timeouts.Delete(ctx, r.p.operationTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	name := data.Name.ValueString()
	_, err := r.p.run(ctx, timeout, "delete pool "+name, func(ctx context.Context) (*v1.Operation, error) {
		return r.p.client.Storage.DeletePool(ctx, &v1.DeletePoolRequest{
			Name: name, DeleteVolumes: data.ForceDestroy.ValueBool(), DeleteStorage: data.DeleteStorage.ValueBool(),
		})
	}, nil)
	if err != nil && !isNotFound(err) {
		resp.Diagnostics.AddError("Delete storage pool", err.Error())
	}
}

// ImportState takes the pool's name; the provider-side flags get their defaults.
func (r *StoragePoolResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if rules.CheckName(req.ID) != nil {
		resp.Diagnostics.AddError("Invalid import ID", fmt.Sprintf("%q is not a pool name; import with the pool's name", req.ID))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), req.ID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("build"), true)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("format_source"), false)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("force_destroy"), false)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("delete_storage"), false)...)
}

// fromAPI copies what the node reports into the model. Optional lists the node reports empty
// stay null when unset, so a configuration that omits them plans no change.
func (m *StoragePoolResourceModel) fromAPI(p *v1.Pool) {
	m.ID = types.StringValue(p.GetName())
	m.Name = types.StringValue(p.GetName())
	m.Type = types.StringValue(poolTypes.word(p.GetType()))
	m.Path = types.StringValue(p.GetPath())
	m.SourceDevices = stringList(p.GetSourceDevices(), m.SourceDevices)
	m.SourceHosts = stringList(p.GetSourceHosts(), m.SourceHosts)
	m.SourcePath = optString(p.GetSourcePath(), m.SourcePath)
	m.SourceName = types.StringValue(p.GetSourceName())
	m.SourceFormat = types.StringValue(p.GetSourceFormat())
	m.AuthUsername = optString(p.GetAuthUsername(), m.AuthUsername)
	m.AuthSecretUUID = optString(p.GetAuthSecretUuid(), m.AuthSecretUUID)
	m.UUID = types.StringValue(p.GetUuid())
	m.State = types.StringValue(poolStates.word(p.GetState()))
	m.Capacity = types.Int64Value(p.GetCapacityBytes())
	m.Allocation = types.Int64Value(p.GetAllocationBytes())
	m.Available = types.Int64Value(p.GetAvailableBytes())
}
