package provider

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

var (
	_ resource.ResourceWithConfigure   = &NodeResource{}
	_ resource.ResourceWithImportState = &NodeResource{}
)

// defaultUpgradeTimeout bounds an upgrade without a timeouts block. It is not the provider's
// operation_timeout: an upgrade writes a slot, reboots the node and waits for the health-gated
// commit (up to 5 minutes on the node by default), which is longer than any other operation.
const defaultUpgradeTimeout = 30 * time.Minute

// What the agent records as a slot's last result (UpgradeService, Slot.last_result).
const (
	resultCommitted = "committed"
	// alreadyRunning is an upgrade operation's "outcome" result when the node runs the image.
	alreadyRunning = "already-running"
)

// failedResults are the last results that mean a slot did not take over: its boot failed its
// health check, GRUB fell back from it, or it was never completely written.
var failedResults = map[string]bool{"rolled-back": true, "health-failed": true, "write-failed": true}

// NewNodeResource is the constructor the provider lists.
func NewNodeResource() resource.Resource { return &NodeResource{} }

// NodeResource manages the operating system of the node the provider is connected to: the image
// its booted A/B slot runs.
type NodeResource struct{ p *providerData }

// NodeResourceModel is the debvisor_node resource.
type NodeResourceModel struct {
	ID            types.String   `tfsdk:"id"`
	Image         types.String   `tfsdk:"image"`
	Force         types.Bool     `tfsdk:"force"`
	BootedSlot    types.String   `tfsdk:"booted_slot"`
	BootedVersion types.String   `tfsdk:"booted_version"`
	BootedImage   types.String   `tfsdk:"booted_image"`
	BootedDigest  types.String   `tfsdk:"booted_digest"`
	NextBoot      types.String   `tfsdk:"next_boot"`
	Slots         types.List     `tfsdk:"slots"`
	Timeouts      timeouts.Value `tfsdk:"timeouts"`
}

// slotAttrTypes is one element of slots.
var slotAttrTypes = map[string]attr.Type{
	"name":            types.StringType,
	"version":         types.StringType,
	"image":           types.StringType,
	"artifact_digest": types.StringType,
	"bootable":        types.BoolType,
	"booted":          types.BoolType,
	"primary":         types.BoolType,
	"committed":       types.BoolType,
	"last_result":     types.StringType,
	"reason":          types.StringType,
}

func (r *NodeResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_node"
}

func (r *NodeResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	computed := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{MarkdownDescription: desc, Computed: true}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "The operating system of the DebVisor node the provider is connected to. `image` is the " +
			"signed DebVisor OS image (an OCI reference) the node should run. Changing it upgrades the node in place " +
			"through its A/B slots: the agent verifies the image's signature, architecture and version, writes it " +
			"into the inactive slot and reboots into it, and the apply waits (tolerating the agent being " +
			"unreachable during the reboot) until the agent has committed the new slot after its health check. " +
			"When the new slot fails its health check or does not come up, the node returns to the previous slot " +
			"and the apply fails with the reason the agent recorded; the state keeps the previous image.\n\n" +
			"Creating the resource adopts the node: when it already runs `image`, nothing changes (asking the agent " +
			"for the image it runs is a no-op that only records the reference); otherwise it is upgraded as above. " +
			"**Destroying the resource only removes it from the state**: a node's operating system cannot be " +
			"deleted, and the node keeps running what it runs. `timeouts` `create` and `update` default to 30 minutes " +
			"(not the provider's `operation_timeout`): they cover the write, the reboot and the commit.\n\n" +
			"A refresh reads the slots; when the booted slot was written from another reference (an upgrade or " +
			"rollback made with `dvctl`, or an automatic rollback), `image` takes that value and the next plan " +
			"shows the change back. The provider's acceptance tests cover adoption, import, validation and refused " +
			"upgrades against a real agent; the reboot-and-commit path needs a booted DebVisor image and is " +
			"covered by the end-to-end node lifecycle tests (`e2e/`).",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The node's name (the name the agent reports, as in the `debvisor_node` data source). " +
					"Import with it: `terraform import debvisor_node.this NAME`.",
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"image": schema.StringAttribute{
				MarkdownDescription: "OCI reference of the DebVisor OS image the node runs: a signed release index or " +
					"slot artifact, by tag (`HOST/debvisor/os:0.2.0`) or digest (`HOST/debvisor/os@sha256:…`). " +
					"Changing it upgrades the node (in place, never a replacement).",
				Required:   true,
				Validators: []validator.String{ociReferenceValidator{}},
			},
			"force": schema.BoolAttribute{
				MarkdownDescription: "Allow an image whose version is not newer than the booted one (a downgrade, or " +
					"reinstalling the same version from another reference). Default `false`.",
				Optional: true,
				Computed: true,
				Default:  booldefault.StaticBool(false),
			},
			"booted_slot":    computed("The A/B slot the node booted from (`A` or `B`)."),
			"booted_version": computed("DebVisor version of the booted slot."),
			"booted_image": computed("The OCI reference the booted slot was written from, as it was requested; empty " +
				"for a slot the installer or the image build wrote, until an apply records it."),
			"booted_digest": computed("Digest of the slot artifact in the booted slot (`sha256:…`); empty for a slot " +
				"the installer wrote."),
			"next_boot": computed("The slot GRUB boots next."),
			"slots": schema.ListNestedAttribute{
				MarkdownDescription: "Both slots as the agent reports them.",
				Computed:            true,
				NestedObject: schema.NestedAttributeObject{
					Attributes: map[string]schema.Attribute{
						"name":            computed("`A` or `B`."),
						"version":         computed("DebVisor version of the system in the slot; empty when unknown."),
						"image":           computed("The OCI reference the slot was written from; empty when unknown."),
						"artifact_digest": computed("Digest of the slot artifact written into it; empty when unknown."),
						"bootable":        schema.BoolAttribute{MarkdownDescription: "The slot holds a bootable system.", Computed: true},
						"booted":          schema.BoolAttribute{MarkdownDescription: "The running system booted from it.", Computed: true},
						"primary":         schema.BoolAttribute{MarkdownDescription: "First in GRUB's boot order.", Computed: true},
						"committed": schema.BoolAttribute{
							MarkdownDescription: "The last slot whose boot was committed (passed its health check).",
							Computed:            true,
						},
						"last_result": computed("What last happened to the slot: `installed`, `staged`, `committed`, " +
							"`rolled-back`, `health-failed`, `write-failed`."),
						"reason": computed("Why, for a failure (`health check failed within 5m0s: …`)."),
					},
				},
			},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true}),
		},
	}
}

func (r *NodeResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.p = configuredData(req.ProviderData, &resp.Diagnostics)
}

func (r *NodeResource) upgrades() v1.UpgradeServiceClient {
	return v1.NewUpgradeServiceClient(r.p.client.Conn())
}

// nodeName is the name of the node the provider is connected to.
func (r *NodeResource) nodeName(ctx context.Context) (string, error) {
	var n *v1.Node
	err := r.p.read(ctx, "read node", func(ctx context.Context) (err error) {
		n, err = r.p.client.Node.GetNode(ctx, &v1.GetNodeRequest{})
		return err
	})
	return n.GetName(), err
}

// slots reads both slots (retrying as every read does).
func (r *NodeResource) slots(ctx context.Context) (st *v1.SlotStatus, err error) {
	err = r.p.read(ctx, "read slots", func(ctx context.Context) (err error) {
		st, err = r.upgrades().GetSlots(ctx, &v1.GetSlotsRequest{})
		return err
	})
	return st, err
}

// describeSlots explains a failed GetSlots: a node that has no A/B slots says so.
func (r *NodeResource) describeSlots(err error) string {
	if status.Code(err) == codes.FailedPrecondition {
		return fmt.Sprintf("The agent at %s cannot report A/B slots: %s.\n\ndebvisor_node manages nodes booted from a "+
			"DebVisor image; it cannot manage the operating system of another host.", r.p.endpoint, status.Convert(err).Message())
	}
	return describe(r.p.endpoint, err)
}

func (r *NodeResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data NodeResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := data.Timeouts.Create(ctx, defaultUpgradeTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	name, err := r.nodeName(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Read DebVisor node", describe(r.p.endpoint, err))
		return
	}
	st, err := r.slots(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Read node slots", r.describeSlots(err))
		return
	}
	if booted := bootedSlot(st); !sameReference(booted.GetImage(), data.Image.ValueString()) {
		st, err = r.upgrade(ctx, timeout, data.Image.ValueString(), data.Force.ValueBool())
		if err != nil {
			// Nothing to record: the node runs what it ran, and destroying this resource would
			// not have changed it either.
			resp.Diagnostics.AddError("Upgrade node "+name, err.Error())
			return
		}
	}
	data.ID = types.StringValue(name)
	resp.Diagnostics.Append(data.fromAPI(st)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

func (r *NodeResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data NodeResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	name, err := r.nodeName(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Read DebVisor node", describe(r.p.endpoint, err))
		return
	}
	if name != data.ID.ValueString() {
		// Never adopt another node's slots into this resource: its next apply would upgrade it.
		resp.Diagnostics.AddError("Wrong DebVisor node",
			fmt.Sprintf("This resource manages node %q, but the provider is connected to node %q (%s). Point the provider's "+
				"endpoint at %q, or import this node by its name.", data.ID.ValueString(), name, r.p.endpoint, data.ID.ValueString()))
		return
	}
	st, err := r.slots(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Read node slots", r.describeSlots(err))
		return
	}
	resp.Diagnostics.Append(data.fromAPI(st)...)
	// The image is what the booted slot was written from, when the agent knows it: an upgrade or
	// a rollback made without Terraform then shows in the plan. A slot the installer wrote has no
	// reference; the state's (or, after an import, none) stays.
	if img := bootedSlot(st).GetImage(); img != "" && !sameReference(img, data.Image.ValueString()) {
		data.Image = types.StringValue(img)
	}
	if data.Force.IsNull() {
		data.Force = types.BoolValue(false)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

func (r *NodeResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var plan, prior NodeResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := plan.Timeouts.Update(ctx, defaultUpgradeTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	var (
		st  *v1.SlotStatus
		err error
	)
	if !prior.Image.IsNull() && sameReference(prior.Image.ValueString(), plan.Image.ValueString()) {
		// Only force or timeouts changed (or the spelling of the same reference).
		st, err = r.slots(ctx)
		if err != nil {
			resp.Diagnostics.AddError("Read node slots", r.describeSlots(err))
			return
		}
	} else if st, err = r.upgrade(ctx, timeout, plan.Image.ValueString(), plan.Force.ValueBool()); err != nil {
		resp.Diagnostics.AddError("Upgrade node "+prior.ID.ValueString(), err.Error())
		// The node runs what it ran (or is on its way back to it): keep the prior state, with the
		// slots as last seen when there is something to show (the failed slot's reason).
		if st != nil {
			resp.Diagnostics.Append(prior.fromAPI(st)...)
		}
		resp.Diagnostics.Append(resp.State.Set(ctx, &prior)...)
		return
	}
	plan.ID = prior.ID
	resp.Diagnostics.Append(plan.fromAPI(st)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// Delete only forgets the node: its operating system cannot be deleted.
func (r *NodeResource) Delete(ctx context.Context, _ resource.DeleteRequest, _ *resource.DeleteResponse) {
	tflog.Info(ctx, "debvisor_node: removed from the state only; the node keeps running its operating system")
}

// ImportState takes the node's name; Read checks that it is the node the provider talks to and
// sets image from the booted slot.
func (r *NodeResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("force"), false)...)
}

// upgrade installs ref and follows the node until it runs it, committed. It returns the slots as
// last seen, also with an error when there are some.
func (r *NodeResource) upgrade(ctx context.Context, timeout time.Duration, ref string, force bool) (*v1.SlotStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	what := "upgrade to " + ref
	out, err := r.p.run(ctx, timeout, what, func(ctx context.Context) (*v1.Operation, error) {
		return r.upgrades().Upgrade(ctx, &v1.UpgradeRequest{Ref: ref, Mode: v1.UpgradeRequest_MODE_REBOOT, Force: force})
	}, nil)
	if op := out.op; op.GetState() == v1.Operation_STATE_FAILED || op.GetState() == v1.Operation_STATE_CANCELLED {
		// The agent's own words: the operation's code is about the upgrade (an unreachable
		// registry is UNAVAILABLE), not about reaching the agent.
		err = fmt.Errorf("the agent refused or failed the upgrade to %s in its %s phase (operation %s, %s): %s",
			ref, op.GetPhase(), op.GetId(), codes.Code(op.GetErrorCode()), op.GetError())
	}
	if err != nil {
		st, _ := r.lastSlots(ctx)
		return st, err
	}
	if out.op.GetResult()["outcome"] == alreadyRunning {
		st, err := r.slots(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: read the slots: %s", what, r.describeSlots(err))
		}
		return st, nil
	}
	target := out.op.GetResult()["slot"]
	if target == "" {
		return nil, fmt.Errorf("%s: operation %s succeeded but did not say which slot it wrote; check `dvctl slots`", what, out.op.GetId())
	}
	tflog.Info(ctx, what+": slot written; waiting for the node to reboot into it and commit it", map[string]any{"slot": target})
	return r.waitCommitted(ctx, timeout, ref, target)
}

// lastSlots is one GetSlots without retries, for diagnostics.
func (r *NodeResource) lastSlots(ctx context.Context) (*v1.SlotStatus, error) {
	cctx, cancel := r.p.call(ctx)
	defer cancel()
	return r.upgrades().GetSlots(cctx, &v1.GetSlotsRequest{})
}

// waitCommitted polls the slots until slot target is booted and committed, or its record says
// it failed. The node reboots meanwhile: the agent stops answering, then answers again from the
// new slot (or, after a failed boot, from the previous one); every failure to reach it is
// retried until ctx ends.
func (r *NodeResource) waitCommitted(ctx context.Context, timeout time.Duration, ref, target string) (*v1.SlotStatus, error) {
	var (
		last    *v1.SlotStatus
		lastErr error
	)
	for n := 0; ; {
		st, err := r.lastSlots(ctx)
		switch {
		case err == nil:
			last, lastErr = st, nil
			done, err := upgradeDone(st, target)
			if done {
				return st, err
			}
			tflog.Debug(ctx, "waiting for the commit", map[string]any{"slot": target, "booted": st.GetBootedSlot(),
				"last_result": slotNamed(st, target).GetLastResult()})
			n = 3 // the node answers: poll every second or two
		case ctx.Err() == nil && (transient(err) || status.Code(err) == codes.Canceled):
			lastErr = err
			tflog.Debug(ctx, "waiting for the node to come back", map[string]any{"error": err.Error()})
			n++
		default:
			if ctx.Err() == nil {
				return last, fmt.Errorf("upgrade to %s: read the slots: %s", ref, r.describeSlots(err))
			}
		}
		if ctx.Err() != nil || !backoff(ctx, n) {
			seen := "the agent did not answer"
			if lastErr != nil {
				seen += " (" + lastErr.Error() + ")"
			}
			if last != nil && lastErr == nil {
				s := slotNamed(last, target)
				seen = fmt.Sprintf("the node last reported booted slot %s, slot %s last result %q", last.GetBootedSlot(), target, s.GetLastResult())
			}
			return last, fmt.Errorf("upgrade to %s: slot %s was not committed within %s: %s. The upgrade goes on on the node; "+
				"`dvctl slots` shows where it is. Raise timeouts.update (or timeouts.create) if the node needs longer", ref, target, timeout, seen)
		}
	}
}

// upgradeDone reports whether an upgrade into slot target has ended, and how: booted and
// committed, or failed with the reason the agent recorded.
func upgradeDone(st *v1.SlotStatus, target string) (bool, error) {
	s := slotNamed(st, target)
	switch {
	case s == nil:
		return true, fmt.Errorf("the agent reports no slot %q", target)
	case failedResults[s.GetLastResult()]:
		reason := s.GetReason()
		if reason == "" {
			reason = "no reason recorded"
		}
		back := "the node runs slot " + st.GetBootedSlot() + " again"
		if st.GetBootedSlot() == target {
			back = "the node is rolling back to the other slot"
		}
		return true, fmt.Errorf("slot %s (%s) did not take over: %s: %s; %s", target, s.GetVersion(), s.GetLastResult(), reason, back)
	case s.GetBooted() && s.GetCommitted() && s.GetLastResult() == resultCommitted:
		return true, nil
	}
	return false, nil
}

func slotNamed(st *v1.SlotStatus, name string) *v1.Slot {
	for _, s := range st.GetSlots() {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

func bootedSlot(st *v1.SlotStatus) *v1.Slot { return slotNamed(st, st.GetBootedSlot()) }

// fromAPI copies the slots into the computed attributes.
func (m *NodeResourceModel) fromAPI(st *v1.SlotStatus) diag.Diagnostics {
	b := bootedSlot(st)
	m.BootedSlot = types.StringValue(st.GetBootedSlot())
	m.BootedVersion = types.StringValue(b.GetVersion())
	m.BootedImage = types.StringValue(b.GetImage())
	m.BootedDigest = types.StringValue(b.GetArtifactDigest())
	m.NextBoot = types.StringValue(st.GetNextBoot())
	objType := types.ObjectType{AttrTypes: slotAttrTypes}
	var diags diag.Diagnostics
	elems := make([]attr.Value, 0, len(st.GetSlots()))
	for _, s := range st.GetSlots() {
		obj, d := types.ObjectValue(slotAttrTypes, map[string]attr.Value{
			"name":            types.StringValue(s.GetName()),
			"version":         types.StringValue(s.GetVersion()),
			"image":           types.StringValue(s.GetImage()),
			"artifact_digest": types.StringValue(s.GetArtifactDigest()),
			"bootable":        types.BoolValue(s.GetBootable()),
			"booted":          types.BoolValue(s.GetBooted()),
			"primary":         types.BoolValue(s.GetPrimary()),
			"committed":       types.BoolValue(s.GetCommitted()),
			"last_result":     types.StringValue(s.GetLastResult()),
			"reason":          types.StringValue(strings.TrimSpace(s.GetReason())),
		})
		diags.Append(d...)
		elems = append(elems, obj)
	}
	list, d := types.ListValue(objType, elems)
	diags.Append(d...)
	m.Slots = list
	return diags
}
