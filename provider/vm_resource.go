package provider

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
)

var (
	_ resource.ResourceWithConfigure   = &VMResource{}
	_ resource.ResourceWithImportState = &VMResource{}
)

// Limits the agent accepts (api/rules), checked at plan time.
const (
	maxVCPUs     = rules.MaxVCPUs
	minMemoryMiB = rules.MinMemoryMiB
	maxMemoryMiB = rules.MaxMemoryMiB
	maxDisks     = rules.MaxDisks
	maxNICs      = rules.MaxNICs
)

// NewVMResource is the constructor the provider lists.
func NewVMResource() resource.Resource { return &VMResource{} }

// VMResource manages a KVM guest (a libvirt domain) on the node.
type VMResource struct{ p *providerData }

// VMResourceModel is the debvisor_vm resource.
type VMResourceModel struct {
	ID             types.String   `tfsdk:"id"`
	Name           types.String   `tfsdk:"name"`
	VCPUs          types.Int64    `tfsdk:"vcpus"`
	MaxVCPUs       types.Int64    `tfsdk:"max_vcpus"`
	MemoryMiB      types.Int64    `tfsdk:"memory_mib"`
	MaxMemoryMiB   types.Int64    `tfsdk:"max_memory_mib"`
	Firmware       types.String   `tfsdk:"firmware"`
	Autostart      types.Bool     `tfsdk:"autostart"`
	PowerState     types.String   `tfsdk:"power_state"`
	Disks          types.List     `tfsdk:"disks"`
	NICs           types.List     `tfsdk:"nics"`
	CloudInit      types.Object   `tfsdk:"cloud_init"`
	KernelBoot     types.Object   `tfsdk:"kernel_boot"`
	WaitForIP      types.Bool     `tfsdk:"wait_for_ip"`
	UUID           types.String   `tfsdk:"uuid"`
	State          types.String   `tfsdk:"state"`
	Hypervisor     types.String   `tfsdk:"hypervisor"`
	PendingChanges types.List     `tfsdk:"pending_changes"`
	IPAddresses    types.List     `tfsdk:"ip_addresses"`
	Timeouts       timeouts.Value `tfsdk:"timeouts"`
}

type diskModel struct {
	Pool      types.String `tfsdk:"pool"`
	Volume    types.String `tfsdk:"volume"`
	Bus       types.String `tfsdk:"bus"`
	BootOrder types.Int64  `tfsdk:"boot_order"`
	ReadOnly  types.Bool   `tfsdk:"read_only"`
	Target    types.String `tfsdk:"target"`
}

type nicModel struct {
	Type      types.String `tfsdk:"type"`
	Bridge    types.String `tfsdk:"bridge"`
	VLAN      types.Int64  `tfsdk:"vlan"`
	MAC       types.String `tfsdk:"mac"`
	Model     types.String `tfsdk:"model"`
	BootOrder types.Int64  `tfsdk:"boot_order"`
}

type cloudInitModel struct {
	UserData      types.String `tfsdk:"user_data"`
	MetaData      types.String `tfsdk:"meta_data"`
	NetworkConfig types.String `tfsdk:"network_config"`
}

type kernelBootModel struct {
	Kernel  types.String `tfsdk:"kernel"`
	Initrd  types.String `tfsdk:"initrd"`
	Cmdline types.String `tfsdk:"cmdline"`
}

var (
	diskType = types.ObjectType{AttrTypes: map[string]attr.Type{
		"pool": types.StringType, "volume": types.StringType, "bus": types.StringType,
		"boot_order": types.Int64Type, "read_only": types.BoolType, "target": types.StringType,
	}}
	nicType = types.ObjectType{AttrTypes: map[string]attr.Type{
		"type": types.StringType, "bridge": types.StringType, "vlan": types.Int64Type,
		"mac": types.StringType, "model": types.StringType, "boot_order": types.Int64Type,
	}}
	cloudInitType = types.ObjectType{AttrTypes: map[string]attr.Type{
		"user_data": types.StringType, "meta_data": types.StringType, "network_config": types.StringType,
	}}
	kernelBootType = types.ObjectType{AttrTypes: map[string]attr.Type{
		"kernel": types.StringType, "initrd": types.StringType, "cmdline": types.StringType,
	}}
)

func (r *VMResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_vm"
}

func (r *VMResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	bootOrder := schema.Int64Attribute{
		MarkdownDescription: "Boot priority, 1 first; `0` (the default) means not bootable. Unique among disks and NICs.",
		Optional:            true,
		Computed:            true,
		Default:             int64default.StaticInt64(0),
		Validators:          []validator.Int64{int64validator.Between(0, 64)},
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A KVM virtual machine (libvirt domain) on the node. Almost everything changes in place: " +
			"vCPUs and memory (live up to `max_vcpus`/`max_memory_mib`, else at the next power cycle, listed in " +
			"`pending_changes`), disks and NICs (hot-plugged on a running guest), kernel boot, autostart and the power " +
			"state. Only `name`, `firmware` and `cloud_init` force a new VM. Reads never wait on the guest: " +
			"`ip_addresses` holds what the node knows at that moment, and `wait_for_ip` waits only while creating.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The VM's name.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				MarkdownDescription: "The VM's name: 1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.",
				Required:            true,
				Validators:          nameValidators(),
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"vcpus": schema.Int64Attribute{
				MarkdownDescription: fmt.Sprintf("Number of vCPUs, 1-%d.", maxVCPUs),
				Required:            true,
				Validators:          []validator.Int64{int64validator.Between(1, maxVCPUs)},
			},
			"max_vcpus": schema.Int64Attribute{
				MarkdownDescription: "Hot-plug ceiling: a running guest can get vCPUs up to this number without a restart. Defaults to `vcpus`.",
				Optional:            true,
				Computed:            true,
				Validators:          []validator.Int64{int64validator.Between(1, maxVCPUs), int64validator.AtLeastSumOf(path.MatchRoot("vcpus"))},
				PlanModifiers:       []planmodifier.Int64{defaultFromAttr{attr: "vcpus"}},
			},
			"memory_mib": schema.Int64Attribute{
				MarkdownDescription: fmt.Sprintf("Memory in MiB, %d-%d.", minMemoryMiB, maxMemoryMiB),
				Required:            true,
				Validators:          []validator.Int64{int64validator.Between(minMemoryMiB, maxMemoryMiB)},
			},
			"max_memory_mib": schema.Int64Attribute{
				MarkdownDescription: "Memory ceiling: a running guest's memory changes live (balloon) up to this value. Defaults to `memory_mib`.",
				Optional:            true,
				Computed:            true,
				Validators:          []validator.Int64{int64validator.Between(minMemoryMiB, maxMemoryMiB), int64validator.AtLeastSumOf(path.MatchRoot("memory_mib"))},
				PlanModifiers:       []planmodifier.Int64{defaultFromAttr{attr: "memory_mib"}},
			},
			"firmware": schema.StringAttribute{
				MarkdownDescription: "`bios` (SeaBIOS, the default) or `uefi` (OVMF, with per-VM NVRAM). Changing it replaces the VM.",
				Optional:            true,
				Computed:            true,
				Default:             stringdefault.StaticString("bios"),
				Validators:          []validator.String{stringvalidator.OneOf(firmwares.words()...)},
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"autostart": schema.BoolAttribute{
				MarkdownDescription: "Start the VM when the node boots. Default `true`.",
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(true),
			},
			"power_state": schema.StringAttribute{
				MarkdownDescription: "Desired power state: `running` (the default) or `stopped`. Read back from the guest's actual " +
					"state, so a VM stopped behind Terraform's back shows up in the next plan.",
				Optional:   true,
				Computed:   true,
				Default:    stringdefault.StaticString("running"),
				Validators: []validator.String{stringvalidator.OneOf(powerStates.words()...)},
			},
			"disks": schema.ListNestedAttribute{
				MarkdownDescription: fmt.Sprintf("Disks, in order (at most %d). Each is a volume that must exist. Adding or removing "+
					"one is an in-place update (hot-plug when running).", maxDisks),
				Optional:   true,
				Validators: []validator.List{listvalidator.SizeAtMost(maxDisks)},
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"pool": schema.StringAttribute{
						MarkdownDescription: "Pool of the volume.", Required: true, Validators: nameValidators(),
					},
					"volume": schema.StringAttribute{
						MarkdownDescription: "Name of the volume.", Required: true, Validators: nameValidators(),
					},
					"bus": schema.StringAttribute{
						MarkdownDescription: "Disk bus: " + quoted(diskBuses.words()) + ". Default `virtio`.",
						Optional:            true,
						Computed:            true,
						Default:             stringdefault.StaticString("virtio"),
						Validators:          []validator.String{stringvalidator.OneOf(diskBuses.words()...)},
					},
					"boot_order": bootOrder,
					"read_only": schema.BoolAttribute{
						MarkdownDescription: "Attach read-only. Default `false`.",
						Optional:            true,
						Computed:            true,
						Default:             booldefault.StaticBool(false),
					},
					"target": schema.StringAttribute{
						MarkdownDescription: "Guest device name (`vda`, `sdb`…), assigned by the node and kept across updates.",
						Computed:            true,
						PlanModifiers:       []planmodifier.String{diskTargetFromState{}},
					},
				}},
			},
			"nics": schema.ListNestedAttribute{
				MarkdownDescription: fmt.Sprintf("Network interfaces, in order (at most %d). Adding or removing one is an in-place update.", maxNICs),
				Optional:            true,
				Validators:          []validator.List{listvalidator.SizeAtMost(maxNICs)},
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"type": schema.StringAttribute{
						MarkdownDescription: "`user` (QEMU user-mode networking, no host setup; the default) or `bridge` (an existing bridge on the node).",
						Optional:            true,
						Computed:            true,
						Default:             stringdefault.StaticString("user"),
						Validators:          []validator.String{stringvalidator.OneOf(nicTypes.words()...)},
					},
					"bridge": schema.StringAttribute{
						MarkdownDescription: "`bridge`: the bridge's name.",
						Optional:            true,
						Validators:          []validator.String{stringvalidator.LengthBetween(1, 15)},
					},
					"vlan": schema.Int64Attribute{
						MarkdownDescription: "`bridge`: 802.1Q tag 1-4094, `0` (the default) for untagged.",
						Optional:            true,
						Computed:            true,
						Default:             int64default.StaticInt64(0),
						Validators:          []validator.Int64{int64validator.Between(0, 4094)},
					},
					"mac": schema.StringAttribute{
						MarkdownDescription: "Unicast MAC; generated by the node when unset, then kept.",
						Optional:            true,
						Computed:            true,
						PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
					},
					"model": schema.StringAttribute{
						MarkdownDescription: "Device model: `virtio` (the default), `e1000`, `e1000e` or `rtl8139`.",
						Optional:            true,
						Computed:            true,
						Default:             stringdefault.StaticString("virtio"),
						Validators:          []validator.String{stringvalidator.OneOf("virtio", "e1000", "e1000e", "rtl8139")},
					},
					"boot_order": bootOrder,
				}},
			},
			"cloud_init": schema.SingleNestedAttribute{
				MarkdownDescription: "cloud-init NoCloud documents, served to the guest on a seed CD-ROM. cloud-init reads them on " +
					"first boot only, so changing them replaces the VM.",
				Optional:      true,
				PlanModifiers: []planmodifier.Object{objectplanmodifier.RequiresReplace()},
				Attributes: map[string]schema.Attribute{
					"user_data":      schema.StringAttribute{MarkdownDescription: "user-data (`#cloud-config` …).", Optional: true},
					"meta_data":      schema.StringAttribute{MarkdownDescription: "meta-data; instance-id and local-hostname default to the VM's uuid and name.", Optional: true},
					"network_config": schema.StringAttribute{MarkdownDescription: "network-config (version 2).", Optional: true},
				},
			},
			"kernel_boot": schema.SingleNestedAttribute{
				MarkdownDescription: "Direct kernel boot instead of the firmware's boot order; paths are on the node.",
				Optional:            true,
				Attributes: map[string]schema.Attribute{
					"kernel":  schema.StringAttribute{MarkdownDescription: "Kernel image path.", Required: true},
					"initrd":  schema.StringAttribute{MarkdownDescription: "Initrd path.", Optional: true},
					"cmdline": schema.StringAttribute{MarkdownDescription: "Kernel command line.", Optional: true},
				},
			},
			"wait_for_ip": schema.BoolAttribute{
				MarkdownDescription: "When creating, wait (within the create timeout) until the guest reports an IP address " +
					"(qemu-guest-agent or DHCP lease). Refreshes never wait. Default `false`.",
				Optional: true,
				Computed: true,
				Default:  booldefault.StaticBool(false),
			},
			"uuid": schema.StringAttribute{
				MarkdownDescription: "libvirt's domain UUID, stable across updates.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"state": schema.StringAttribute{
				MarkdownDescription: "The guest's actual state: " + quoted(vmStates.words()) + ".",
				Computed:            true,
			},
			"hypervisor": schema.StringAttribute{
				MarkdownDescription: "`kvm`, or `qemu` when the node has no usable KVM and emulates.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"pending_changes": schema.ListAttribute{
				MarkdownDescription: "Changes in the definition the running guest does not have yet; they apply at the next power cycle.",
				ElementType:         types.StringType,
				Computed:            true,
			},
			"ip_addresses": schema.ListAttribute{
				MarkdownDescription: "IP addresses the node knows for the guest (without waiting).",
				ElementType:         types.StringType,
				Computed:            true,
			},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *VMResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.p = configuredData(req.ProviderData, &resp.Diagnostics)
}

func (r *VMResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data VMResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := data.Timeouts.Create(ctx, r.p.operationTimeout)
	resp.Diagnostics.Append(diags...)
	spec := data.toSpec(ctx, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	name := data.Name.ValueString()
	deadline := time.Now().Add(timeout)
	// One request id for every attempt of this create: a resend after a lost answer (agent
	// restarted, request timed out) gets the first attempt's VM, never a second one. Until the
	// create is seen through, the record is unconfirmed: the VM of that name is this resource's
	// only if it carries the request id (see confirm), so a failure never adopts another's VM.
	rec := createRecord{RequestID: uuid.NewString(), Unconfirmed: true}
	// keep records the VM in state: from then on any error taints it (replaced by the next apply)
	// instead of losing it.
	keep := func() {
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), name)...)
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), name)...)
		resp.Diagnostics.Append(rec.save(ctx, resp.Private)...)
	}
	out, err := r.p.run(ctx, timeout, "create VM "+name, func(ctx context.Context) (*v1.Operation, error) {
		return r.p.client.VMs.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: name, Spec: spec}, RequestId: rec.RequestID})
	}, func(op *v1.Operation) {
		rec.Operation = op.GetId()
		keep()
	})
	if err != nil {
		switch {
		case out.refused():
			// Another request's VM took the name: not ours, never in this state.
			resp.State.RemoveResource(ctx)
		case out.accepted:
			r.keepWhatCanBeRead(ctx, name, rec, &data, resp)
		case out.unsure:
			// No answer, but the request may have arrived: keep the VM as unconfirmed. The next
			// refresh adopts it only if the node's VM carries this request id, else forgets it.
			keep()
		}
		resp.Diagnostics.AddError("Create VM", err.Error())
		return
	}
	rec.Unconfirmed, rec.Operation = false, ""
	resp.Diagnostics.Append(rec.save(ctx, resp.Private)...)
	var addrs []*v1.VMAddress
	if data.WaitForIP.ValueBool() && spec.GetPowerState() != v1.PowerState_POWER_STATE_STOPPED {
		addrs, err = r.waitForIP(ctx, name, time.Until(deadline))
		if err != nil {
			r.keepWhatCanBeRead(ctx, name, rec, &data, resp)
			resp.Diagnostics.AddError("Wait for the VM's IP address", err.Error())
			return
		}
	}
	var readDiags diag.Diagnostics
	if !r.readInto(ctx, name, &data, addrs, &readDiags) && !readDiags.HasError() {
		readDiags.AddError("Read VM after create", "VM "+name+" was created but is gone: something deleted it meanwhile")
	}
	resp.Diagnostics.Append(readDiags...)
	if readDiags.HasError() {
		return // the id is in state: tainted, replaced next time
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

// keepWhatCanBeRead replaces the id-only state of a VM whose create failed after the agent
// accepted it with whatever a read returns now, if the node's VM is the one this create made; the
// resource stays tainted either way.
func (r *VMResource) keepWhatCanBeRead(ctx context.Context, name string, rec createRecord, data *VMResourceModel, resp *resource.CreateResponse) {
	vm, err := r.get(ctx, name)
	if err != nil || vm.GetStatus().GetCreateRequestId() != rec.RequestID {
		return
	}
	if d := data.fromAPI(ctx, vm, nil); !d.HasError() {
		resp.Diagnostics.Append(resp.State.Set(ctx, data)...)
	}
}

func (r *VMResource) waitForIP(ctx context.Context, name string, wait time.Duration) ([]*v1.VMAddress, error) {
	if wait <= 0 {
		return nil, fmt.Errorf("no time left in the create timeout to wait for an address")
	}
	if wait > 10*time.Minute {
		wait = 10 * time.Minute // the API's maximum per call
	}
	ctx, cancel := context.WithTimeout(ctx, wait+r.p.requestTimeout)
	defer cancel()
	res, err := r.p.client.VMs.GetVMAddresses(ctx, &v1.GetVMAddressesRequest{Name: name, WaitTimeout: durationpb.New(wait)})
	if status.Code(err) == codes.DeadlineExceeded {
		return nil, &apiError{err: err, msg: fmt.Sprintf("VM %s reported no IP address within the create timeout: %s\n\n"+
			"Raise timeouts.create, or make sure the guest runs qemu-guest-agent or gets a DHCP lease; "+
			"the VM was created and will be replaced on the next apply (tainted).", name, status.Convert(err).Message())}
	}
	if err != nil {
		return nil, &apiError{msg: "VM " + name + ": " + describe(r.p.endpoint, err), err: err}
	}
	return res.GetAddresses(), nil
}

// readInto fetches the VM and fills the model; extra addresses (from waitForIP) are added to
// what the node reports.
func (r *VMResource) readInto(ctx context.Context, name string, data *VMResourceModel, extra []*v1.VMAddress, diags *diag.Diagnostics) (found bool) {
	vm, err := r.get(ctx, name)
	if isNotFound(err) {
		return false
	}
	if err != nil {
		diags.AddError("Read VM", describe(r.p.endpoint, err))
		return false
	}
	diags.Append(data.fromAPI(ctx, vm, extra)...)
	return true
}

func (r *VMResource) get(ctx context.Context, name string) (vm *v1.VM, err error) {
	err = r.p.read(ctx, "read VM "+name, func(ctx context.Context) (err error) {
		vm, err = r.p.client.VMs.GetVM(ctx, &v1.GetVMRequest{Name: name})
		return err
	})
	return vm, err
}

func (r *VMResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data VMResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	rec, diags := loadCreateRecord(ctx, req.Private)
	resp.Diagnostics.Append(diags...)
	r.p.settle(ctx, rec)
	if rec.Unconfirmed {
		r.confirm(ctx, rec, &data, resp)
		return
	}
	if !r.readInto(ctx, data.Name.ValueString(), &data, nil, &resp.Diagnostics) {
		if !resp.Diagnostics.HasError() {
			// Deleted behind our back: the plan recreates it.
			resp.State.RemoveResource(ctx)
		}
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

// confirm settles a VM whose create got no answer: it is this provider's VM only if the node's
// VM of that name was made by the same request id. Otherwise (no such VM, or another's) it leaves
// the state; a VM someone else made is never adopted.
func (r *VMResource) confirm(ctx context.Context, rec createRecord, data *VMResourceModel, resp *resource.ReadResponse) {
	name := data.Name.ValueString()
	vm, err := r.get(ctx, name)
	switch {
	case isNotFound(err):
		resp.State.RemoveResource(ctx)
		return
	case err != nil:
		resp.Diagnostics.AddError("Read VM", describe(r.p.endpoint, err))
		return
	case vm.GetStatus().GetCreateRequestId() != rec.RequestID:
		resp.Diagnostics.AddWarning("VM not adopted",
			fmt.Sprintf("VM %s exists on the node but was not made by this configuration's interrupted create; "+
				"it is left alone and removed from the state (import it to manage it).", name))
		resp.State.RemoveResource(ctx)
		return
	}
	resp.Diagnostics.Append(data.fromAPI(ctx, vm, nil)...)
	rec.Unconfirmed, rec.Operation = false, ""
	resp.Diagnostics.Append(rec.save(ctx, resp.Private)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, data)...)
}

// Update sends the whole desired spec; the agent applies what it can live and the rest at the
// next power cycle (pending_changes), and brings the power state to the desired one.
func (r *VMResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data VMResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := data.Timeouts.Update(ctx, r.p.operationTimeout)
	resp.Diagnostics.Append(diags...)
	spec := data.toSpec(ctx, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	name := data.Name.ValueString()
	_, err := r.p.run(ctx, timeout, "update VM "+name, func(ctx context.Context) (*v1.Operation, error) {
		return r.p.client.VMs.UpdateVM(ctx, &v1.UpdateVMRequest{Name: name, Spec: spec})
	}, nil)
	if err != nil {
		resp.Diagnostics.AddError("Update VM", err.Error())
		return
	}
	if !r.readInto(ctx, name, &data, nil, &resp.Diagnostics) && !resp.Diagnostics.HasError() {
		resp.Diagnostics.AddError("Update VM", "VM "+name+" disappeared during the update")
	}
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &data)...)
}

func (r *VMResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !configured(r.p, &resp.Diagnostics) {
		return
	}
	var data VMResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := data.Timeouts.Delete(ctx, r.p.operationTimeout)
	resp.Diagnostics.Append(diags...)
	rec, diags := loadCreateRecord(ctx, req.Private)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	name := data.Name.ValueString()
	r.p.settle(ctx, rec)
	if rec.Unconfirmed {
		// Destroyed without a refresh (-refresh=false) after a create that got no answer: delete
		// the node's VM only if that create made it.
		vm, err := r.get(ctx, name)
		if isNotFound(err) || err == nil && vm.GetStatus().GetCreateRequestId() != rec.RequestID {
			return
		}
		if err != nil {
			resp.Diagnostics.AddError("Delete VM", describe(r.p.endpoint, err))
			return
		}
	}
	_, err := r.p.run(ctx, timeout, "delete VM "+name, func(ctx context.Context) (*v1.Operation, error) {
		return r.p.client.VMs.DeleteVM(ctx, &v1.DeleteVMRequest{Name: name})
	}, nil)
	if err != nil && !isNotFound(err) {
		resp.Diagnostics.AddError("Delete VM", err.Error())
	}
}

// ImportState takes the VM's name. wait_for_ip gets its default.
func (r *VMResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if rules.CheckName(req.ID) != nil {
		resp.Diagnostics.AddError("Invalid import ID", fmt.Sprintf("%q is not a VM name", req.ID))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), req.ID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("wait_for_ip"), false)...)
}

// toSpec builds the API spec from a fully known plan.
func (m *VMResourceModel) toSpec(ctx context.Context, diags *diag.Diagnostics) *v1.VMSpec {
	s := &v1.VMSpec{
		Vcpus:        int32(m.VCPUs.ValueInt64()),
		MaxVcpus:     int32(m.MaxVCPUs.ValueInt64()),
		MemoryMib:    m.MemoryMiB.ValueInt64(),
		MaxMemoryMib: m.MaxMemoryMiB.ValueInt64(),
		Firmware:     firmwares.value(m.Firmware.ValueString()),
		Autostart:    m.Autostart.ValueBool(),
		PowerState:   powerStates.value(m.PowerState.ValueString()),
	}
	var disks []diskModel
	diags.Append(m.Disks.ElementsAs(ctx, &disks, true)...)
	for _, d := range disks {
		s.Disks = append(s.Disks, &v1.Disk{
			Pool: d.Pool.ValueString(), Volume: d.Volume.ValueString(), Bus: diskBuses.value(d.Bus.ValueString()),
			BootOrder: int32(d.BootOrder.ValueInt64()), ReadOnly: d.ReadOnly.ValueBool(),
		})
	}
	var nics []nicModel
	diags.Append(m.NICs.ElementsAs(ctx, &nics, true)...)
	for _, n := range nics {
		s.Nics = append(s.Nics, &v1.NIC{
			Type: nicTypes.value(n.Type.ValueString()), Bridge: n.Bridge.ValueString(), Vlan: int32(n.VLAN.ValueInt64()),
			Mac: n.MAC.ValueString(), Model: n.Model.ValueString(), BootOrder: int32(n.BootOrder.ValueInt64()),
		})
	}
	if !m.CloudInit.IsNull() && !m.CloudInit.IsUnknown() {
		var ci cloudInitModel
		diags.Append(m.CloudInit.As(ctx, &ci, objectAsOptions)...)
		s.CloudInit = &v1.CloudInit{UserData: ci.UserData.ValueString(), MetaData: ci.MetaData.ValueString(), NetworkConfig: ci.NetworkConfig.ValueString()}
	}
	if !m.KernelBoot.IsNull() && !m.KernelBoot.IsUnknown() {
		var kb kernelBootModel
		diags.Append(m.KernelBoot.As(ctx, &kb, objectAsOptions)...)
		s.KernelBoot = &v1.KernelBoot{Kernel: kb.Kernel.ValueString(), Initrd: kb.Initrd.ValueString(), Cmdline: kb.Cmdline.ValueString()}
	}
	return s
}

// fromAPI fills the model from what the node reports. Optional blocks the node reports empty stay
// null when they were null, so configurations that leave them out plan no change.
func (m *VMResourceModel) fromAPI(ctx context.Context, vm *v1.VM, extra []*v1.VMAddress) diag.Diagnostics {
	var diags diag.Diagnostics
	s, st := vm.GetSpec(), vm.GetStatus()
	m.ID = types.StringValue(vm.GetName())
	m.Name = types.StringValue(vm.GetName())
	m.VCPUs = types.Int64Value(int64(s.GetVcpus()))
	m.MaxVCPUs = types.Int64Value(int64(s.GetMaxVcpus()))
	m.MemoryMiB = types.Int64Value(s.GetMemoryMib())
	m.MaxMemoryMiB = types.Int64Value(s.GetMaxMemoryMib())
	m.Firmware = types.StringValue(firmwares.word(s.GetFirmware()))
	m.Autostart = types.BoolValue(s.GetAutostart())
	// The actual state, not the recorded wish: drift in power shows in the plan.
	switch st.GetState() {
	case v1.VMStatus_STATE_STOPPED, v1.VMStatus_STATE_CRASHED, v1.VMStatus_STATE_UNSPECIFIED:
		m.PowerState = types.StringValue("stopped")
	default:
		m.PowerState = types.StringValue("running")
	}
	if m.WaitForIP.IsNull() || m.WaitForIP.IsUnknown() {
		m.WaitForIP = types.BoolValue(false)
	}

	disks := make([]diskModel, 0, len(s.GetDisks()))
	for _, d := range s.GetDisks() {
		disks = append(disks, diskModel{
			Pool: types.StringValue(d.GetPool()), Volume: types.StringValue(d.GetVolume()),
			Bus: types.StringValue(diskBuses.word(d.GetBus())), BootOrder: types.Int64Value(int64(d.GetBootOrder())),
			ReadOnly: types.BoolValue(d.GetReadOnly()), Target: types.StringValue(d.GetTarget()),
		})
	}
	m.Disks = nestedList(ctx, diskType, disks, m.Disks, &diags)
	nics := make([]nicModel, 0, len(s.GetNics()))
	for _, n := range s.GetNics() {
		nm := nicModel{
			Type: types.StringValue(nicTypes.word(n.GetType())), Bridge: types.StringNull(), VLAN: types.Int64Value(int64(n.GetVlan())),
			MAC: types.StringValue(n.GetMac()), Model: types.StringValue(n.GetModel()), BootOrder: types.Int64Value(int64(n.GetBootOrder())),
		}
		if n.GetBridge() != "" {
			nm.Bridge = types.StringValue(n.GetBridge())
		}
		nics = append(nics, nm)
	}
	m.NICs = nestedList(ctx, nicType, nics, m.NICs, &diags)

	if ci := s.GetCloudInit(); ci != nil {
		v, d := types.ObjectValueFrom(ctx, cloudInitType.AttrTypes, cloudInitModel{
			UserData: optString(ci.GetUserData(), types.StringNull()), MetaData: optString(ci.GetMetaData(), types.StringNull()),
			NetworkConfig: optString(ci.GetNetworkConfig(), types.StringNull()),
		})
		diags.Append(d...)
		m.CloudInit = v
	} else {
		m.CloudInit = types.ObjectNull(cloudInitType.AttrTypes)
	}
	if kb := s.GetKernelBoot(); kb != nil {
		v, d := types.ObjectValueFrom(ctx, kernelBootType.AttrTypes, kernelBootModel{
			Kernel: types.StringValue(kb.GetKernel()), Initrd: optString(kb.GetInitrd(), types.StringNull()),
			Cmdline: optString(kb.GetCmdline(), types.StringNull()),
		})
		diags.Append(d...)
		m.KernelBoot = v
	} else {
		m.KernelBoot = types.ObjectNull(kernelBootType.AttrTypes)
	}

	m.UUID = types.StringValue(st.GetUuid())
	m.State = types.StringValue(vmStates.word(st.GetState()))
	m.Hypervisor = types.StringValue(st.GetHypervisor())
	m.PendingChanges = stringList(st.GetPendingChanges(), types.ListUnknown(types.StringType))
	if m.PendingChanges.IsNull() {
		m.PendingChanges = types.ListValueMust(types.StringType, nil)
	}
	seen := map[string]bool{}
	ips := []string{}
	for _, a := range append(st.GetAddresses(), extra...) {
		if ip := a.GetIp(); ip != "" && !seen[ip] {
			seen[ip] = true
			ips = append(ips, ip)
		}
	}
	m.IPAddresses = stringList(ips, types.ListUnknown(types.StringType))
	if m.IPAddresses.IsNull() {
		m.IPAddresses = types.ListValueMust(types.StringType, nil)
	}
	return diags
}

// nestedList turns elements into a list value; an empty result stays null when prev was null.
func nestedList[T any](ctx context.Context, t types.ObjectType, elems []T, prev types.List, diags *diag.Diagnostics) types.List {
	if len(elems) == 0 && (prev.IsNull() || prev.IsUnknown()) {
		return types.ListNull(t)
	}
	v, d := types.ListValueFrom(ctx, t, elems)
	diags.Append(d...)
	return v
}
