package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

var _ datasource.DataSourceWithConfigure = &StoragePoolDataSource{}

// NewStoragePoolDataSource is the constructor the provider lists.
func NewStoragePoolDataSource() datasource.DataSource { return &StoragePoolDataSource{} }

// StoragePoolDataSource reads an existing pool, so pools shared between configurations (or made
// by the installer) need not be managed to be used.
type StoragePoolDataSource struct{ p *providerData }

// StoragePoolDataSourceModel is the debvisor_storage_pool data source.
type StoragePoolDataSourceModel struct {
	ID            types.String `tfsdk:"id"`
	Name          types.String `tfsdk:"name"`
	Type          types.String `tfsdk:"type"`
	Path          types.String `tfsdk:"path"`
	SourceDevices types.List   `tfsdk:"source_devices"`
	SourceHosts   types.List   `tfsdk:"source_hosts"`
	SourceName    types.String `tfsdk:"source_name"`
	UUID          types.String `tfsdk:"uuid"`
	State         types.String `tfsdk:"state"`
	Autostart     types.Bool   `tfsdk:"autostart"`
	Capacity      types.Int64  `tfsdk:"capacity_bytes"`
	Allocation    types.Int64  `tfsdk:"allocation_bytes"`
	Available     types.Int64  `tfsdk:"available_bytes"`
	VolumeCount   types.Int64  `tfsdk:"volume_count"`
}

func (d *StoragePoolDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_storage_pool"
}

func (d *StoragePoolDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "An existing storage pool on the node, e.g. one shared by several configurations. Fails when the pool does not exist.",
		Attributes: map[string]schema.Attribute{
			"id":   schema.StringAttribute{MarkdownDescription: "The pool's name.", Computed: true},
			"name": schema.StringAttribute{MarkdownDescription: "Name of the pool to read.", Required: true, Validators: nameValidators()},
			"type": schema.StringAttribute{MarkdownDescription: "Pool type: " + quoted(poolTypes.words()) + ".", Computed: true},
			"path": schema.StringAttribute{MarkdownDescription: "Target path (directory, mount point or /dev/VG).", Computed: true},
			"source_devices": schema.ListAttribute{
				MarkdownDescription: "Source block devices.", ElementType: types.StringType, Computed: true,
			},
			"source_hosts": schema.ListAttribute{
				MarkdownDescription: "Source hosts (NFS server, Ceph monitors).", ElementType: types.StringType, Computed: true,
			},
			"source_name":      schema.StringAttribute{MarkdownDescription: "Volume group, zpool or Ceph pool.", Computed: true},
			"uuid":             schema.StringAttribute{MarkdownDescription: "libvirt's UUID of the pool.", Computed: true},
			"state":            schema.StringAttribute{MarkdownDescription: "Pool state: " + quoted(poolStates.words()) + ".", Computed: true},
			"autostart":        schema.BoolAttribute{MarkdownDescription: "Whether the pool starts with the node.", Computed: true},
			"capacity_bytes":   schema.Int64Attribute{MarkdownDescription: "Size of the pool's storage.", Computed: true},
			"allocation_bytes": schema.Int64Attribute{MarkdownDescription: "Bytes allocated.", Computed: true},
			"available_bytes":  schema.Int64Attribute{MarkdownDescription: "Bytes free.", Computed: true},
			"volume_count":     schema.Int64Attribute{MarkdownDescription: "Number of volumes in the pool.", Computed: true},
		},
	}
}

func (d *StoragePoolDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.p = configuredData(req.ProviderData, &resp.Diagnostics)
}

func (d *StoragePoolDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var data StoragePoolDataSourceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if !configured(d.p, &resp.Diagnostics) {
		return
	}
	var p *v1.Pool
	err := d.p.read(ctx, "read pool "+data.Name.ValueString(), func(ctx context.Context) (err error) {
		p, err = d.p.client.Storage.GetPool(ctx, &v1.GetPoolRequest{Name: data.Name.ValueString()})
		return err
	})
	if isNotFound(err) {
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Storage pool not found",
			fmt.Sprintf("The node has no storage pool %q.", data.Name.ValueString()))
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Read storage pool", describe(d.p.endpoint, err))
		return
	}
	data.ID = types.StringValue(p.GetName())
	data.Type = types.StringValue(poolTypes.word(p.GetType()))
	data.Path = types.StringValue(p.GetPath())
	data.SourceDevices = stringList(p.GetSourceDevices(), types.ListUnknown(types.StringType))
	data.SourceHosts = stringList(p.GetSourceHosts(), types.ListUnknown(types.StringType))
	if data.SourceDevices.IsNull() {
		data.SourceDevices = types.ListValueMust(types.StringType, nil)
	}
	if data.SourceHosts.IsNull() {
		data.SourceHosts = types.ListValueMust(types.StringType, nil)
	}
	data.SourceName = types.StringValue(p.GetSourceName())
	data.UUID = types.StringValue(p.GetUuid())
	data.State = types.StringValue(poolStates.word(p.GetState()))
	data.Autostart = types.BoolValue(p.GetAutostart())
	data.Capacity = types.Int64Value(p.GetCapacityBytes())
	data.Allocation = types.Int64Value(p.GetAllocationBytes())
	data.Available = types.Int64Value(p.GetAvailableBytes())
	data.VolumeCount = types.Int64Value(int64(p.GetVolumeCount()))
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}
