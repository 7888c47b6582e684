package cluster_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
)

// BenchmarkCluster measures, with real agents in network namespaces on one
// bridge (docs/benchmarks.md, "Cluster formation"):
//   - converge-s: from starting N-1 agents (with only the enroll file a
//     preseed writes: token and CA hash; mDNS finds the first node) until
//     all N list all N members;
//   - kill-removed-s: from SIGKILL of one member until every other member
//     has dropped it (failure detection);
//   - stop-removed-s: the same for a graceful stop (SIGTERM: leave).
//
// Run: go test -run '^$' -bench Cluster -benchtime 3x ./nodeagent/cluster/
func BenchmarkCluster(b *testing.B) {
	for _, n := range []int{5, 10} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var conv, kill, stop time.Duration
			for i := 0; i < b.N; i++ {
				c, k, s := clusterRound(b, n)
				conv, kill, stop = conv+c, kill+k, stop+s
			}
			b.ReportMetric(conv.Seconds()/float64(b.N), "converge-s")
			b.ReportMetric(kill.Seconds()/float64(b.N), "kill-removed-s")
			b.ReportMetric(stop.Seconds()/float64(b.N), "stop-removed-s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func clusterRound(b *testing.B, n int) (converge, kill, stop time.Duration) {
	b.StopTimer()
	defer b.StartTimer()
	l := newLab(b)
	// n01 (10.88.0.1) bootstraps; n02… (10.88.0.2…) join.
	var names []string
	for i := 1; i <= n; i++ {
		names = append(names, fmt.Sprintf("n%02d", i))
	}
	l.bootstrap(names[0], "10.88.0.1")
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, name := range names[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = l.start(name, fmt.Sprintf("10.88.0.%d", i+2), l.joinEnroll(labToken), true)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	conns := map[string]*grpc.ClientConn{}
	for _, name := range names {
		conns[name] = l.dial(l.nodes[name], "reader")
	}
	converge = waitAll(b, conns, names, 60*time.Second).Sub(start)

	victim := names[len(names)-1]
	rest := names[:len(names)-1]
	delete(conns, victim)
	t0 := time.Now()
	l.nodes[victim].agent.Kill()
	kill = waitAll(b, conns, rest, 60*time.Second).Sub(t0)

	leaver := rest[len(rest)-1]
	delete(conns, leaver)
	t0 = time.Now()
	l.nodes[leaver].agent.Stop()
	stop = waitAll(b, conns, rest[:len(rest)-1], 60*time.Second).Sub(t0)
	b.Logf("N=%d: converged %s, killed member removed %s, stopped member removed %s", n, converge.Round(time.Millisecond), kill.Round(time.Millisecond), stop.Round(time.Millisecond))
	return converge, kill, stop
}
