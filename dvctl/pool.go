package dvctl

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
)

func newPoolCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "Manage storage pools",
	}
	var noWait bool
	cmd.PersistentFlags().BoolVar(&noWait, "no-wait", false, "print the operation at once instead of waiting for it")

	list := &cobra.Command{
		Use: "list", Short: "List storage pools", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.ListPoolsResponse, error) {
				return c.Storage.ListPools(ctx, &v1.ListPoolsRequest{})
			}, func(w *tabwriter.Writer, r *v1.ListPoolsResponse) {
				fmt.Fprintln(w, "NAME\tTYPE\tSTATE\tCAPACITY\tAVAILABLE\tVOLUMES\tPATH")
				for _, p := range r.GetPools() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", p.GetName(), lowerEnum(p.GetType().String(), "TYPE_"), lowerEnum(p.GetState().String(), "STATE_"),
						rules.HumanSize(p.GetCapacityBytes()), rules.HumanSize(p.GetAvailableBytes()), p.GetVolumeCount(), dash(p.GetPath()))
				}
			})
		},
	}
	get := &cobra.Command{
		Use: "get NAME", Short: "Show a storage pool", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.Pool, error) {
				return c.Storage.GetPool(ctx, &v1.GetPoolRequest{Name: args[0]})
			}, func(w *tabwriter.Writer, p *v1.Pool) {
				fmt.Fprintf(w, "NAME:\t%s\nUUID:\t%s\nTYPE:\t%s\nSTATE:\t%s\nAUTOSTART:\t%v\nPATH:\t%s\nCAPACITY:\t%s\nALLOCATION:\t%s\nAVAILABLE:\t%s\nVOLUMES:\t%d\n",
					p.GetName(), p.GetUuid(), lowerEnum(p.GetType().String(), "TYPE_"), lowerEnum(p.GetState().String(), "STATE_"), p.GetAutostart(), dash(p.GetPath()),
					rules.HumanSize(p.GetCapacityBytes()), rules.HumanSize(p.GetAllocationBytes()), rules.HumanSize(p.GetAvailableBytes()), p.GetVolumeCount())
				if len(p.GetSourceDevices()) > 0 {
					fmt.Fprintf(w, "SOURCE DEVICES:\t%s\n", strings.Join(p.GetSourceDevices(), ", "))
				}
				if len(p.GetSourceHosts()) > 0 {
					fmt.Fprintf(w, "SOURCE HOSTS:\t%s\n", strings.Join(p.GetSourceHosts(), ", "))
				}
				if p.GetSourceName() != "" {
					fmt.Fprintf(w, "SOURCE NAME:\t%s\n", p.GetSourceName())
				}
			})
		},
	}
	var (
		spec          v1.Pool
		typ           string
		build, format bool
	)
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Define, build and start a storage pool",
		Example: `  dvctl pool create images --type dir --path /var/lib/debvisor/images --build
  dvctl pool create vg0 --type logical --source-device /dev/sdb --build --format-source
  dvctl pool create nfs --type netfs --path /mnt/nfs --source-host nas --source-path /export/vms
  dvctl pool create ceph --type rbd --source-name rbd --source-host mon1:6789 --auth-username libvirt --auth-secret-uuid UUID`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, ok := v1.Pool_Type_value["TYPE_"+strings.ToUpper(typ)]
			if !ok {
				return fmt.Errorf("--type %q: want dir, fs, logical, netfs, zfs or rbd", typ)
			}
			p := &spec
			p.Name, p.Type = args[0], v1.Pool_Type(t)
			return g.mutate(cmd, noWait, func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
				return c.Storage.CreatePool(ctx, &v1.CreatePoolRequest{Pool: p, Build: build, FormatSource: format})
			})
		},
	}
	fl := create.Flags()
	fl.StringVar(&typ, "type", "dir", "dir, fs, logical, netfs, zfs or rbd")
	fl.StringVar(&spec.Path, "path", "", "target directory or mount point")
	fl.StringArrayVar(&spec.SourceDevices, "source-device", nil, "block device (fs, logical, zfs; repeatable)")
	fl.StringArrayVar(&spec.SourceHosts, "source-host", nil, "NFS server or Ceph monitor HOST[:PORT] (repeatable)")
	fl.StringVar(&spec.SourcePath, "source-path", "", "NFS export")
	fl.StringVar(&spec.SourceName, "source-name", "", "volume group, zpool or Ceph pool (default: the pool name)")
	fl.StringVar(&spec.SourceFormat, "source-format", "", "fs: filesystem type; netfs: nfs or cifs")
	fl.StringVar(&spec.AuthUsername, "auth-username", "", "rbd: cephx user")
	fl.StringVar(&spec.AuthSecretUuid, "auth-secret-uuid", "", "rbd: libvirt secret holding the cephx key")
	fl.BoolVar(&build, "build", false, "build the pool first (mkdir, vgcreate, …)")
	fl.BoolVar(&format, "format-source", false, "with --build: format the source devices (destroys their data)")

	var delVols, delStorage bool
	del := &cobra.Command{
		Use: "delete NAME", Short: "Stop and remove a storage pool", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.mutate(cmd, noWait, func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
				return c.Storage.DeletePool(ctx, &v1.DeletePoolRequest{Name: args[0], DeleteVolumes: delVols, DeleteStorage: delStorage})
			})
		},
	}
	del.Flags().BoolVar(&delVols, "delete-volumes", false, "delete the pool's volumes first (refused while a VM uses one)")
	del.Flags().BoolVar(&delStorage, "delete-storage", false, "also delete the underlying storage (rmdir, vgremove)")

	cmd.AddCommand(list, get, create, del)
	return cmd
}
