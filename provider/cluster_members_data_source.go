package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

var _ datasource.DataSourceWithConfigure = &ClusterMembersDataSource{}

// NewClusterMembersDataSource is the constructor the provider lists.
func NewClusterMembersDataSource() datasource.DataSource { return &ClusterMembersDataSource{} }

// ClusterMembersDataSource lists the members of the cluster of the node the
// provider talks to.
type ClusterMembersDataSource struct{ p *providerData }

// ClusterMembersDataSourceModel is the debvisor_cluster_members data source.
type ClusterMembersDataSourceModel struct {
	ID         types.String `tfsdk:"id"`
	ClusterID  types.String `tfsdk:"cluster_id"`
	CACertHash types.String `tfsdk:"ca_cert_hash"`
	Self       types.String `tfsdk:"self"`
	Names      types.List   `tfsdk:"names"`
	Members    types.List   `tfsdk:"members"`
}

// memberAttrTypes is one element of members.
var memberAttrTypes = map[string]attr.Type{
	"name":             types.StringType,
	"node_id":          types.StringType,
	"api_address":      types.StringType,
	"gossip_address":   types.StringType,
	"agent_version":    types.StringType,
	"holds_ca":         types.BoolType,
	"cert_fingerprint": types.StringType,
	"self":             types.BoolType,
}

func (d *ClusterMembersDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_cluster_members"
}

func (d *ClusterMembersDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	str := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{MarkdownDescription: desc, Computed: true}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "The members of the DebVisor cluster the node the provider is connected to belongs to, as that node's gossip (hashicorp/memberlist) sees them: alive members, itself included, sorted by name. A member that stopped is removed within the failure-detection time (a few seconds on a LAN). Reading it from a node that is not in a cluster is an error.",
		Attributes: map[string]schema.Attribute{
			"id":           str("The cluster id (same as `cluster_id`)."),
			"cluster_id":   str("The cluster id, chosen when the first node bootstrapped the cluster."),
			"ca_cert_hash": str("`sha256:` hash of the cluster CA's public key: what a joining node is given with its join token."),
			"self":         str("Name of the member the provider is connected to."),
			"names": schema.ListAttribute{
				MarkdownDescription: "Member names, sorted.",
				ElementType:         types.StringType, Computed: true,
			},
			"members": schema.ListNestedAttribute{
				MarkdownDescription: "The members, sorted by name.",
				Computed:            true,
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"name":             str("Member name (the node's name)."),
					"node_id":          str("Random id the node made when it enrolled."),
					"api_address":      str("The member's mTLS API endpoint, `host:port`: usable as a provider `endpoint`."),
					"gossip_address":   str("The member's gossip endpoint, `host:port`."),
					"agent_version":    str("Version of the member's debvisor-agent."),
					"holds_ca":         schema.BoolAttribute{MarkdownDescription: "Whether the member holds the CA key (signs join requests, keeps join tokens).", Computed: true},
					"cert_fingerprint": str("`sha256:` fingerprint of the member's node certificate."),
					"self":             schema.BoolAttribute{MarkdownDescription: "Whether this is the member the provider is connected to.", Computed: true},
				}},
			},
		},
	}
}

func (d *ClusterMembersDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.p = configuredData(req.ProviderData, &resp.Diagnostics)
}

func (d *ClusterMembersDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var data ClusterMembersDataSourceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if !configured(d.p, &resp.Diagnostics) {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, d.p.requestTimeout)
	defer cancel()
	c, err := d.p.client.Cluster.GetCluster(rctx, &v1.GetClusterRequest{})
	if err != nil {
		resp.Diagnostics.AddError("Read DebVisor cluster", describe(d.p.endpoint, err))
		return
	}
	list, err := d.p.client.Cluster.ListMembers(rctx, &v1.ListMembersRequest{})
	if err != nil {
		resp.Diagnostics.AddError("Read DebVisor cluster members", describe(d.p.endpoint, err))
		return
	}
	data.ID = types.StringValue(c.GetId())
	data.ClusterID = types.StringValue(c.GetId())
	data.CACertHash = types.StringValue(c.GetCaCertHash())
	data.Self = types.StringValue(c.GetSelf())
	var (
		names   []attr.Value
		members []attr.Value
	)
	objType := types.ObjectType{AttrTypes: memberAttrTypes}
	for _, m := range list.GetMembers() {
		names = append(names, types.StringValue(m.GetName()))
		obj, diags := types.ObjectValue(memberAttrTypes, map[string]attr.Value{
			"name":             types.StringValue(m.GetName()),
			"node_id":          types.StringValue(m.GetNodeId()),
			"api_address":      types.StringValue(m.GetApiAddress()),
			"gossip_address":   types.StringValue(m.GetGossipAddress()),
			"agent_version":    types.StringValue(m.GetAgentVersion()),
			"holds_ca":         types.BoolValue(m.GetHoldsCa()),
			"cert_fingerprint": types.StringValue(m.GetCertFingerprint()),
			"self":             types.BoolValue(m.GetSelf()),
		})
		resp.Diagnostics.Append(diags...)
		members = append(members, obj)
	}
	nl, diags := types.ListValue(types.StringType, names)
	resp.Diagnostics.Append(diags...)
	ml, diags := types.ListValue(objType, members)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	data.Names, data.Members = nl, ml
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}
