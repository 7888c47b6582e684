package upgrade

import (
	"context"
	"fmt"
	"time"

	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/nodeagent/fault"
	"github.com/debvisor/debvisor/osimage"
)

// Boot is what the agent does after every boot (a background service):
//
//  1. a slot that was booted (first in ORDER, tried) but is not the one
//     running never committed: it hung, panicked or lost power, and GRUB
//     fell back. It is marked bad and its record says so, unless its own
//     agent already recorded why (a failed health check).
//  2. the health report runs until it passes or CommitDeadline passes.
//     Pass: the booted slot is committed (TRY cleared, OK set, it becomes
//     the last committed slot) in both copies of the environment.
//     Fail on a trial boot (a slot not yet committed, i.e. a new
//     upgrade): the slot is marked bad, the reason recorded, and the node
//     reboots into the previous slot. Fail on the committed slot: nothing
//     to roll back to that is known to be better; the boot stays
//     uncommitted and the health report says why.
//
// It returns when done (or ctx ends); it never fails the agent.
func (m *Manager) Boot(ctx context.Context) error {
	booted, fallback, err := m.booted()
	if err != nil {
		m.log.Info("not a DebVisor slot boot; no boot commit", "why", err)
		return nil
	}
	env, err := m.loadEnv(ctx)
	if err != nil {
		m.log.Error("boot environment unreadable; cannot commit this boot", "err", err)
		return nil
	}
	m.noticeFailedOther(ctx, env, booted)
	m.noticeInterruptedWrite(booted.Other())
	if fallback {
		m.log.Warn("GRUB booted this slot as a fallback: no slot had a try left", "slot", booted)
	}
	committed, _ := env.Committed()
	trial := committed != booted
	deadline := m.cfg.Now().Add(m.cfg.CommitDeadline)
	var reason string
	for {
		passed, why := m.cfg.Health(ctx)
		if passed {
			if err := m.commit(ctx, booted); err != nil {
				m.log.Error("commit", "slot", booted, "err", err)
				return nil
			}
			m.log.Info("boot committed", "slot", booted, "trial", trial)
			return nil
		}
		reason = why
		if !m.cfg.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(m.cfg.CommitInterval):
		}
	}
	m.log.Error("the health report did not pass in time", "slot", booted, "deadline", m.cfg.CommitDeadline, "reason", reason)
	if !trial {
		m.log.Warn("the committed slot failed its health report; it stays uncommitted (GRUB falls back to the other slot if this node reboots and that slot is bootable)", "slot", booted)
		return nil
	}
	if ok, _ := env.SlotState(booted.Other()); !ok {
		m.log.Error("no other bootable slot to roll back to; staying on the failed slot", "slot", booted)
		return nil
	}
	msg := fmt.Sprintf("health check failed within %s: %s", m.cfg.CommitDeadline, reason)
	_ = m.state.update(func(s map[osimage.Slot]slotRecord) {
		rec := s[booted]
		rec.Result, rec.Reason, rec.Time = ResultHealthFailed, msg, m.cfg.Now()
		s[booted] = rec
	})
	m.mu.Lock()
	_, err = m.cfg.Env.Update(ctx, func(e *bootenv.Env) error { e.MarkBad(booted); return nil })
	m.mu.Unlock()
	if err != nil {
		m.log.Error("mark the failed slot bad", "slot", booted, "err", err)
		return nil
	}
	m.log.Error("rolling back: rebooting into the previous slot", "failed", booted, "to", booted.Other())
	if err := m.cfg.Reboot(ctx); err != nil {
		m.log.Error("reboot", "err", err)
	}
	return nil
}

// loadEnv loads the environment, repairing a damaged copy from the other.
func (m *Manager) loadEnv(ctx context.Context) (*bootenv.Env, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg.Env.Load(ctx)
}

// noticeFailedOther records a rollback GRUB made without userspace: the
// other slot was primary, bootable and tried, yet this slot is running.
func (m *Manager) noticeFailedOther(ctx context.Context, env *bootenv.Env, booted osimage.Slot) {
	other := booted.Other()
	ok, tried := env.SlotState(other)
	if order := env.Order(); len(order) == 0 || order[0] != other || !ok || !tried {
		return
	}
	if once, isOnce := env.Once(); isOnce && once == booted {
		return
	}
	rec := m.state.get(other)
	if !rec.final() {
		reason := fmt.Sprintf("slot %s was booted but never committed (it did not come up: kernel panic, hang or power loss); GRUB booted slot %s instead", other, booted)
		_ = m.state.update(func(s map[osimage.Slot]slotRecord) {
			r := s[other]
			r.Result, r.Reason, r.Time = ResultRolledBack, reason, m.cfg.Now()
			s[other] = r
		})
		m.log.Error("rolled back", "failed", other, "booted", booted, "reason", reason)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.cfg.Env.Update(ctx, func(e *bootenv.Env) error { e.MarkBad(other); return nil }); err != nil {
		m.log.Error("mark the failed slot bad", "slot", other, "err", err)
	}
}

// noticeInterruptedWrite turns the record of a write that never finished
// (the agent, or the power, went away during it) into a failure; GRUB's
// environment already says the slot is not bootable.
func (m *Manager) noticeInterruptedWrite(slot osimage.Slot) {
	if m.state.get(slot).Result != ResultWriting {
		return
	}
	_ = m.state.update(func(s map[osimage.Slot]slotRecord) {
		r := s[slot]
		r.Result, r.Reason, r.Time = ResultWriteFailed, "the write was interrupted (the agent stopped or the power went away); the slot stays not bootable", m.cfg.Now()
		s[slot] = r
	})
	m.log.Warn("an interrupted slot write was found", "slot", slot)
}

// commit records a healthy boot of slot in the environment and the record.
func (m *Manager) commit(ctx context.Context, slot osimage.Slot) error {
	m.mu.Lock()
	_, err := m.cfg.Env.Update(ctx, func(e *bootenv.Env) error { e.Commit(slot); return nil })
	m.mu.Unlock()
	if err != nil {
		return fault.Errorf(fault.Internal, "commit slot %s: %w", slot, err)
	}
	return m.state.update(func(s map[osimage.Slot]slotRecord) {
		rec := s[slot]
		if rec.Result == "" && rec.Digest == "" {
			if rel, err := m.bootedRelease(); err == nil {
				rec.Version = rel.Version
			}
		}
		rec.Result, rec.Reason, rec.Time = ResultCommitted, "", m.cfg.Now()
		s[slot] = rec
	})
}

// Commit runs the health report now and commits the booted slot when it
// passes (the Commit RPC).
func (m *Manager) Commit(ctx context.Context) error {
	booted, _, err := m.booted()
	if err != nil {
		return err
	}
	if passed, why := m.cfg.Health(ctx); !passed {
		return fault.Errorf(fault.FailedPrecondition, "the health report does not pass, so slot %s is not committed: %s", booted, why)
	}
	return m.commit(ctx, booted)
}

// Rollback boots the other slot at the next boot only (once) or from now on.
func (m *Manager) Rollback(ctx context.Context, once bool) error {
	booted, _, err := m.booted()
	if err != nil {
		return err
	}
	m.mu.Lock()
	_, err = m.cfg.Env.Update(ctx, func(e *bootenv.Env) error { return e.Rollback(booted, once) })
	m.mu.Unlock()
	if err != nil {
		return fault.Errorf(fault.FailedPrecondition, "roll back from slot %s: %w", booted, err)
	}
	m.log.Info("rollback requested", "from", booted, "to", booted.Other(), "once", once)
	return nil
}

// RebootSoon reboots the node after the configured delay.
func (m *Manager) RebootSoon() { m.rebootSoon() }
