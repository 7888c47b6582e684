package network

import (
	"context"
	"flag"
	"testing"
	"time"
)

// BenchmarkRevertTiming measures, per unconfirmed change, the time from
// calling Apply to the revert being complete, against its deadline (2 s by default):
// the change is a bridge with a port, an address and a route, in a
// network namespace. Reported: apply (Apply's own time), revert-at (Apply
// to revert done) and overshoot (revert-at minus the deadline), each the
// mean, plus the worst overshoot. -revert-deadline sets the deadline (the
// node's default is 60 s).
//
//	go test -run '^$' -bench RevertTiming -benchtime 5x ./nodeagent/network/
//	go test -run '^$' -bench RevertTiming -benchtime 2x ./nodeagent/network/ -args -revert-deadline 60s
var revertDeadline = flag.Duration("revert-deadline", 2*time.Second, "BenchmarkRevertTiming: the confirm deadline")

func BenchmarkRevertTiming(b *testing.B) {
	deadline := *revertDeadline
	l := newLab(b)
	m := l.manager(b)
	ctx := context.Background()
	var apply, total, worst time.Duration
	for b.Loop() {
		changed := m.Changed()
		start := time.Now()
		if _, err := m.Apply(ctx, Request{Config: bridgeConfig(), Timeout: deadline}); err != nil {
			b.Fatal(err)
		}
		applied := time.Now()
		select {
		case <-changed:
		case <-time.After(deadline + 5*time.Second):
			b.Fatal("no revert")
		}
		took := time.Since(start)
		if _, ok := l.live(b).links["br0"]; ok {
			b.Fatal("br0 still there after the revert")
		}
		apply += applied.Sub(start)
		total += took
		worst = max(worst, took-deadline)
	}
	n := time.Duration(b.N)
	b.ReportMetric((apply/n).Seconds()*1000, "apply-ms")
	b.ReportMetric((total / n).Seconds(), "revert-at-s")
	b.ReportMetric((total/n-deadline).Seconds()*1000, "overshoot-ms")
	b.ReportMetric(worst.Seconds()*1000, "worst-overshoot-ms")
	b.ReportMetric(0, "ns/op")
}
