package dvctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
)

// mutate starts an operation with call and, unless noWait, follows it to
// its end like `dvctl operation wait` (for up to 30 minutes).
func (g *globals) mutate(cmd *cobra.Command, noWait bool, call func(context.Context, *client.Client) (*v1.Operation, error)) error {
	return g.mutateFor(cmd, noWait, 30*time.Minute, call)
}

// mutateFor is mutate with the wait bounded by waitFor.
func (g *globals) mutateFor(cmd *cobra.Command, noWait bool, waitFor time.Duration, call func(context.Context, *client.Client) (*v1.Operation, error)) error {
	f, err := g.format()
	if err != nil {
		return err
	}
	c, err := g.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := g.callCtx(cmd.Context())
	defer cancel()
	op, err := call(ctx, c)
	if err != nil {
		return err
	}
	if noWait {
		return printOperation(g, f, op)
	}
	return g.waitAndPrint(cmd, c, op, f, waitFor)
}

// read runs a unary read and prints its result.
func read[T proto.Message](g *globals, cmd *cobra.Command, call func(context.Context, *client.Client) (T, error), table func(*tabwriter.Writer, T)) error {
	f, err := g.format()
	if err != nil {
		return err
	}
	c, err := g.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := g.callCtx(cmd.Context())
	defer cancel()
	m, err := call(ctx, c)
	if err != nil {
		return err
	}
	return printProto(g.stdout, f, m, func(w *tabwriter.Writer) { table(w, m) })
}

func lowerEnum(s, prefix string) string { return strings.ToLower(strings.TrimPrefix(s, prefix)) }

func newVMCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Manage virtual machines (KVM guests)",
	}
	var noWait bool
	cmd.PersistentFlags().BoolVar(&noWait, "no-wait", false, "print the operation at once instead of waiting for it")

	list := &cobra.Command{
		Use: "list", Short: "List VMs", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.ListVMsResponse, error) {
				return c.VMs.ListVMs(ctx, &v1.ListVMsRequest{})
			}, func(w *tabwriter.Writer, r *v1.ListVMsResponse) {
				fmt.Fprintln(w, "NAME\tSTATE\tVCPUS\tMEMORY\tDISKS\tNICS\tPENDING\tUUID")
				for _, vm := range r.GetVms() {
					s := vm.GetSpec()
					fmt.Fprintf(w, "%s\t%s\t%d\t%dMiB\t%d\t%d\t%d\t%s\n", vm.GetName(), lowerEnum(vm.GetStatus().GetState().String(), "STATE_"),
						s.GetVcpus(), s.GetMemoryMib(), len(s.GetDisks()), len(s.GetNics()), len(vm.GetStatus().GetPendingChanges()), vm.GetStatus().GetUuid())
				}
			})
		},
	}
	get := &cobra.Command{
		Use: "get NAME", Short: "Show a VM's spec and status", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.VM, error) {
				return c.VMs.GetVM(ctx, &v1.GetVMRequest{Name: args[0]})
			}, vmTable)
		},
	}

	var sf specFlags
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create (and start) a VM",
		Example: `  dvctl vm create web-1 --vcpus 2 --memory 2GiB --disk default/web-1.qcow2:boot=1 --nic bridge=br0,vlan=10 --user-data cloud.yaml
  dvctl vm create tiny --memory 64MiB --nic user --stopped
  dvctl vm create web-2 -f web-2.yaml     # a VMSpec in YAML or JSON`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec := &v1.VMSpec{Vcpus: 1, MemoryMib: 512}
			if err := sf.apply(cmd, spec); err != nil {
				return err
			}
			return g.mutate(cmd, noWait, func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
				return c.VMs.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: args[0], Spec: spec}})
			})
		},
	}
	sf.register(create, true)

	var uf specFlags
	update := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a VM in place (live where possible, else at the next power cycle)",
		Example: `  dvctl vm update web-1 --vcpus 4 --memory 4GiB
  dvctl vm update web-1 --add-disk default/data.qcow2 --remove-nic 52:54:00:12:34:56
  dvctl vm update web-1 -f web-1.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.dial()
			if err != nil {
				return err
			}
			ctx, cancel := g.callCtx(cmd.Context())
			cur, err := c.VMs.GetVM(ctx, &v1.GetVMRequest{Name: args[0]})
			cancel()
			c.Close()
			if err != nil {
				return err
			}
			spec := cur.GetSpec()
			if err := uf.apply(cmd, spec); err != nil {
				return err
			}
			return g.mutate(cmd, noWait, func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
				return c.VMs.UpdateVM(ctx, &v1.UpdateVMRequest{Name: args[0], Spec: spec})
			})
		},
	}
	uf.register(update, false)

	simple := func(use, short string, call func(context.Context, *client.Client, string) (*v1.Operation, error)) *cobra.Command {
		return &cobra.Command{
			Use: use + " NAME", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return g.mutate(cmd, noWait, func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
					return call(ctx, c, args[0])
				})
			},
		}
	}
	start := simple("start", "Start a VM", func(ctx context.Context, c *client.Client, n string) (*v1.Operation, error) {
		return c.VMs.StartVM(ctx, &v1.StartVMRequest{Name: n})
	})
	var (
		stopTimeout time.Duration
		force       bool
	)
	stop := simple("stop", "Shut a VM down (ACPI, then forced after --grace)", func(ctx context.Context, c *client.Client, n string) (*v1.Operation, error) {
		return c.VMs.StopVM(ctx, &v1.StopVMRequest{Name: n, Timeout: durationpb.New(stopTimeout), Force: force})
	})
	stop.Flags().DurationVar(&stopTimeout, "grace", 60*time.Second, "how long the guest may take to shut down before it is forced off")
	stop.Flags().BoolVar(&force, "force", false, "power off at once")
	var rebootForce bool
	reboot := simple("reboot", "Reboot a VM", func(ctx context.Context, c *client.Client, n string) (*v1.Operation, error) {
		return c.VMs.RebootVM(ctx, &v1.RebootVMRequest{Name: n, Force: rebootForce})
	})
	reboot.Flags().BoolVar(&rebootForce, "force", false, "reset instead of asking the guest")
	del := simple("delete", "Delete a VM (its volumes stay)", func(ctx context.Context, c *client.Client, n string) (*v1.Operation, error) {
		return c.VMs.DeleteVM(ctx, &v1.DeleteVMRequest{Name: n})
	})

	console := &cobra.Command{
		Use:   "console NAME",
		Short: "Stream a VM's serial console to the terminal (Ctrl-C ends)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			s, err := c.VMs.StreamConsole(cmd.Context(), &v1.StreamConsoleRequest{Name: args[0]})
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "Connected to the console of %s (output only; Ctrl-C to leave).\n", args[0])
			for {
				msg, err := s.Recv()
				if errors.Is(err, io.EOF) || cmd.Context().Err() != nil {
					return nil
				}
				if err != nil {
					return err
				}
				if _, err := g.stdout.Write(msg.GetData()); err != nil {
					return err
				}
			}
		},
	}
	var wait time.Duration
	addrs := &cobra.Command{
		Use: "addresses NAME", Short: "Show a VM's IP addresses, waiting for one", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g.timeout = max(g.timeout, wait+10*time.Second)
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.GetVMAddressesResponse, error) {
				return c.VMs.GetVMAddresses(ctx, &v1.GetVMAddressesRequest{Name: args[0], WaitTimeout: durationpb.New(wait)})
			}, func(w *tabwriter.Writer, r *v1.GetVMAddressesResponse) {
				fmt.Fprintln(w, "INTERFACE\tMAC\tADDRESS\tSOURCE")
				for _, a := range r.GetAddresses() {
					fmt.Fprintf(w, "%s\t%s\t%s/%d\t%s\n", a.GetInterface(), a.GetMac(), a.GetIp(), a.GetPrefix(), lowerEnum(a.GetSource().String(), "SOURCE_"))
				}
			})
		},
	}
	addrs.Flags().DurationVar(&wait, "wait", time.Minute, "how long to wait for an address (0: what is known now)")

	cmd.AddCommand(list, get, create, update, start, stop, reboot, del, console, addrs)
	return cmd
}

func vmTable(w *tabwriter.Writer, vm *v1.VM) {
	s, st := vm.GetSpec(), vm.GetStatus()
	fmt.Fprintf(w, "NAME:\t%s\nUUID:\t%s\nSTATE:\t%s (want %s)\nHYPERVISOR:\t%s\nVCPUS:\t%d (max %d)\nMEMORY:\t%d MiB (max %d)\nFIRMWARE:\t%s\nAUTOSTART:\t%v\n",
		vm.GetName(), st.GetUuid(), lowerEnum(st.GetState().String(), "STATE_"), lowerEnum(s.GetPowerState().String(), "POWER_STATE_"),
		dash(st.GetHypervisor()), s.GetVcpus(), s.GetMaxVcpus(), s.GetMemoryMib(), s.GetMaxMemoryMib(), lowerEnum(s.GetFirmware().String(), "FIRMWARE_"), s.GetAutostart())
	for _, d := range s.GetDisks() {
		fmt.Fprintf(w, "DISK %s:\t%s/%s bus=%s boot=%d ro=%v\n", d.GetTarget(), d.GetPool(), d.GetVolume(), lowerEnum(d.GetBus().String(), "BUS_"), d.GetBootOrder(), d.GetReadOnly())
	}
	for _, n := range s.GetNics() {
		where := "user"
		if n.GetType() == v1.NIC_TYPE_BRIDGE {
			where = "bridge " + n.GetBridge()
			if n.GetVlan() > 0 {
				where += " vlan " + strconv.Itoa(int(n.GetVlan()))
			}
		}
		fmt.Fprintf(w, "NIC %s:\t%s model=%s boot=%d\n", n.GetMac(), where, n.GetModel(), n.GetBootOrder())
	}
	if s.GetCloudInit() != nil {
		fmt.Fprintf(w, "CLOUD-INIT:\t%d bytes of user-data\n", len(s.GetCloudInit().GetUserData()))
	}
	for _, p := range st.GetPendingChanges() {
		fmt.Fprintf(w, "PENDING:\t%s\n", p)
	}
}

// specFlags are the VM spec flags of create and update. On update only the
// flags given change the current spec.
type specFlags struct {
	file                           string
	vcpus, maxVCPUs                int32
	memory, maxMemory              string
	disks, addDisks, removeDisks   []string
	nics, addNICs, removeNICs      []string
	firmware                       string
	autostart, stopped, running    bool
	userData, metaData, networkCfg string
	kernel, initrd, cmdline        string
}

func (f *specFlags) register(cmd *cobra.Command, create bool) {
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "read the whole VMSpec from a YAML or JSON file (other flags then change it)")
	fl.Int32Var(&f.vcpus, "vcpus", 0, "virtual CPUs")
	fl.Int32Var(&f.maxVCPUs, "max-vcpus", 0, "hot-plug ceiling for vCPUs")
	fl.StringVar(&f.memory, "memory", "", "memory, e.g. 512MiB or 4GiB")
	fl.StringVar(&f.maxMemory, "max-memory", "", "memory ceiling for live changes")
	fl.StringVar(&f.firmware, "firmware", "", "bios or uefi")
	fl.BoolVar(&f.autostart, "autostart", false, "start the VM when the node boots")
	if create {
		fl.StringArrayVar(&f.disks, "disk", nil, "POOL/VOLUME[:bus=virtio|sata|scsi][:boot=N][:ro] (repeatable)")
		fl.StringArrayVar(&f.nics, "nic", nil, "user | bridge=BR[,vlan=N][,mac=MAC][,model=M][,boot=N] (repeatable)")
		fl.BoolVar(&f.stopped, "stopped", false, "define the VM without starting it")
		fl.StringVar(&f.userData, "user-data", "", "cloud-init user-data file")
		fl.StringVar(&f.metaData, "meta-data", "", "cloud-init meta-data file")
		fl.StringVar(&f.networkCfg, "network-config", "", "cloud-init network-config file")
		fl.StringVar(&f.kernel, "kernel", "", "direct kernel boot: kernel path on the node")
		fl.StringVar(&f.initrd, "initrd", "", "direct kernel boot: initrd path on the node")
		fl.StringVar(&f.cmdline, "cmdline", "", "direct kernel boot: kernel command line")
	} else {
		fl.StringArrayVar(&f.addDisks, "add-disk", nil, "attach POOL/VOLUME[:bus=…][:boot=N][:ro] (repeatable)")
		fl.StringArrayVar(&f.removeDisks, "remove-disk", nil, "detach POOL/VOLUME (repeatable)")
		fl.StringArrayVar(&f.addNICs, "add-nic", nil, "add user | bridge=BR[,vlan=N][,mac=MAC][,model=M] (repeatable)")
		fl.StringArrayVar(&f.removeNICs, "remove-nic", nil, "remove the NIC with this MAC (repeatable)")
		fl.BoolVar(&f.stopped, "stopped", false, "desired power state: stopped")
		fl.BoolVar(&f.running, "running", false, "desired power state: running")
	}
}

func (f *specFlags) apply(cmd *cobra.Command, s *v1.VMSpec) error {
	changed := cmd.Flags().Changed
	if f.file != "" {
		b, err := os.ReadFile(f.file)
		if err != nil {
			return err
		}
		if j, err := yaml.YAMLToJSON(b); err == nil {
			b = j
		}
		proto.Reset(s)
		if err := protojson.Unmarshal(b, s); err != nil {
			return fmt.Errorf("%s: not a VMSpec: %w", f.file, err)
		}
	}
	if changed("vcpus") {
		s.Vcpus = f.vcpus
		if !changed("max-vcpus") && s.MaxVcpus < f.vcpus {
			s.MaxVcpus = f.vcpus
		}
	}
	if changed("max-vcpus") {
		s.MaxVcpus = f.maxVCPUs
	}
	for flag, dst := range map[string]*int64{"memory": &s.MemoryMib, "max-memory": &s.MaxMemoryMib} {
		if !changed(flag) {
			continue
		}
		v := map[string]string{"memory": f.memory, "max-memory": f.maxMemory}[flag]
		n, err := rules.ParseSize(v)
		if err != nil {
			return fmt.Errorf("--%s: %w", flag, err)
		}
		if n%(1<<20) != 0 {
			return fmt.Errorf("--%s %s: must be a whole number of MiB", flag, v)
		}
		*dst = n >> 20
	}
	if changed("memory") && !changed("max-memory") && s.MaxMemoryMib < s.MemoryMib {
		s.MaxMemoryMib = s.MemoryMib
	}
	if changed("firmware") {
		v, ok := v1.Firmware_value["FIRMWARE_"+strings.ToUpper(f.firmware)]
		if !ok {
			return fmt.Errorf("--firmware %q: want bios or uefi", f.firmware)
		}
		s.Firmware = v1.Firmware(v)
	}
	if changed("autostart") {
		s.Autostart = f.autostart
	}
	if f.stopped {
		s.PowerState = v1.PowerState_POWER_STATE_STOPPED
	}
	if f.running {
		s.PowerState = v1.PowerState_POWER_STATE_RUNNING
	}
	for _, d := range append(append([]string(nil), f.disks...), f.addDisks...) {
		disk, err := parseDisk(d)
		if err != nil {
			return err
		}
		s.Disks = append(s.Disks, disk)
	}
	for _, r := range f.removeDisks {
		kept := s.Disks[:0]
		for _, d := range s.Disks {
			if d.GetPool()+"/"+d.GetVolume() != r {
				kept = append(kept, d)
			}
		}
		if len(kept) == len(s.Disks) {
			return fmt.Errorf("--remove-disk %s: the VM has no such disk", r)
		}
		s.Disks = kept
	}
	for _, n := range append(append([]string(nil), f.nics...), f.addNICs...) {
		nic, err := parseNIC(n)
		if err != nil {
			return err
		}
		s.Nics = append(s.Nics, nic)
	}
	for _, r := range f.removeNICs {
		kept := s.Nics[:0]
		for _, n := range s.Nics {
			if !strings.EqualFold(n.GetMac(), r) {
				kept = append(kept, n)
			}
		}
		if len(kept) == len(s.Nics) {
			return fmt.Errorf("--remove-nic %s: the VM has no NIC with that MAC", r)
		}
		s.Nics = kept
	}
	if f.userData != "" || f.metaData != "" || f.networkCfg != "" {
		ci := &v1.CloudInit{}
		for path, dst := range map[string]*string{f.userData: &ci.UserData, f.metaData: &ci.MetaData, f.networkCfg: &ci.NetworkConfig} {
			if path == "" {
				continue
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			*dst = string(b)
		}
		s.CloudInit = ci
	}
	if f.kernel != "" {
		s.KernelBoot = &v1.KernelBoot{Kernel: f.kernel, Initrd: f.initrd, Cmdline: f.cmdline}
	}
	return nil
}

// parseDisk reads POOL/VOLUME[:bus=B][:boot=N][:ro].
func parseDisk(s string) (*v1.Disk, error) {
	parts := strings.Split(s, ":")
	pool, vol, ok := strings.Cut(parts[0], "/")
	if !ok || pool == "" || vol == "" {
		return nil, fmt.Errorf("disk %q: want POOL/VOLUME[:bus=virtio][:boot=1][:ro]", s)
	}
	d := &v1.Disk{Pool: pool, Volume: vol}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "bus":
			b, ok := v1.Disk_Bus_value["BUS_"+strings.ToUpper(v)]
			if !ok {
				return nil, fmt.Errorf("disk %q: bus %q is not virtio, sata or scsi", s, v)
			}
			d.Bus = v1.Disk_Bus(b)
		case "boot":
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("disk %q: boot=%q is not a number", s, v)
			}
			d.BootOrder = int32(n)
		case "ro":
			d.ReadOnly = true
		default:
			return nil, fmt.Errorf("disk %q: unknown option %q", s, k)
		}
	}
	return d, nil
}

// parseNIC reads "user" or "bridge=BR[,vlan=N][,mac=MAC][,model=M][,boot=N]".
func parseNIC(s string) (*v1.NIC, error) {
	n := &v1.NIC{}
	for i, p := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(p, "=")
		switch {
		case i == 0 && k == "user":
			n.Type = v1.NIC_TYPE_USER
		case i == 0 && k == "bridge":
			n.Type, n.Bridge = v1.NIC_TYPE_BRIDGE, v
		case i == 0:
			return nil, fmt.Errorf("nic %q: start with user or bridge=NAME", s)
		case k == "vlan" || k == "boot":
			x, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("nic %q: %s=%q is not a number", s, k, v)
			}
			if k == "vlan" {
				n.Vlan = int32(x)
			} else {
				n.BootOrder = int32(x)
			}
		case k == "mac":
			n.Mac = v
		case k == "model":
			n.Model = v
		default:
			return nil, fmt.Errorf("nic %q: unknown option %q", s, k)
		}
	}
	return n, nil
}
