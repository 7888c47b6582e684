package server

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// BenchmarkGetNode measures the unary status RPC over mTLS on loopback with
// as many concurrent callers as the machine sustains: req/s is the maximum
// throughput (client and agent share the same cores).
//
//	go test -run '^$' -bench GetNode -benchtime 20000x ./nodeagent/server/
func BenchmarkGetNode(b *testing.B) {
	a := startAgent(b)
	conn := a.dial(b, "reader")
	c := v1.NewNodeServiceClient(conn)
	ctx := context.Background()
	if _, err := c.GetNode(ctx, &v1.GetNodeRequest{}); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.GetNode(ctx, &v1.GetNodeRequest{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// BenchmarkGetNodeAt1000rps sends GetNode at a fixed 1,000 requests/s (open
// loop: a slow response does not delay the next send) and reports latency
// percentiles. b.N is the number of requests.
//
//	go test -run '^$' -bench GetNodeAt1000rps -benchtime 5000x ./nodeagent/server/
func BenchmarkGetNodeAt1000rps(b *testing.B) {
	a := startAgent(b)
	c := v1.NewNodeServiceClient(a.dial(b, "reader"))
	ctx := context.Background()
	for range 100 { // warm the connection and the code paths
		if _, err := c.GetNode(ctx, &v1.GetNodeRequest{}); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			if _, err := c.GetNode(ctx, &v1.GetNodeRequest{}); err != nil {
				b.Error(err)
			}
			lat[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)]) / float64(time.Millisecond) }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
}
