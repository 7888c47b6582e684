package provider

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/acctest"

	"github.com/debvisor/debvisor/testenv/agent"
)

// cliConfig is a configuration for the CLI run as a user runs it (provider from dev_overrides).
func cliConfig(body string) string {
	return `terraform {
  required_providers {
    debvisor = { source = "registry.terraform.io/debvisor/debvisor" }
  }
}
` + body
}

// faultRun is one apply of n VMs that something interrupts, followed by the checks issue 13
// asks for: the next apply converges, with no orphan and no duplicate (virsh as witness).
type faultRun struct {
	t      *testing.T
	w      *tofuWork
	prefix string
	n      int
}

func newFaultRun(t *testing.T, name string, n int, env []string) *faultRun {
	prefix := acctest.RandomWithPrefix("tf-acc-" + name)
	r := &faultRun{t: t, w: newTofuWork(t, cliConfig(vmsConfig(prefix, n)), env), prefix: prefix, n: n}
	t.Cleanup(r.cleanup)
	return r
}

// applyInterrupted starts an apply and, once at least `after` of its VMs exist on the node,
// calls interrupt (with the running CLI). It returns the first apply's exit code.
func (r *faultRun) applyInterrupted(after int, interrupt func(cli *exec.Cmd)) int {
	t := r.t
	var out bytes.Buffer
	cmd := r.w.command(&out, "apply", "-auto-approve", "-input=false", "-parallelism="+strconv.Itoa(r.n))
	must(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		all, running := virshDomains(t, r.prefix)
		if len(running) == r.n {
			_ = cmd.Process.Kill()
			t.Fatalf("all %d VMs were already running before the interruption: it would not be mid-apply", r.n)
		}
		if len(all) >= after {
			t.Logf("%d of %d VMs defined on the node, %d running: interrupting", len(all), r.n, len(running))
			interrupt(cmd)
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the apply ended (exit %d) before %d VMs existed; output:\n%s", exitCode(t, err), after, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d VMs after 5 minutes; output:\n%s", after, out.String())
		}
	}
	var err error
	select {
	case err = <-exited:
	case <-time.After(10 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("the interrupted apply did not end within 10 minutes; output:\n%s", out.String())
	}
	code := exitCode(t, err)
	t.Logf("interrupted apply: exit %d; output (tail):\n%s", code, tail(out.String(), 40))
	return code
}

// converges checks the next apply: zero errors, then an empty plan, exactly the n VMs running on
// the node and in the state, then destroy leaves none.
func (r *faultRun) converges() {
	t := r.t
	if out, code := r.w.run("apply", "-auto-approve", "-input=false", "-parallelism="+strconv.Itoa(r.n)); code != 0 {
		t.Fatalf("the next apply did not converge (exit %d):\n%s", code, out)
	}
	if out, code := r.w.run("plan", "-input=false", "-detailed-exitcode"); code != 0 {
		t.Fatalf("plan after the converging apply: exit %d (want 0, empty):\n%s", code, out)
	}
	want := wantNames(r.prefix, r.n)
	all, running := virshDomains(t, r.prefix)
	if !slices.Equal(all, want) || !slices.Equal(running, want) {
		t.Fatalf("virsh: domains %v, running %v; want exactly the %d VMs, all running (no orphan, no duplicate)", all, running, r.n)
	}
	out, code := r.w.run("state", "list")
	if code != 0 || len(strings.Fields(out)) != r.n {
		t.Fatalf("state list (exit %d) has %d resources, want %d:\n%s", code, len(strings.Fields(out)), r.n, out)
	}
	if out, code := r.w.run("destroy", "-auto-approve", "-input=false", "-parallelism="+strconv.Itoa(r.n)); code != 0 {
		t.Fatalf("destroy: exit %d:\n%s", code, out)
	}
	if all, _ := virshDomains(t, r.prefix); len(all) != 0 {
		t.Fatalf("virsh still lists %v after destroy", all)
	}
}

// cleanup removes what a failed run left behind on the shared libvirtd: its own domains only.
func (r *faultRun) cleanup() {
	all, _ := virshDomains(r.t, r.prefix)
	if len(all) == 0 {
		return
	}
	_, _ = r.w.run("destroy", "-auto-approve", "-input=false", "-parallelism="+strconv.Itoa(r.n))
	all, _ = virshDomains(r.t, r.prefix)
	for _, name := range all {
		_ = exec.Command("virsh", "-c", "qemu:///system", "destroy", name).Run()
		_ = exec.Command("virsh", "-c", "qemu:///system", "undefine", "--nvram", name).Run()
	}
}

// TestAccVMResource_agentKilled: the agent is killed (SIGKILL, as a crash) and restarted while an
// apply of 20 VMs runs. The provider retries against the restarted agent with the same request
// ids; whatever the first apply reports, the next one converges with no orphan and no duplicate.
func TestAccVMResource_agentKilled(t *testing.T) {
	testAccAgent(t) // libvirtd, and the agent binary built once
	a, err := agent.Start(context.Background(), agent.Options{Dir: t.TempDir(), Binary: testAccAgent(t).Binary()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	r := newFaultRun(t, "kill", 20, a.Env())
	r.applyInterrupted(5, func(*exec.Cmd) {
		a.Kill()
		time.Sleep(2 * time.Second)
		if err := a.Restart(context.Background()); err != nil {
			t.Errorf("restart the agent: %v", err)
		}
	})
	r.converges()
	t.Logf("creates the restarted agent finished for a resent request id: %d", strings.Count(a.Log(), "create retried: finishing"))
}

// TestAccVMResource_interrupted: the CLI gets SIGINT (Ctrl-C) during an apply of 20 VMs. Creates
// the agent had accepted are in the state (tainted when unfinished); the next apply converges
// with no orphan and no duplicate.
func TestAccVMResource_interrupted(t *testing.T) {
	testAccAgent(t)
	r := newFaultRun(t, "sigint", 20, nil)
	if code := r.applyInterrupted(5, func(cli *exec.Cmd) { _ = cli.Process.Signal(os.Interrupt) }); code == 0 {
		t.Log("the interrupted apply still exited 0 (everything was already in flight)")
	}
	r.converges()
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
