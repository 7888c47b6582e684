package provider

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/acctest"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/testenv/agent"
)

// vmsConfig is n running VMs named PREFIX-0…, 64 MiB and no disk, as in issue 13.
func vmsConfig(prefix string, n int) string {
	var cfg strings.Builder
	for i := range n {
		fmt.Fprintf(&cfg, `
resource "debvisor_vm" "vm%[1]d" {
  name       = "%[2]s-%[1]d"
  vcpus      = 1
  memory_mib = 64
}
`, i, prefix)
	}
	return cfg.String()
}

// virshDomains lists the domains whose names start with prefix-, and which of them run: virsh is
// the witness, independent of the agent.
func virshDomains(t testing.TB, prefix string) (all, running []string) {
	t.Helper()
	list := func(args ...string) []string {
		out, err := exec.Command("virsh", append([]string{"-c", "qemu:///system", "-q", "list", "--name"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("virsh list: %v: %s", err, out)
		}
		var names []string
		for _, n := range strings.Fields(string(out)) {
			if strings.HasPrefix(n, prefix+"-") {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		return names
	}
	return list("--all"), list("--state-running")
}

// wantNames is PREFIX-0 … PREFIX-(n-1), sorted as virshDomains sorts.
func wantNames(prefix string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	slices.Sort(names)
	return names
}

// readSampler times reads of the agent from another client, every 100 ms until stopped: GetVM
// of one VM, and GetNode (which touches no libvirt) as the witness of how much of a slow sample is
// the machine's scheduling rather than the agent's read path.
type readSampler struct {
	stop     chan struct{}
	done     sync.WaitGroup
	getVM    latencies
	getNode  latencies
	snapshot int // GetVM answers that came from the agent's snapshot (libvirtd slow)
}

type latencies struct {
	samples []time.Duration
	errs    []error
}

// percentile returns the p-th (0..1) sample, 0 without samples.
func (l *latencies) percentile(p float64) time.Duration {
	if len(l.samples) == 0 {
		return 0
	}
	s := slices.Clone(l.samples)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

func (l *latencies) summary() string {
	if len(l.samples) == 0 {
		return "no samples"
	}
	pct := func(p float64) time.Duration { return l.percentile(p).Round(100 * time.Microsecond) }
	return fmt.Sprintf("%d samples, p50 %s, p99 %s, max %s", len(l.samples), pct(0.5), pct(0.99), pct(1))
}

func sampleReads(t testing.TB, a *agent.Agent, name string) *readSampler {
	t.Helper()
	c, err := client.New(client.Config{Endpoint: a.Endpoint, CAPEM: a.Reader.CAPEM, CertPEM: a.Reader.CertPEM, KeyPEM: a.Reader.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	s := &readSampler{stop: make(chan struct{})}
	loop := func(l *latencies, read func(context.Context) error) {
		defer s.done.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			t0 := time.Now()
			err := read(ctx)
			l.samples = append(l.samples, time.Since(t0))
			cancel()
			if err != nil {
				l.errs = append(l.errs, err)
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}
	s.done.Add(2)
	go loop(&s.getVM, func(ctx context.Context) error {
		t0 := time.Now()
		vm, err := c.VMs.GetVM(ctx, &v1.GetVMRequest{Name: name})
		if err == nil && vm.GetStatus().GetObservedTime().AsTime().Before(t0) {
			s.snapshot++
		}
		return err
	})
	go loop(&s.getNode, func(ctx context.Context) error {
		_, err := c.Node.GetNode(ctx, &v1.GetNodeRequest{})
		return err
	})
	go func() { s.done.Wait(); c.Close() }()
	return s
}

// finish stops sampling, logs the distributions and fails t for any error or any GetVM sample
// over the 1 s bound issue 13 sets.
func (s *readSampler) finish(t testing.TB) {
	t.Helper()
	close(s.stop)
	s.done.Wait()
	if len(s.getVM.samples) == 0 {
		t.Fatal("no GetVM samples")
	}
	t.Logf("GetVM of an unrelated VM during the apply: %s; %d answered from the agent's snapshot", s.getVM.summary(), s.snapshot)
	t.Logf("GetNode (no libvirt; the machine's own delays) during the apply: %s", s.getNode.summary())
	for _, err := range append(s.getVM.errs, s.getNode.errs...) {
		t.Errorf("read during the apply: %v", err)
	}
	for i, d := range s.getVM.samples {
		if d > time.Second {
			t.Errorf("GetVM sample %d took %s (> 1 s) during the apply", i, d.Round(time.Millisecond))
		}
	}
}

// apiClient is an admin client of the shared test agent.
func apiClient(t testing.TB, a *agent.Agent) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Endpoint: a.Endpoint, CAPEM: a.Admin.CAPEM, CertPEM: a.Admin.CertPEM, KeyPEM: a.Admin.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestAccVMResource_parallel50 applies 50 running VMs at -parallelism=50 (the CLI reads
// TF_CLI_ARGS_<command>) with default provider settings: zero errors, an empty plan afterwards
// (the framework checks that after every apply), and destroy leaves no domain (virsh). Meanwhile
// another client's GetVM of an unrelated VM must answer within 1 s every time (issue 13); the
// distribution is logged for docs/benchmarks.md.
func TestAccVMResource_parallel50(t *testing.T) {
	a := testAccAgent(t)
	const n = 50
	for _, cmd := range []string{"plan", "apply", "destroy", "refresh"} {
		t.Setenv("TF_CLI_ARGS_"+cmd, "-parallelism=50")
	}
	prefix := acctest.RandomWithPrefix("tf-acc-p50")
	c := apiClient(t, a)
	bystander := prefix + "-bystander"
	createVM(t, c, bystander)
	checks := make([]statecheck.StateCheck, 0, n)
	for i := range n {
		checks = append(checks, statecheck.ExpectKnownValue(fmt.Sprintf("debvisor_vm.vm%d", i), tfjsonpath.New("state"), knownvalue.StringExact("running")))
	}
	var sampler *readSampler
	var once sync.Once
	start := time.Now()
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		PreCheck:                 func() { sampler = sampleReads(t, a, bystander) },
		CheckDestroy: func(s *terraform.State) error {
			// The bystander is the test's own, not the configuration's.
			all, _ := virshDomains(t, prefix)
			if len(all) != 1 || all[0] != bystander {
				return fmt.Errorf("after destroy virsh lists %v, want only the bystander %s", all, bystander)
			}
			return nil
		},
		Steps: []resource.TestStep{{
			Config:            vmsConfig(prefix, n),
			ConfigStateChecks: checks,
			Check: func(*terraform.State) error {
				once.Do(func() {
					t.Logf("apply of %d running VMs: %s (from the first plan)", n, time.Since(start).Round(time.Millisecond))
					sampler.finish(t)
				})
				all, running := virshDomains(t, prefix)
				if want := append(wantNames(prefix, n), bystander); !slices.Equal(running, sorted(want)) || len(all) != n+1 {
					return fmt.Errorf("virsh: %d domains, running %v; want exactly the %d VMs and the bystander running", len(all), running, n)
				}
				return nil
			},
		}},
	})
}

func sorted(s []string) []string { slices.Sort(s); return s }

// createVM makes a running VM through the API (not the configuration) and deletes it at the end.
func createVM(t testing.TB, c *client.Client, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	op, err := c.VMs.CreateVM(ctx, &v1.CreateVMRequest{Vm: &v1.VM{Name: name, Spec: &v1.VMSpec{Vcpus: 1, MemoryMib: 64}}})
	if err == nil {
		_, err = c.Wait(ctx, op, nil)
	}
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		op, err := c.VMs.DeleteVM(ctx, &v1.DeleteVMRequest{Name: name})
		if err == nil {
			_, err = c.Wait(ctx, op, nil)
		}
		if err != nil {
			t.Errorf("delete %s: %v", name, err)
		}
	})
}
