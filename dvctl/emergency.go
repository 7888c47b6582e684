package dvctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/boot/esp"
	"github.com/debvisor/debvisor/osimage"
)

// emergency is the console's last resort: it reads and writes GRUB's boot
// environment directly, with the agent stopped or broken, on the running
// node's mounted ESP or on a disk (an image file, or a node's disk attached
// to another machine).
type emergency struct {
	g       *globals
	espDir  string
	disk    string
	cmdline string
	release string
	from    string
}

func newEmergencyCmd(g *globals) *cobra.Command {
	e := &emergency{g: g}
	cmd := &cobra.Command{
		Use:   "emergency",
		Short: "Slot status, rollback and boot environment repair without the agent",
		Long: `emergency works on GRUB's boot environment directly, for the console at 3 a.m.
when the agent is stopped or broken. It needs no API, no certificate and no
network: it reads and writes the two copies of grub/grubenv on the ESP.

On the node itself (root) it uses the mounted ESP (--esp, default /boot/efi)
and the booted slot from /proc/cmdline. With --disk it works on a whole disk
instead (an image file, or a node's disk attached elsewhere; not one whose
partitions are mounted), and --from names the slot to roll back from.`,
		Example: `  dvctl emergency slots
  dvctl emergency rollback --once && systemctl reboot
  dvctl emergency repair-env
  dvctl emergency slots --disk /dev/sdb`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&e.espDir, "esp", osimage.ESPMount, "mounted ESP of the running node")
	pf.StringVar(&e.disk, "disk", "", "work on this disk (image file or block device) instead of the mounted ESP")
	pf.StringVar(&e.cmdline, "cmdline", "/proc/cmdline", "kernel command line that names the booted slot")
	pf.StringVar(&e.release, "release", "/"+osimage.ReleaseFile, "release file of the booted slot")
	pf.StringVar(&e.from, "from", "", "the slot to roll back from (default: the booted one)")

	var once bool
	rollback := &cobra.Command{
		Use:   "rollback",
		Short: "Boot the other slot (once with --once, else from now on)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.run(cmd, func(ctx context.Context, s *bootenv.Store, booted osimage.Slot) error {
				if booted == "" {
					return errors.New("cannot tell which slot to roll back from: pass --from A or --from B")
				}
				_, err := s.Update(ctx, func(env *bootenv.Env) error { return env.Rollback(booted, once) })
				return err
			})
		},
	}
	rollback.Flags().BoolVar(&once, "once", false, "the next boot only")

	var resetTo string
	repair := &cobra.Command{
		Use:   "repair-env",
		Short: "Repair a damaged copy of the boot environment from the other",
		Long: `repair-env rewrites a damaged or stale copy of grub/grubenv from the good one.
When both copies are damaged it refuses, unless --reset-to names the slot that
holds a working system: then both copies are rewritten with only that slot
bootable and committed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.run(cmd, func(ctx context.Context, s *bootenv.Store, _ osimage.Slot) error {
				_, err := s.Load(ctx)
				if err == nil || resetTo == "" {
					if errors.Is(err, bootenv.ErrBothDamaged) {
						return fmt.Errorf("%w: pass --reset-to A or --reset-to B to start over with that slot", err)
					}
					return err
				}
				slot, perr := osimage.ParseSlot(resetTo)
				if perr != nil {
					return fmt.Errorf("--reset-to: %w", perr)
				}
				env := bootenv.New()
				env.SetSlot(slot.Other(), false, false)
				env.Commit(slot)
				env.SetOrder([]osimage.Slot{slot, slot.Other()})
				return s.Save(ctx, env)
			})
		},
	}
	repair.Flags().StringVar(&resetTo, "reset-to", "", "when both copies are damaged: rewrite them with only this slot bootable")

	slots := &cobra.Command{
		Use:   "slots",
		Short: "Show the slots as GRUB sees them (read-only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.show(cmd, nil)
		},
	}
	cmd.AddCommand(slots, rollback, repair)
	return cmd
}

// open returns the environment store of the mounted ESP or the disk.
func (e *emergency) open() (*bootenv.Store, func(), error) {
	if e.disk == "" {
		if _, err := os.Stat(e.espDir); err != nil {
			return nil, nil, fmt.Errorf("ESP: %w (is it mounted? or pass --disk)", err)
		}
		return bootenv.NewStore(bootenv.DirFS{Root: e.espDir}), func() {}, nil
	}
	f, err := esp.Open(e.disk)
	if err != nil {
		return nil, nil, fmt.Errorf("ESP of %s: %w", e.disk, err)
	}
	return bootenv.NewStore(f), func() { _ = f.Close() }, nil
}

// booted is the slot to act from: --from, else the running system's.
func (e *emergency) booted() (osimage.Slot, bool, error) {
	if e.from != "" {
		s, err := osimage.ParseSlot(e.from)
		return s, false, err
	}
	if e.disk != "" {
		return "", false, nil
	}
	b, err := os.ReadFile(e.cmdline)
	if err != nil {
		return "", false, err
	}
	fb, _ := osimage.CmdlineValue(string(b), osimage.CmdlineFallback)
	return osimage.Slot(osimage.BootedSlot(string(b))), fb == "1", nil
}

// run applies change (if any) and shows the result.
func (e *emergency) run(cmd *cobra.Command, change func(context.Context, *bootenv.Store, osimage.Slot) error) error {
	return e.show(cmd, change)
}

func (e *emergency) show(cmd *cobra.Command, change func(context.Context, *bootenv.Store, osimage.Slot) error) error {
	f, err := e.g.format()
	if err != nil {
		return err
	}
	store, closeFn, err := e.open()
	if err != nil {
		return err
	}
	defer closeFn()
	booted, fallback, err := e.booted()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	var repaired string
	if change != nil {
		before, _ := store.Read(ctx)
		if err := change(ctx, store, booted); err != nil {
			return err
		}
		switch {
		case before.RepairPrimary:
			repaired = "the primary copy was damaged or stale and was rewritten"
		case before.RepairBackup:
			repaired = "the backup copy was damaged or stale and was rewritten"
		}
	}
	copies, err := store.Read(ctx)
	if err != nil {
		return err
	}
	if change == nil {
		switch {
		case copies.RepairPrimary:
			repaired = "the primary copy is damaged or stale: run repair-env"
		case copies.RepairBackup:
			repaired = "the backup copy is damaged or stale: run repair-env"
		}
	}
	st := slotStatusFromEnv(copies.Env, booted, fallback, repaired)
	if b, err := os.ReadFile(e.release); err == nil && e.disk == "" {
		if rel, err := osimage.ParseRelease(b); err == nil {
			for _, s := range st.Slots {
				if s.Booted {
					s.Version = rel.Version
				}
			}
		}
	}
	return printProto(e.g.stdout, f, st, func(w *tabwriter.Writer) { slotTable(w, st) })
}

// slotStatusFromEnv is what GRUB's environment alone says about the slots.
func slotStatusFromEnv(env *bootenv.Env, booted osimage.Slot, fallback bool, repaired string) *v1.SlotStatus {
	next := env.NextBoot()
	committed, _ := env.Committed()
	order := env.Order()
	st := &v1.SlotStatus{BootedSlot: string(booted), FallbackBoot: fallback, NextBoot: string(next.Slot), NextBootOnce: next.Once, EnvRepaired: repaired}
	for _, s := range osimage.Slots {
		ok, tried := env.SlotState(s)
		st.Slots = append(st.Slots, &v1.Slot{Name: string(s), Partition: int32(s.Partition()), Bootable: ok, Tried: tried,
			Booted: s == booted, Primary: len(order) > 0 && order[0] == s, Committed: s == committed})
	}
	return st
}
