package provider

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
)

var (
	_ resource.ResourceWithConfigure      = &NetworkResource{}
	_ resource.ResourceWithImportState    = &NetworkResource{}
	_ resource.ResourceWithValidateConfig = &NetworkResource{}
	_ resource.ResourceWithModifyPlan     = &NetworkResource{}
)

// Bounds of confirm_timeout: the agent's (NetworkService.ApplyNetwork).
const (
	defaultConfirmTimeout = 60 * time.Second
	minConfirmTimeout     = time.Second
	maxConfirmTimeout     = time.Hour
)

// NewNetworkResource is the constructor the provider lists.
func NewNetworkResource() resource.Resource { return &NetworkResource{} }

// NetworkResource manages the host network of the node the provider is connected to: one
// declarative configuration, applied with the agent's confirm-or-revert.
type NetworkResource struct{ p *providerData }

// NetworkResourceModel is the debvisor_network resource.
type NetworkResourceModel struct {
	ID             types.String `tfsdk:"id"`
	ConfirmTimeout types.String `tfsdk:"confirm_timeout"`
	Bonds          types.List   `tfsdk:"bonds"`
	VLANs          types.List   `tfsdk:"vlans"`
	Bridges        types.List   `tfsdk:"bridges"`
	Interfaces     types.List   `tfsdk:"interfaces"`
	Routes         types.List   `tfsdk:"routes"`
	DNSServers     types.List   `tfsdk:"dns_servers"`
	LastChange     types.String `tfsdk:"last_change"`
}

type networkBondModel struct {
	Name     types.String `tfsdk:"name"`
	Mode     types.String `tfsdk:"mode"`
	Members  types.List   `tfsdk:"members"`
	MiimonMs types.Int64  `tfsdk:"miimon_ms"`
}

type networkVLANModel struct {
	Name   types.String `tfsdk:"name"`
	Parent types.String `tfsdk:"parent"`
	ID     types.Int64  `tfsdk:"id"`
}

type networkBridgeModel struct {
	Name  types.String `tfsdk:"name"`
	Ports types.List   `tfsdk:"ports"`
}

type networkInterfaceModel struct {
	Name      types.String `tfsdk:"name"`
	DHCP4     types.Bool   `tfsdk:"dhcp4"`
	DHCP6     types.Bool   `tfsdk:"dhcp6"`
	Addresses types.List   `tfsdk:"addresses"`
	Gateway4  types.String `tfsdk:"gateway4"`
	Gateway6  types.String `tfsdk:"gateway6"`
	MTU       types.Int64  `tfsdk:"mtu"`
}

type networkRouteModel struct {
	Destination types.String `tfsdk:"destination"`
	Gateway     types.String `tfsdk:"gateway"`
	Interface   types.String `tfsdk:"interface"`
	Metric      types.Int64  `tfsdk:"metric"`
}

var (
	stringListType = types.ListType{ElemType: types.StringType}
	bondAttrTypes  = map[string]attr.Type{
		"name": types.StringType, "mode": types.StringType, "members": stringListType, "miimon_ms": types.Int64Type,
	}
	vlanAttrTypes   = map[string]attr.Type{"name": types.StringType, "parent": types.StringType, "id": types.Int64Type}
	bridgeAttrTypes = map[string]attr.Type{"name": types.StringType, "ports": stringListType}
	ifaceAttrTypes  = map[string]attr.Type{
		"name": types.StringType, "dhcp4": types.BoolType, "dhcp6": types.BoolType, "addresses": stringListType,
		"gateway4": types.StringType, "gateway6": types.StringType, "mtu": types.Int64Type,
	}
	routeAttrTypes = map[string]attr.Type{
		"destination": types.StringType, "gateway": types.StringType, "interface": types.StringType, "metric": types.Int64Type,
	}
)

func (r *NetworkResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_network"
}

func (r *NetworkResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	str := func(desc string, required bool) schema.StringAttribute {
		if required {
			return schema.StringAttribute{MarkdownDescription: desc, Required: true}
		}
		return schema.StringAttribute{MarkdownDescription: desc, Optional: true, Computed: true, Default: stringdefault.StaticString("")}
	}
	strs := func(desc string) schema.ListAttribute {
		return schema.ListAttribute{
			MarkdownDescription: desc, ElementType: types.StringType, Optional: true, Computed: true,
			Default: listdefault.StaticValue(types.ListValueMust(types.StringType, nil)),
		}
	}
	boolean := func(desc string) schema.BoolAttribute {
		return schema.BoolAttribute{MarkdownDescription: desc, Optional: true, Computed: true, Default: booldefault.StaticBool(false)}
	}
	integer := func(desc string) schema.Int64Attribute {
		return schema.Int64Attribute{MarkdownDescription: desc, Optional: true, Computed: true, Default: int64default.StaticInt64(0)}
	}
	nested := func(desc string, attrTypes map[string]attr.Type, attrs map[string]schema.Attribute) schema.ListNestedAttribute {
		return schema.ListNestedAttribute{
			MarkdownDescription: desc, Optional: true, Computed: true,
			NestedObject: schema.NestedAttributeObject{Attributes: attrs},
			Default:      listdefault.StaticValue(types.ListValueMust(types.ObjectType{AttrTypes: attrTypes}, nil)),
		}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "The host network of the DebVisor node the provider is connected to: bonds, VLANs, the " +
			"bridges VMs plug into, the addressing of links (DHCP, static addresses, gateways, MTU), static routes and " +
			"DNS servers, as one declarative configuration. There is one `debvisor_network` per node: what it names is " +
			"created and configured, what an earlier configuration named and this one does not is removed (virtual " +
			"links deleted, addresses and routes taken away); links it never named are left alone. The agent applies " +
			"a change live (netlink) and persists it as systemd-networkd files, so it survives reboots.\n\n" +
			"Every change is **confirm-or-revert**: the agent applies it with a deadline (`confirm_timeout`), then " +
			"the provider opens a new connection to the node, reads the network back through it and confirms the " +
			"change. When the node cannot be reached through a new connection before the deadline (the change cut " +
			"the provider off), the apply fails and the node reverts the change by itself at the deadline: a " +
			"mistake on the management interface heals itself. A configuration the agent refuses (a VLAN id of 0 or " +
			"4095, an unknown bonding mode, an address that is not in CIDR form, a NIC the node does not have, a NIC " +
			"that is enslaved elsewhere) fails at plan time, before anything changes: the plan asks the agent for a " +
			"dry run.\n\n" +
			"A refresh reads the configuration the node persists, and compares it with the live links and routes: " +
			"a change made with `dvctl network apply` shows in the next plan, and so does a bridge, bond or VLAN " +
			"deleted, a port released, an address or route taken away or an MTU changed behind the agent's back " +
			"(the plan adds it back, the apply repairs the node). **Destroying the resource applies an empty configuration** (confirmed the same " +
			"way): the bonds, VLANs and bridges it created are deleted and the addresses and routes it set are " +
			"removed; NICs stay, unconfigured. Keep the management interface's addressing out of this resource, or " +
			"remove the resource from the state (`terraform state rm`) instead of destroying it, when the node " +
			"must stay reachable.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The node's name. Import with it: `terraform import debvisor_network.this NODE`.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"confirm_timeout": schema.StringAttribute{
				MarkdownDescription: "How long the node waits for the provider's confirmation of a change before it " +
					"reverts it, as a Go duration between `1s` and `1h`. Default `60s`. Changing only this applies nothing.",
				Optional: true, Computed: true, Default: stringdefault.StaticString(defaultConfirmTimeout.String()),
			},
			"bonds": nested("Bonds: NICs aggregated into one link.", bondAttrTypes, map[string]schema.Attribute{
				"name": str("Interface name (`bond0`), 1-15 characters.", true),
				"mode": str("Bonding mode: "+quoted(rules.BondModes)+".", true),
				"members": schema.ListAttribute{
					MarkdownDescription: "NICs enslaved to the bond; each must exist and be nobody else's.",
					ElementType:         types.StringType, Required: true,
				},
				"miimon_ms": integer("MII link monitoring interval in milliseconds; `0` means 100."),
			}),
			"vlans": nested("802.1Q VLAN sub-interfaces of NICs or bonds.", vlanAttrTypes, map[string]schema.Attribute{
				"name":   str("Interface name (`vlan20`, `bond0.20`).", true),
				"parent": str("The NIC or bond the VLAN is on.", true),
				"id": schema.Int64Attribute{
					MarkdownDescription: fmt.Sprintf("VLAN id, 1-%d (0 means untagged and 4095 is reserved).", rules.MaxVLAN),
					Required:            true,
				},
			}),
			"bridges": nested("Bridges: the software switches VMs' NICs join.", bridgeAttrTypes, map[string]schema.Attribute{
				"name":  str("Interface name (`br0`).", true),
				"ports": strs("Links enslaved to the bridge (NICs, bonds, VLANs); empty for a host-only bridge."),
			}),
			"interfaces": nested("Addressing of links: NICs, bonds, VLANs or bridges.", ifaceAttrTypes, map[string]schema.Attribute{
				"name":      str("The link.", true),
				"dhcp4":     boolean("Acquire an IPv4 address by DHCP (systemd-networkd runs the client)."),
				"dhcp6":     boolean("Acquire IPv6 addresses by DHCPv6."),
				"addresses": strs("Static addresses in CIDR form (`192.0.2.10/24`, `2001:db8::10/64`): exactly these; static addresses not listed are removed."),
				"gateway4":  str("IPv4 default gateway, in one of the addresses' subnets.", false),
				"gateway6":  str("IPv6 default gateway.", false),
				"mtu":       integer(fmt.Sprintf("MTU (%d-%d); `0` leaves it as it is.", rules.MinMTU, rules.MaxMTU)),
			}),
			"routes": nested("Static routes in the main table.", routeAttrTypes, map[string]schema.Attribute{
				"destination": str("Destination network in CIDR form (`10.20.0.0/16`; `0.0.0.0/0` for a default route).", true),
				"gateway":     str("Next hop; empty for a route directly on the link.", false),
				"interface":   str("The link the route leaves through; it must be in `interfaces`.", true),
				"metric":      integer("Route metric."),
			}),
			"dns_servers": strs("DNS servers (IPv4 or IPv6 addresses), in order of preference."),
			"last_change": schema.StringAttribute{
				MarkdownDescription: "The id of the last change the provider confirmed (`net-…`), as `dvctl network show` lists it.",
				Computed:            true,
			},
		},
	}
}

func (r *NetworkResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.p = configuredData(req.ProviderData, &resp.Diagnostics)
}

func (r *NetworkResource) networks(c *client.Client) v1.NetworkServiceClient {
	return v1.NewNetworkServiceClient(c.Conn())
}

// ValidateConfig checks what can be checked without the node, with the rules the agent applies:
// names, VLAN ids, bonding modes, MTUs, addresses and networks in CIDR form, gateways and DNS
// servers as IP addresses, and the confirm timeout. The rest (does the NIC exist, is it free)
// is the dry run's in ModifyPlan.
func (r *NetworkResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var data NetworkResourceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if v := data.ConfirmTimeout; !v.IsNull() && !v.IsUnknown() {
		if _, err := parseConfirmTimeout(v.ValueString()); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("confirm_timeout"), "Invalid confirm_timeout", err.Error())
		}
	}
	// Unknown values (known only at apply) are skipped: the agent checks them then.
	known := func(v attr.Value) bool { return !v.IsNull() && !v.IsUnknown() }
	check := func(p path.Path, v types.String, f func(string) error) {
		if known(v) {
			if err := f(v.ValueString()); err != nil {
				resp.Diagnostics.AddAttributeError(p, "Invalid network configuration", err.Error())
			}
		}
	}
	checkList := func(p path.Path, l types.List, f func(string) error) {
		if !known(l) {
			return
		}
		for i, e := range l.Elements() {
			if s, ok := e.(types.String); ok {
				check(p.AtListIndex(i), s, f)
			}
		}
	}
	var bonds []networkBondModel
	var vlans []networkVLANModel
	var bridges []networkBridgeModel
	var ifaces []networkInterfaceModel
	var routes []networkRouteModel
	for _, l := range []struct {
		v   types.List
		dst any
	}{{data.Bonds, &bonds}, {data.VLANs, &vlans}, {data.Bridges, &bridges}, {data.Interfaces, &ifaces}, {data.Routes, &routes}} {
		if known(l.v) {
			resp.Diagnostics.Append(l.v.ElementsAs(ctx, l.dst, false)...)
		}
	}
	if resp.Diagnostics.HasError() {
		return
	}
	for i, b := range bonds {
		p := path.Root("bonds").AtListIndex(i)
		check(p.AtName("name"), b.Name, rules.CheckInterfaceName)
		check(p.AtName("mode"), b.Mode, rules.CheckBondMode)
		checkList(p.AtName("members"), b.Members, rules.CheckInterfaceName)
		if known(b.MiimonMs) && (b.MiimonMs.ValueInt64() < 0 || b.MiimonMs.ValueInt64() > rules.MaxMiimonMs) {
			resp.Diagnostics.AddAttributeError(p.AtName("miimon_ms"), "Invalid network configuration",
				fmt.Sprintf("%d is not between 0 and %d ms", b.MiimonMs.ValueInt64(), rules.MaxMiimonMs))
		}
	}
	for i, v := range vlans {
		p := path.Root("vlans").AtListIndex(i)
		check(p.AtName("name"), v.Name, rules.CheckInterfaceName)
		check(p.AtName("parent"), v.Parent, rules.CheckInterfaceName)
		if known(v.ID) {
			id := v.ID.ValueInt64()
			err := rules.CheckVLANID(uint32(max(0, min(id, rules.MaxVLAN+1)))) //nolint:gosec // clamped
			if err != nil {
				resp.Diagnostics.AddAttributeError(p.AtName("id"), "Invalid VLAN id", err.Error())
			}
		}
	}
	for i, b := range bridges {
		p := path.Root("bridges").AtListIndex(i)
		check(p.AtName("name"), b.Name, rules.CheckInterfaceName)
		checkList(p.AtName("ports"), b.Ports, rules.CheckInterfaceName)
	}
	for i, ic := range ifaces {
		p := path.Root("interfaces").AtListIndex(i)
		check(p.AtName("name"), ic.Name, rules.CheckInterfaceName)
		checkList(p.AtName("addresses"), ic.Addresses, checkCIDR)
		check(p.AtName("gateway4"), ic.Gateway4, checkIP(true, false))
		check(p.AtName("gateway6"), ic.Gateway6, checkIP(false, true))
		if known(ic.MTU) {
			mtu := ic.MTU.ValueInt64()
			if err := rules.CheckMTU(uint32(max(0, min(mtu, rules.MaxMTU+1)))); err != nil || mtu < 0 { //nolint:gosec // clamped
				resp.Diagnostics.AddAttributeError(p.AtName("mtu"), "Invalid MTU", fmt.Sprintf("%d is not an MTU (%d-%d, or 0 to leave it)", mtu, rules.MinMTU, rules.MaxMTU))
			}
		}
	}
	for i, rt := range routes {
		p := path.Root("routes").AtListIndex(i)
		check(p.AtName("destination"), rt.Destination, checkNetwork)
		check(p.AtName("gateway"), rt.Gateway, checkIP(true, true))
		check(p.AtName("interface"), rt.Interface, rules.CheckInterfaceName)
		if known(rt.Metric) && (rt.Metric.ValueInt64() < 0 || rt.Metric.ValueInt64() > 1<<32-1) {
			resp.Diagnostics.AddAttributeError(p.AtName("metric"), "Invalid route metric", "a metric is between 0 and 4294967295")
		}
	}
	checkList(path.Root("dns_servers"), data.DNSServers, checkIP(true, true))
}

func parseConfirmTimeout(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < minConfirmTimeout || d > maxConfirmTimeout {
		return 0, fmt.Errorf("%q is not a duration between %s and %s (such as \"60s\" or \"5m\")", s, minConfirmTimeout, maxConfirmTimeout)
	}
	return d, nil
}

func checkCIDR(s string) error {
	if _, err := netip.ParsePrefix(s); err != nil {
		return fmt.Errorf("%q is not an address in CIDR form (192.0.2.10/24, 2001:db8::10/64)", s)
	}
	return nil
}

func checkNetwork(s string) error {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("%q is not a network in CIDR form (10.20.0.0/16)", s)
	}
	if p != p.Masked() {
		return fmt.Errorf("%s has host bits set: the network is %s", p, p.Masked())
	}
	return nil
}

// checkIP accepts "" (unset) and addresses of the allowed families.
func checkIP(v4, v6 bool) func(string) error {
	return func(s string) error {
		if s == "" {
			return nil
		}
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil || a.Zone() != "":
			return fmt.Errorf("%q is not an IP address", s)
		case a.Is4() && !v4:
			return fmt.Errorf("%s is not an IPv6 address", s)
		case a.Is6() && !v6:
			return fmt.Errorf("%s is not an IPv4 address", s)
		}
		return nil
	}
}

// ModifyPlan asks the agent for a dry run of a planned configuration, so that what only the node
// can judge (a NIC it does not have, one enslaved elsewhere, an address overlapping another
// link's) fails the plan, before anything changes.
func (r *NetworkResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() || !req.Config.Raw.IsFullyKnown() || r.p == nil {
		return
	}
	var plan NetworkResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	cfg, diags := plan.toAPI(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	if !req.State.Raw.IsNull() {
		var prior NetworkResourceModel
		resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
		if prev, d := prior.toAPI(ctx); !d.HasError() && proto.Equal(prev, cfg) {
			return // nothing to apply
		}
	}
	var ch *v1.ApplyNetworkResponse
	err := r.p.read(ctx, "dry-run the network change", func(ctx context.Context) (err error) {
		ch, err = r.networks(r.p.client).ApplyNetwork(ctx, &v1.ApplyNetworkRequest{Config: cfg, DryRun: true})
		return err
	})
	switch status.Code(err) {
	case codes.OK:
		tflog.Debug(ctx, "network dry run", map[string]any{"plan": ch.GetChange().GetPlan()})
	case codes.InvalidArgument, codes.FailedPrecondition:
		resp.Diagnostics.AddError("The node refuses this network configuration", status.Convert(err).Message()+
			"\n\nNothing was changed.")
	default:
		// The apply asks again; a plan need not fail because a dry run could not be had.
		resp.Diagnostics.AddWarning("Network dry run not possible", describe(r.p.endpoint, err))
	}
}

func (r *NetworkResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data NetworkResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	name, err := nodeNameOf(ctx, r.p)
	if err != nil {
		resp.Diagnostics.AddError("Read DebVisor node", describe(r.p.endpoint, err))
		return
	}
	st, err := r.apply(ctx, &data)
	if err != nil {
		resp.Diagnostics.AddError("Apply the network of node "+name, err.Error())
		return
	}
	data.ID = types.StringValue(name)
	resp.Diagnostics.Append(data.fromAPI(st)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

func (r *NetworkResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data NetworkResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	name, err := nodeNameOf(ctx, r.p)
	if err != nil {
		resp.Diagnostics.AddError("Read DebVisor node", describe(r.p.endpoint, err))
		return
	}
	if name != data.ID.ValueString() {
		// Never adopt another node's network into this resource: its next apply would rewrite it.
		resp.Diagnostics.AddError("Wrong DebVisor node",
			fmt.Sprintf("This resource manages the network of node %q, but the provider is connected to node %q (%s). "+
				"Point the provider's endpoint at %q, or import this node by its name.", data.ID.ValueString(), name, r.p.endpoint, data.ID.ValueString()))
		return
	}
	st, err := r.get(ctx, r.p.client)
	if err != nil {
		resp.Diagnostics.AddError("Read the network of node "+name, describeNetwork(r.p.endpoint, err))
		return
	}
	if p := st.GetPending(); p != nil {
		resp.Diagnostics.AddWarning("A network change is pending on node "+name,
			fmt.Sprintf("Change %s (by %s) waits for its confirmation until %s; unless it is confirmed (dvctl network confirm %s), "+
				"the node reverts it then. The state shows the configuration it would keep.", p.GetId(), p.GetRequestedBy(),
				p.GetDeadline().AsTime().Format(time.RFC3339), p.GetId()))
	}
	if st.GetPending() == nil {
		if cfg, drift := liveDrift(st); len(drift) > 0 {
			resp.Diagnostics.AddWarning("The network of node "+name+" differs from its configuration",
				"Live, "+strings.Join(drift, "; ")+". The plan adds what is missing back; applying it repairs the node.")
			st = proto.CloneOf(st)
			st.Desired = cfg
		}
	}
	resp.Diagnostics.Append(data.fromAPI(st)...)
	if data.ConfirmTimeout.IsNull() {
		data.ConfirmTimeout = types.StringValue(defaultConfirmTimeout.String())
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

func (r *NetworkResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var plan, prior NetworkResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	plan.ID = prior.ID
	next, diags := plan.toAPI(ctx)
	resp.Diagnostics.Append(diags...)
	prev, diags := prior.toAPI(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	if proto.Equal(next, prev) {
		// Only confirm_timeout changed: nothing to apply.
		plan.LastChange = prior.LastChange
		resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
		return
	}
	st, err := r.apply(ctx, &plan)
	if err != nil {
		// The node keeps (or goes back to) the prior configuration: so does the state.
		resp.Diagnostics.AddError("Apply the network of node "+prior.ID.ValueString(), err.Error())
		return
	}
	resp.Diagnostics.Append(plan.fromAPI(st)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// Delete applies an empty configuration: what this resource created is deleted, what it set is
// taken away, links it never named are left as they are.
func (r *NetworkResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data NetworkResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	empty := data
	for _, l := range []*types.List{&empty.Bonds, &empty.VLANs, &empty.Bridges, &empty.Interfaces, &empty.Routes, &empty.DNSServers} {
		*l = types.ListNull(l.ElementType(ctx))
	}
	if _, err := r.apply(ctx, &empty); err != nil {
		resp.Diagnostics.AddError("Remove the network configuration of node "+data.ID.ValueString(), err.Error())
	}
}

// ImportState takes the node's name; Read checks that it is the node the provider talks to and
// reads its configuration.
func (r *NetworkResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("confirm_timeout"), defaultConfirmTimeout.String())...)
}

// nodeNameOf is the name of the node the provider is connected to.
func nodeNameOf(ctx context.Context, p *providerData) (string, error) {
	var n *v1.Node
	err := p.read(ctx, "read node", func(ctx context.Context) (err error) {
		n, err = p.client.Node.GetNode(ctx, &v1.GetNodeRequest{})
		return err
	})
	return n.GetName(), err
}

func (r *NetworkResource) get(ctx context.Context, c *client.Client) (st *v1.NetworkState, err error) {
	err = r.p.read(ctx, "read network", func(ctx context.Context) (err error) {
		st, err = r.networks(c).GetNetwork(ctx, &v1.GetNetworkRequest{})
		return err
	})
	return st, err
}

// describeNetwork explains a failed network call: an agent that does not manage the host's
// network says so.
func describeNetwork(endpoint string, err error) string {
	if status.Code(err) == codes.FailedPrecondition {
		return fmt.Sprintf("The agent at %s refused: %s.\n\ndebvisor_network manages the network of DebVisor nodes "+
			"whose agent owns the host networking (network.enabled in the agent config).", endpoint, status.Convert(err).Message())
	}
	return describe(endpoint, err)
}

// apply applies data's configuration with its confirm deadline, then confirms it through a new
// connection, which proves the node can still be reached after the change. It returns the network
// as the node reports it afterwards. When it fails after the agent took the change, the error says
// that the node reverts it at the deadline.
func (r *NetworkResource) apply(ctx context.Context, data *NetworkResourceModel) (*v1.NetworkState, error) {
	cfg, diags := data.toAPI(ctx)
	if diags.HasError() {
		return nil, fmt.Errorf("read the configuration: %v", diags)
	}
	timeout, err := parseConfirmTimeout(data.ConfirmTimeout.ValueString())
	if data.ConfirmTimeout.IsNull() || data.ConfirmTimeout.IsUnknown() {
		timeout, err = defaultConfirmTimeout, nil
	}
	if err != nil {
		return nil, err
	}
	// One attempt: an apply whose answer was lost may have been taken, and a second one would be
	// refused while the first is pending. Not confirmed, the first reverts at its deadline.
	cctx, cancel := r.p.call(ctx)
	resp, err := r.networks(r.p.client).ApplyNetwork(cctx, &v1.ApplyNetworkRequest{Config: cfg, ConfirmTimeout: durationpb.New(timeout)})
	cancel()
	if err != nil {
		msg := describeNetwork(r.p.endpoint, err)
		if mayHaveArrived(err) {
			msg += fmt.Sprintf("\n\nThe node may have taken the change; unconfirmed, it reverts it within %s "+
				"(dvctl network show lists a pending change).", timeout)
		} else if c := status.Code(err); c == codes.InvalidArgument || c == codes.FailedPrecondition {
			msg += "\n\nNothing was changed."
		}
		return nil, errors.New(msg)
	}
	ch := resp.GetChange()
	deadline := ch.GetDeadline().AsTime()
	tflog.Info(ctx, "network change applied; confirming it through a new connection", map[string]any{
		"id": ch.GetId(), "deadline": deadline, "steps": ch.GetPlan(),
	})
	// Leave a margin for the confirmation to travel: past the deadline it would be refused anyway.
	confirmBy := deadline.Add(-min(time.Second, timeout/4))
	if local := time.Now().Add(timeout); local.Before(confirmBy) {
		// The node's clock may be ahead of ours or behind: the earlier of both wins.
		confirmBy = local
	}
	cctx, cancel = context.WithDeadline(ctx, confirmBy)
	defer cancel()
	st, err := r.confirm(cctx, ch.GetId())
	if err != nil {
		return nil, fmt.Errorf("network change %s was applied, but the provider could not confirm it: %w.\n\n"+
			"Unless it is confirmed, the node reverts the change at %s (confirm_timeout %s): the node's "+
			"network goes back to what it was before this apply", ch.GetId(), err, deadline.Format(time.RFC3339), timeout)
	}
	data.LastChange = types.StringValue(ch.GetId())
	return st, nil
}

// confirm reaches the node through a new connection, checks that change id is still pending
// there and confirms it, retrying until ctx ends.
func (r *NetworkResource) confirm(ctx context.Context, id string) (*v1.NetworkState, error) {
	fresh, err := client.New(r.p.cfg)
	if err != nil {
		return nil, err
	}
	defer fresh.Close()
	api := r.networks(fresh)
	var lastErr error
	for n := 0; ; n++ {
		cctx, cancel := r.p.call(ctx)
		st, err := api.GetNetwork(cctx, &v1.GetNetworkRequest{})
		if err == nil {
			switch {
			case st.GetPending().GetId() == id:
				_, err = api.ConfirmNetwork(cctx, &v1.ConfirmNetworkRequest{Id: id})
			case st.GetLast().GetId() == id && st.GetLast().GetState() == v1.NetworkChange_STATE_CONFIRMED:
				// Confirmed by an attempt whose answer was lost.
			case st.GetLast().GetId() == id:
				cancel()
				return nil, fmt.Errorf("the node reverted it: %s", st.GetLast().GetReason())
			default:
				cancel()
				return nil, fmt.Errorf("the node has no record of it (pending: %q)", st.GetPending().GetId())
			}
		}
		if err == nil {
			st, err = api.GetNetwork(cctx, &v1.GetNetworkRequest{})
		}
		cancel()
		if err == nil {
			return st, nil
		}
		lastErr = err
		if !transient(err) && status.Code(err) != codes.Canceled {
			return nil, errors.New(describeNetwork(r.p.endpoint, err))
		}
		tflog.Debug(ctx, "node not reachable through a new connection yet", map[string]any{"id": id, "error": err.Error()})
		if ctx.Err() != nil || !backoff(ctx, n) {
			return nil, fmt.Errorf("the node at %s could not be reached through a new connection before the deadline (%s)",
				r.p.endpoint, describe(r.p.endpoint, lastErr))
		}
	}
}

// toAPI is the configuration the model describes.
func (m *NetworkResourceModel) toAPI(ctx context.Context) (*v1.NetworkConfig, diag.Diagnostics) {
	var diags diag.Diagnostics
	strs := func(l types.List) []string {
		var out []string
		if !l.IsNull() && !l.IsUnknown() {
			diags.Append(l.ElementsAs(ctx, &out, false)...)
		}
		return out
	}
	elems := func(l types.List, dst any) {
		if !l.IsNull() && !l.IsUnknown() {
			diags.Append(l.ElementsAs(ctx, dst, false)...)
		}
	}
	c := &v1.NetworkConfig{DnsServers: strs(m.DNSServers)}
	var bonds []networkBondModel
	elems(m.Bonds, &bonds)
	for _, b := range bonds {
		c.Bonds = append(c.Bonds, &v1.Bond{Name: b.Name.ValueString(), Mode: b.Mode.ValueString(), Members: strs(b.Members),
			MiimonMs: uint32(b.MiimonMs.ValueInt64())}) //nolint:gosec // ValidateConfig bounds it
	}
	var vlans []networkVLANModel
	elems(m.VLANs, &vlans)
	for _, v := range vlans {
		c.Vlans = append(c.Vlans, &v1.Vlan{Name: v.Name.ValueString(), Parent: v.Parent.ValueString(), Id: uint32(v.ID.ValueInt64())}) //nolint:gosec // ValidateConfig bounds it
	}
	var bridges []networkBridgeModel
	elems(m.Bridges, &bridges)
	for _, b := range bridges {
		c.Bridges = append(c.Bridges, &v1.Bridge{Name: b.Name.ValueString(), Ports: strs(b.Ports)})
	}
	var ifaces []networkInterfaceModel
	elems(m.Interfaces, &ifaces)
	for _, ic := range ifaces {
		c.Interfaces = append(c.Interfaces, &v1.InterfaceConfig{
			Name: ic.Name.ValueString(), Dhcp4: ic.DHCP4.ValueBool(), Dhcp6: ic.DHCP6.ValueBool(), Addresses: strs(ic.Addresses),
			Gateway4: ic.Gateway4.ValueString(), Gateway6: ic.Gateway6.ValueString(), Mtu: uint32(ic.MTU.ValueInt64()), //nolint:gosec // ValidateConfig bounds it
		})
	}
	var routes []networkRouteModel
	elems(m.Routes, &routes)
	for _, rt := range routes {
		c.Routes = append(c.Routes, &v1.Route{Destination: rt.Destination.ValueString(), Gateway: rt.Gateway.ValueString(),
			Interface: rt.Interface.ValueString(), Metric: uint32(rt.Metric.ValueInt64())}) //nolint:gosec // ValidateConfig bounds it
	}
	return c, diags
}

// fromAPI sets the configuration attributes from the configuration the node persists.
func (m *NetworkResourceModel) fromAPI(st *v1.NetworkState) diag.Diagnostics {
	var diags diag.Diagnostics
	c := st.GetDesired()
	strList := func(v []string) types.List {
		elems := make([]attr.Value, len(v))
		for i, s := range v {
			elems[i] = types.StringValue(s)
		}
		l, d := types.ListValue(types.StringType, elems)
		diags.Append(d...)
		return l
	}
	objList := func(attrTypes map[string]attr.Type, objs []map[string]attr.Value) types.List {
		elems := make([]attr.Value, 0, len(objs))
		for _, o := range objs {
			v, d := types.ObjectValue(attrTypes, o)
			diags.Append(d...)
			elems = append(elems, v)
		}
		l, d := types.ListValue(types.ObjectType{AttrTypes: attrTypes}, elems)
		diags.Append(d...)
		return l
	}
	var bonds, vlans, bridges, ifaces, routes []map[string]attr.Value
	for _, b := range c.GetBonds() {
		bonds = append(bonds, map[string]attr.Value{"name": types.StringValue(b.GetName()), "mode": types.StringValue(b.GetMode()),
			"members": strList(b.GetMembers()), "miimon_ms": types.Int64Value(int64(b.GetMiimonMs()))})
	}
	for _, v := range c.GetVlans() {
		vlans = append(vlans, map[string]attr.Value{"name": types.StringValue(v.GetName()), "parent": types.StringValue(v.GetParent()),
			"id": types.Int64Value(int64(v.GetId()))})
	}
	for _, b := range c.GetBridges() {
		bridges = append(bridges, map[string]attr.Value{"name": types.StringValue(b.GetName()), "ports": strList(b.GetPorts())})
	}
	for _, ic := range c.GetInterfaces() {
		ifaces = append(ifaces, map[string]attr.Value{
			"name": types.StringValue(ic.GetName()), "dhcp4": types.BoolValue(ic.GetDhcp4()), "dhcp6": types.BoolValue(ic.GetDhcp6()),
			"addresses": strList(ic.GetAddresses()), "gateway4": types.StringValue(ic.GetGateway4()),
			"gateway6": types.StringValue(ic.GetGateway6()), "mtu": types.Int64Value(int64(ic.GetMtu())),
		})
	}
	for _, rt := range c.GetRoutes() {
		routes = append(routes, map[string]attr.Value{"destination": types.StringValue(rt.GetDestination()),
			"gateway": types.StringValue(rt.GetGateway()), "interface": types.StringValue(rt.GetInterface()),
			"metric": types.Int64Value(int64(rt.GetMetric()))})
	}
	m.Bonds = objList(bondAttrTypes, bonds)
	m.VLANs = objList(vlanAttrTypes, vlans)
	m.Bridges = objList(bridgeAttrTypes, bridges)
	m.Interfaces = objList(ifaceAttrTypes, ifaces)
	m.Routes = objList(routeAttrTypes, routes)
	m.DNSServers = strList(c.GetDnsServers())
	if m.LastChange.IsNull() || m.LastChange.IsUnknown() {
		m.LastChange = types.StringValue("")
		if l := st.GetLast(); l.GetState() == v1.NetworkChange_STATE_CONFIRMED {
			m.LastChange = types.StringValue(l.GetId())
		}
	}
	return diags
}
