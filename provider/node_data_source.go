package provider

import (
	"context"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

var _ datasource.DataSourceWithConfigure = &NodeDataSource{}

// NewNodeDataSource is the constructor the provider lists.
func NewNodeDataSource() datasource.DataSource { return &NodeDataSource{} }

// NodeDataSource reads the identity and versions of the node the provider talks to.
type NodeDataSource struct{ p *providerData }

// NodeDataSourceModel is the debvisor_node data source.
type NodeDataSourceModel struct {
	ID           types.String `tfsdk:"id"`
	Name         types.String `tfsdk:"name"`
	Hostname     types.String `tfsdk:"hostname"`
	MachineID    types.String `tfsdk:"machine_id"`
	AgentVersion types.String `tfsdk:"agent_version"`
	OSVersion    types.String `tfsdk:"os_version"`
	BootedSlot   types.String `tfsdk:"booted_slot"`
	Kernel       types.String `tfsdk:"kernel"`
	Architecture types.String `tfsdk:"architecture"`
	BootTime     types.String `tfsdk:"boot_time"`
	Health       types.String `tfsdk:"health"`
}

func (d *NodeDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_node"
}

func (d *NodeDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	computed := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{MarkdownDescription: desc, Computed: true}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "Identity, versions, A/B slot and health of the DebVisor node the provider is connected to.",
		Attributes: map[string]schema.Attribute{
			"id":            computed("The node's name (same as `name`)."),
			"name":          computed("The node's name in the cluster."),
			"hostname":      computed("The node's hostname."),
			"machine_id":    computed("`/etc/machine-id`; empty when the system has none."),
			"agent_version": computed("Version of the running debvisor-agent."),
			"os_version":    computed("DebVisor OS version of the booted slot; `unknown` when the agent does not run on a DebVisor image."),
			"booted_slot":   computed("The A/B slot the node booted from (`A` or `B`); empty when it did not boot from a DebVisor slot."),
			"kernel":        computed("Running kernel release."),
			"architecture":  computed("CPU architecture, e.g. `amd64`."),
			"boot_time":     computed("When the node booted, RFC 3339."),
			"health":        computed("Health summary from the agent's most recent checks: `healthy`, `degraded`, `failing` or `unknown`."),
		},
	}
}

func (d *NodeDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.p = configuredData(req.ProviderData, &resp.Diagnostics)
}

func (d *NodeDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var data NodeDataSourceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if !configured(d.p, &resp.Diagnostics) {
		return
	}
	var n *v1.Node
	err := d.p.read(ctx, "read node", func(ctx context.Context) (err error) {
		n, err = d.p.client.Node.GetNode(ctx, &v1.GetNodeRequest{})
		return err
	})
	if err != nil {
		resp.Diagnostics.AddError("Read DebVisor node", describe(d.p.endpoint, err))
		return
	}
	data.ID = types.StringValue(n.GetName())
	data.Name = types.StringValue(n.GetName())
	data.Hostname = types.StringValue(n.GetHostname())
	data.MachineID = types.StringValue(n.GetMachineId())
	data.AgentVersion = types.StringValue(n.GetAgentVersion())
	data.OSVersion = types.StringValue(n.GetOsVersion())
	data.BootedSlot = types.StringValue(n.GetBootedSlot())
	data.Kernel = types.StringValue(n.GetKernel())
	data.Architecture = types.StringValue(n.GetArchitecture())
	data.BootTime = types.StringValue("")
	if n.GetBootTime() != nil {
		data.BootTime = types.StringValue(n.GetBootTime().AsTime().UTC().Format(time.RFC3339))
	}
	data.Health = types.StringValue(healthString(n.GetHealth().GetStatus()))
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

func healthString(s v1.HealthSummary_Status) string {
	switch s {
	case v1.HealthSummary_STATUS_HEALTHY:
		return "healthy"
	case v1.HealthSummary_STATUS_DEGRADED:
		return "degraded"
	case v1.HealthSummary_STATUS_FAILING:
		return "failing"
	}
	return "unknown"
}
