package provider

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkPlan200 measures `tofu plan` (with refresh) of a configuration of 200 resources
// (1 pool, 120 volumes, 79 stopped VMs) against one agent, with the provider installed the way a
// user runs it (a built binary under dev_overrides), after one apply has created everything.
// Reads never wait on a guest, so refreshing a VM costs one GetVM. Run with:
//
//	go test ./provider -run '^$' -bench Plan200 -benchtime 5x
func BenchmarkPlan200(b *testing.B) {
	testAccAgent(b)
	w := newTofuWork(b, plan200Config(poolParent(b)+"/bench"), nil)
	run := w.run
	start := time.Now()
	if out, code := run("apply", "-auto-approve", "-input=false", "-parallelism=20"); code != 0 {
		b.Fatalf("setup apply failed (%d):\n%s", code, out)
	}
	b.Logf("setup: apply of 200 resources took %s", time.Since(start).Round(time.Millisecond))
	b.Cleanup(func() {
		if out, code := run("destroy", "-auto-approve", "-input=false", "-parallelism=20"); code != 0 {
			b.Errorf("destroy failed (%d):\n%s", code, out)
		}
	})

	b.ResetTimer()
	for range b.N {
		// -detailed-exitcode: 0 means an empty plan, 2 a diff, 1 an error.
		if out, code := run("plan", "-input=false", "-detailed-exitcode", "-lock=false"); code != 0 {
			b.Fatalf("plan exit %d (want 0, an empty plan):\n%s", code, out)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/plan")
	// For comparison: the same plan without refresh is the CLI's own cost (no agent calls).
	start = time.Now()
	if out, code := run("plan", "-input=false", "-detailed-exitcode", "-lock=false", "-refresh=false"); code != 0 {
		b.Fatalf("plan -refresh=false exit %d:\n%s", code, out)
	}
	b.Logf("plan -refresh=false: %s", time.Since(start).Round(time.Millisecond))
}

func plan200Config(poolPath string) string {
	var s strings.Builder
	fmt.Fprintf(&s, `terraform {
  required_providers {
    debvisor = { source = "registry.terraform.io/debvisor/debvisor" }
  }
}

resource "debvisor_storage_pool" "bench" {
  name           = "bench200"
  path           = %q
  force_destroy  = true
  delete_storage = true
}
`, poolPath)
	for i := range 120 {
		fmt.Fprintf(&s, `
resource "debvisor_volume" "v%[1]d" {
  pool           = debvisor_storage_pool.bench.id
  name           = "bench-v%[1]d"
  capacity_bytes = 1048576
}
`, i)
	}
	for i := range 79 {
		fmt.Fprintf(&s, `
resource "debvisor_vm" "vm%[1]d" {
  name        = "bench-vm%[1]d"
  vcpus       = 1
  memory_mib  = 32
  power_state = "stopped"
  disks       = [{ pool = debvisor_volume.v%[1]d.pool, volume = debvisor_volume.v%[1]d.name }]
  nics        = [{}]
}
`, i)
	}
	return s.String()
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}
