// Package cli owns the debvisor-image command line: flag parsing and
// wiring; the work is in package imagebuilder.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/imagebuilder"
	"github.com/debvisor/debvisor/internal/buildinfo"
	"github.com/debvisor/debvisor/internal/qemu"
)

// Main runs debvisor-image and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := NewRoot(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "debvisor-image:", err)
		return 1
	}
	return 0
}

// NewRoot builds the command tree.
func NewRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "debvisor-image",
		Short:         "Build and inspect DebVisor A/B disk images",
		Version:       buildinfo.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newBuild(stdout, stderr), newInspect(stdout), newDefaultSpec(stdout), newSeed(stdout), newQuickstart(stdout),
		newPush(stdout, stderr), newPull(stdout, stderr), newSign(stdout, stderr), newVerify(stdout, stderr), newKeygen(stdout))
	return root
}

func newBuild(stdout, stderr io.Writer) *cobra.Command {
	var out, progress, cache, agent, dvctl, logLevel string
	var noQcow bool
	var push pushFlags
	cmd := &cobra.Command{
		Use:   "build [SPEC] -o DIR",
		Short: "Build raw and qcow2 images and a manifest from a spec (the embedded default without SPEC)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("-o DIR is required")
			}
			if err := push.check(); err != nil {
				return err
			}
			spec, err := loadSpec(args)
			if err != nil {
				return err
			}
			if progress == "" {
				progress = string(imagebuilder.ProgressPlain)
				if f, ok := stderr.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
					progress = string(imagebuilder.ProgressTTY)
				}
			}
			mode, err := imagebuilder.ParseProgressMode(progress)
			if err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			if agent == "" || dvctl == "" {
				a, d, err := siblingBinaries()
				if err != nil {
					return err
				}
				agent, dvctl = orDefault(agent, a), orDefault(dvctl, d)
			}
			opts := []imagebuilder.Option{
				imagebuilder.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))),
				imagebuilder.WithProgress(imagebuilder.NewProgress(mode, stderr, nil)),
				imagebuilder.WithCacheDir(cache),
				imagebuilder.WithBinaries(agent, dvctl),
				imagebuilder.WithQcow2(!noQcow),
			}
			res, err := imagebuilder.Build(cmd.Context(), spec, out, opts...)
			if err != nil {
				return err
			}
			if push.ref != "" {
				return push.run(cmd.Context(), out, progress, logLevel, stdout, stderr)
			}
			if mode == imagebuilder.ProgressJSON {
				return json.NewEncoder(stdout).Encode(res.Manifest)
			}
			fmt.Fprintf(stdout, "%s\n", res.Raw)
			if res.Qcow2 != "" {
				fmt.Fprintf(stdout, "%s\n", res.Qcow2)
			}
			fmt.Fprintf(stdout, "%s\n", res.ManifestPath)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&out, "output", "o", "", "output directory")
	f.StringVar(&progress, "progress", "", "tty, plain, json (JSON lines on stderr) or quiet; default tty on a terminal, else plain")
	f.StringVar(&cache, "cache-dir", imagebuilder.CacheDirFromEnv(), "rootfs cache (env DEBVISOR_CACHE)")
	f.StringVar(&agent, "agent-bin", "", "debvisor-agent binary to bake in (default: next to debvisor-image)")
	f.StringVar(&dvctl, "dvctl-bin", "", "dvctl binary to bake in (default: next to debvisor-image)")
	f.StringVar(&logLevel, "log-level", "warn", "debug shows every tool's output")
	f.BoolVar(&noQcow, "no-qcow2", false, "skip the qcow2 output")
	push.add(f)
	return cmd
}

func newInspect(stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect IMAGE",
		Short: "Show an image's partitions, slots and boot state and verify every filesystem; non-zero exit on any inconsistency",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := imagebuilder.Inspect(cmd.Context(), args[0])
			if rep != nil {
				if asJSON {
					enc := json.NewEncoder(stdout)
					enc.SetIndent("", "  ")
					if e := enc.Encode(rep); e != nil {
						return e
					}
				} else {
					rep.WriteText(stdout)
				}
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func newDefaultSpec(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "default-spec",
		Short: "Print the embedded default spec (a starting point for your own)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := stdout.Write(imagebuilder.DefaultSpecYAML)
			return err
		},
	}
}

func newSeed(stdout io.Writer) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "seed PRESEED -o FILE.iso",
		Short: "Write a DEBVISOR-SEED volume (ISO9660) with a preseed and the PKI files it names, for firstboot",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("-o FILE is required")
			}
			if err := imagebuilder.MakeSeed(args[0], out); err != nil {
				return err
			}
			fmt.Fprintln(stdout, out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "ISO file to write")
	return cmd
}

func newQuickstart(stdout io.Writer) *cobra.Command {
	c := imagebuilder.QuickstartConfig{Out: stdout}
	cmd := &cobra.Command{
		Use:   "quickstart --image RAW --dvctl DVCTL --dir DIR",
		Short: "Boot an image in QEMU with fresh PKI, wait for the agent and print how to reach it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if c.Image == "" || c.Dvctl == "" || c.Dir == "" {
				return errors.New("--image, --dvctl and --dir are required")
			}
			return imagebuilder.Quickstart(cmd.Context(), c)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Image, "image", "", "raw image to boot (a qcow2 overlay is made; the image is not changed)")
	f.StringVar(&c.Dvctl, "dvctl", "", "dvctl binary")
	f.StringVar(&c.Dir, "dir", "", "state directory (PKI, SSH key, disk overlay, console log)")
	f.IntVar(&c.SSHPort, "ssh-port", 0, "loopback port forwarded to the guest's SSH (0: any free)")
	f.IntVar(&c.APIPort, "api-port", 0, "loopback port forwarded to the agent's gRPC 7443 (0: any free)")
	f.StringVar(&c.DiskSize, "disk-size", "8G", "virtual disk size (the data partition grows into it)")
	f.DurationVar(&c.Timeout, "timeout", 10*time.Minute, "how long to wait for the agent")
	f.StringVar(&c.Firmware, "firmware", string(qemu.FirmwareAuto),
		"auto (SeaBIOS under KVM when KVM runs the BIOS path in hardware, else OVMF under TCG), bios (SeaBIOS) or uefi (OVMF, always TCG)")
	return cmd
}

func loadSpec(args []string) (*imagebuilder.Spec, error) {
	if len(args) == 0 {
		return imagebuilder.DefaultSpec()
	}
	return imagebuilder.LoadSpec(args[0])
}

// siblingBinaries finds debvisor-agent and dvctl next to this executable,
// which is how `make` and release archives lay them out.
func siblingBinaries() (agent, dvctl string, err error) {
	exe, err := os.Executable()
	if err != nil {
		return "", "", err
	}
	dir := filepath.Dir(exe)
	agent, dvctl = filepath.Join(dir, "debvisor-agent"), filepath.Join(dir, "dvctl")
	for _, p := range []string{agent, dvctl} {
		if _, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("no %s next to debvisor-image; pass --agent-bin and --dvctl-bin", filepath.Base(p))
		}
	}
	return agent, dvctl, nil
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}
