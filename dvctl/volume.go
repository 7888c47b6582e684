package dvctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
)

// splitVolume reads POOL/NAME.
func splitVolume(s string) (pool, name string, err error) {
	pool, name, ok := strings.Cut(s, "/")
	if !ok || pool == "" || name == "" {
		return "", "", fmt.Errorf("%q: want POOL/VOLUME", s)
	}
	return pool, name, nil
}

func parseVolumeFormat(s string) (v1.Volume_Format, error) {
	if s == "" {
		return v1.Volume_FORMAT_UNSPECIFIED, nil
	}
	v, ok := v1.Volume_Format_value["FORMAT_"+strings.ToUpper(s)]
	if !ok {
		return 0, fmt.Errorf("--format %q: want raw or qcow2", s)
	}
	return v1.Volume_Format(v), nil
}

func newVolumeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "volume",
		Aliases: []string{"vol"},
		Short:   "Manage storage volumes (POOL/NAME)",
	}
	var noWait bool
	cmd.PersistentFlags().BoolVar(&noWait, "no-wait", false, "print the operation at once instead of waiting for it")

	list := &cobra.Command{
		Use: "list POOL", Short: "List a pool's volumes", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.ListVolumesResponse, error) {
				return c.Storage.ListVolumes(ctx, &v1.ListVolumesRequest{Pool: args[0]})
			}, func(w *tabwriter.Writer, r *v1.ListVolumesResponse) {
				fmt.Fprintln(w, "NAME\tFORMAT\tCAPACITY\tALLOCATED\tUSED BY\tPATH")
				for _, v := range r.GetVolumes() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", v.GetName(), lowerEnum(v.GetFormat().String(), "FORMAT_"), rules.HumanSize(v.GetCapacityBytes()),
						rules.HumanSize(v.GetAllocationBytes()), dash(strings.Join(v.GetUsedBy(), ",")), v.GetPath())
				}
			})
		},
	}
	get := &cobra.Command{
		Use: "get POOL/NAME", Short: "Show a volume", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool, name, err := splitVolume(args[0])
			if err != nil {
				return err
			}
			return read(g, cmd, func(ctx context.Context, c *client.Client) (*v1.Volume, error) {
				return c.Storage.GetVolume(ctx, &v1.GetVolumeRequest{Pool: pool, Name: name})
			}, func(w *tabwriter.Writer, v *v1.Volume) {
				fmt.Fprintf(w, "POOL:\t%s\nNAME:\t%s\nFORMAT:\t%s\nCAPACITY:\t%s (%d bytes)\nALLOCATED:\t%s\nPATH:\t%s\nUSED BY:\t%s\n",
					v.GetPool(), v.GetName(), lowerEnum(v.GetFormat().String(), "FORMAT_"), rules.HumanSize(v.GetCapacityBytes()), v.GetCapacityBytes(),
					rules.HumanSize(v.GetAllocationBytes()), v.GetPath(), dash(strings.Join(v.GetUsedBy(), ", ")))
			})
		},
	}
	var (
		size, format, oci string
		insecure          bool
	)
	create := &cobra.Command{
		Use:   "create POOL/NAME",
		Short: "Create a volume, blank or from an OCI artifact",
		Example: `  dvctl volume create default/web-1.qcow2 --size 20GiB --format qcow2
  dvctl volume create default/debian.raw --from-oci registry.lan/images/debian:12`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool, name, err := splitVolume(args[0])
			if err != nil {
				return err
			}
			f, err := parseVolumeFormat(format)
			if err != nil {
				return err
			}
			var n int64
			if size != "" {
				if n, err = rules.ParseSize(size); err != nil {
					return fmt.Errorf("--size: %w", err)
				}
			}
			return g.mutate(cmd, noWait, func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
				return c.Storage.CreateVolume(ctx, &v1.CreateVolumeRequest{
					Volume:       &v1.Volume{Pool: pool, Name: name, Format: f, CapacityBytes: n},
					OciReference: oci, OciInsecure: insecure,
				})
			})
		},
	}
	create.Flags().StringVar(&size, "size", "", "virtual size, e.g. 20GiB (default with --from-oci: the artifact's size)")
	create.Flags().StringVar(&format, "format", "", "raw (default) or qcow2")
	create.Flags().StringVar(&oci, "from-oci", "", "fill from the single layer of this OCI artifact")
	create.Flags().BoolVar(&insecure, "insecure", false, "plain-HTTP registry")

	var upFormat, upSize string
	upload := &cobra.Command{
		Use:     "upload POOL/NAME FILE",
		Short:   "Create a volume from a local disk image file ('-' reads stdin with --size)",
		Example: `  dvctl volume upload default/debian.qcow2 debian-12.qcow2 --format qcow2`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool, name, err := splitVolume(args[0])
			if err != nil {
				return err
			}
			fmtv, err := parseVolumeFormat(upFormat)
			if err != nil {
				return err
			}
			var (
				r     io.Reader = os.Stdin
				total int64
			)
			if args[1] != "-" {
				f, err := os.Open(args[1])
				if err != nil {
					return err
				}
				defer f.Close()
				st, err := f.Stat()
				if err != nil {
					return err
				}
				r, total = f, st.Size()
			} else if total, err = rules.ParseSize(upSize); err != nil {
				return fmt.Errorf("--size (needed with stdin): %w", err)
			}
			f, err := g.format()
			if err != nil {
				return err
			}
			c, err := g.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 24*time.Hour)
			defer cancel()
			s, err := c.Storage.UploadVolume(ctx)
			if err != nil {
				return err
			}
			if err := s.Send(&v1.UploadVolumeRequest{Msg: &v1.UploadVolumeRequest_Header_{Header: &v1.UploadVolumeRequest_Header{
				Pool: pool, Name: name, Format: fmtv, SizeBytes: total,
			}}}); err != nil {
				return err
			}
			buf := make([]byte, 1<<20)
			for {
				n, rerr := r.Read(buf)
				if n > 0 {
					if err := s.Send(&v1.UploadVolumeRequest{Msg: &v1.UploadVolumeRequest_Chunk{Chunk: buf[:n]}}); err != nil {
						break // the server said why; CloseAndRecv reports it
					}
				}
				if errors.Is(rerr, io.EOF) {
					break
				}
				if rerr != nil {
					return rerr
				}
			}
			op, err := s.CloseAndRecv()
			if err != nil {
				return err
			}
			if perr := printOperation(g, f, op); perr != nil {
				return perr
			}
			if op.GetState() != v1.Operation_STATE_SUCCEEDED {
				return fmt.Errorf("upload %s: %s", op.GetState(), op.GetError())
			}
			return nil
		},
	}
	upload.Flags().StringVar(&upFormat, "format", "", "raw (default) or qcow2: the format of the file")
	upload.Flags().StringVar(&upSize, "size", "", "number of bytes on stdin")

	var newSize string
	resize := &cobra.Command{
		Use: "resize POOL/NAME --size SIZE", Short: "Grow a volume", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool, name, err := splitVolume(args[0])
			if err != nil {
				return err
			}
			n, err := rules.ParseSize(newSize)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			return g.mutate(cmd, noWait, func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
				return c.Storage.ResizeVolume(ctx, &v1.ResizeVolumeRequest{Pool: pool, Name: name, CapacityBytes: n})
			})
		},
	}
	resize.Flags().StringVar(&newSize, "size", "", "new virtual size")
	_ = resize.MarkFlagRequired("size")

	var toPool, cloneFormat string
	clone := &cobra.Command{
		Use: "clone POOL/NAME NEWNAME", Short: "Copy a volume", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool, name, err := splitVolume(args[0])
			if err != nil {
				return err
			}
			f, err := parseVolumeFormat(cloneFormat)
			if err != nil {
				return err
			}
			return g.mutate(cmd, noWait, func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
				return c.Storage.CloneVolume(ctx, &v1.CloneVolumeRequest{Pool: pool, Name: name, NewName: args[1], NewPool: toPool, Format: f})
			})
		},
	}
	clone.Flags().StringVar(&toPool, "to-pool", "", "pool of the copy (default: the same pool)")
	clone.Flags().StringVar(&cloneFormat, "format", "", "format of the copy (default: the source's)")

	del := &cobra.Command{
		Use: "delete POOL/NAME", Short: "Delete a volume no VM uses", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool, name, err := splitVolume(args[0])
			if err != nil {
				return err
			}
			return g.mutate(cmd, noWait, func(ctx context.Context, c *client.Client) (*v1.Operation, error) {
				return c.Storage.DeleteVolume(ctx, &v1.DeleteVolumeRequest{Pool: pool, Name: name})
			})
		},
	}
	cmd.AddCommand(list, get, create, upload, resize, clone, del)
	return cmd
}
