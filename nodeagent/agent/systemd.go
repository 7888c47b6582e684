package agent

import (
	"context"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// systemd tells systemd (Type=notify) when the API serves, and feeds the
// unit's watchdog (WatchdogSec) only while the health report says the API
// answers and the health loop itself keeps running: a hung agent, or one
// whose listeners died, is restarted by systemd. Without NOTIFY_SOCKET
// (not under systemd) it does nothing.
func (a *Agent) systemd() Background {
	return Background{Name: "systemd notify", Run: func(ctx context.Context) error {
		select {
		case <-a.Server.Ready():
		case <-ctx.Done():
			return nil
		}
		if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
			a.log.Warn("sd_notify READY", "err", err)
		}
		interval, err := daemon.SdWatchdogEnabled(false)
		if err != nil || interval <= 0 {
			<-ctx.Done()
			return nil
		}
		t := time.NewTicker(interval / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
				return nil
			case <-t.C:
			}
			if why := watchdogVeto(a.Health.Summary(), time.Now(), 3*HealthInterval); why != "" {
				a.log.Error("not feeding the systemd watchdog", "why", why)
				continue
			}
			_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		}
	}}
}

// watchdogVeto says why the watchdog must not be fed: the last health
// round is older than maxAge (the loop hangs), or the API does not answer.
func watchdogVeto(s *v1.HealthSummary, now time.Time, maxAge time.Duration) string {
	if s.GetCheckTime() == nil || now.Sub(s.GetCheckTime().AsTime()) > maxAge {
		return "the health loop has not completed a round recently"
	}
	for _, c := range s.GetChecks() {
		if c.GetName() == "api-serving" && !c.GetOk() {
			return "api-serving: " + c.GetMessage()
		}
	}
	return ""
}
