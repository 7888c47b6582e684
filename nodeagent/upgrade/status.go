package upgrade

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/nodeagent/fault"
	"github.com/debvisor/debvisor/osimage"
)

// Status reports both slots from GRUB's environment (read, and a damaged
// copy repaired) and the agent's record.
func (m *Manager) Status(ctx context.Context) (*v1.SlotStatus, error) {
	booted, fallback, err := m.booted()
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	copies, rerr := m.cfg.Env.Read(ctx)
	var env *bootenv.Env
	if rerr == nil {
		env, err = m.cfg.Env.Load(ctx)
	}
	m.mu.Unlock()
	if rerr != nil {
		return nil, fault.Errorf(fault.FailedPrecondition, "boot environment: %w", rerr)
	}
	if err != nil {
		return nil, fault.Errorf(fault.Internal, "boot environment: %w", err)
	}
	out := &v1.SlotStatus{BootedSlot: string(booted), FallbackBoot: fallback}
	switch {
	case copies.RepairPrimary:
		out.EnvRepaired = "the primary copy (" + osimage.ESPGrubEnv + ") was damaged or stale and was rewritten from the backup"
	case copies.RepairBackup:
		out.EnvRepaired = "the backup copy (" + osimage.ESPGrubEnvBackup + ") was damaged or stale and was rewritten from the primary"
	}
	next := env.NextBoot()
	out.NextBoot, out.NextBootOnce = string(next.Slot), next.Once
	committed, _ := env.Committed()
	order := env.Order()
	for _, s := range osimage.Slots {
		ok, tried := env.SlotState(s)
		rec := m.state.get(s)
		sl := &v1.Slot{
			Name: string(s), Partition: int32(s.Partition()),
			Bootable: ok, Tried: tried, Booted: s == booted,
			Primary: len(order) > 0 && order[0] == s, Committed: s == committed,
			ArtifactDigest: rec.Digest, Version: rec.Version,
			LastResult: rec.Result, Reason: rec.Reason, Image: rec.Image,
		}
		if !rec.Time.IsZero() {
			sl.ResultTime = timestamppb.New(rec.Time)
		}
		if s == booted {
			if rel, err := m.bootedRelease(); err == nil {
				sl.Version = rel.Version
			}
		}
		if sl.LastResult == "" && ok {
			sl.LastResult = ResultInstalled
		}
		out.Slots = append(out.Slots, sl)
	}
	return out, nil
}
