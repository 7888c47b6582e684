package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/cluster"
)

// TestClusterFormation is the end-to-end proof with real agents,
// each in its own network namespace: n1 bootstraps with a preseeded token;
// n2–n5 on the same bridge find it with mDNS and join with the token and
// the CA hash (zero touch: only the enroll file the preseed would write);
// n6 on another subnet joins by address through the router. All six agree
// on the member list. A node with a wrong token is refused and changes
// nothing. A call through one member reaches another (gRPC and dvctl
// --node), without more rights than the caller's certificate. A killed
// node leaves every member list within the failure-detection time; a
// stopped one says goodbye and is usually gone at once.
func TestClusterFormation(t *testing.T) {
	l := newLab(t)
	start := time.Now()
	n1 := l.bootstrap("n1", "10.88.0.1")
	t.Logf("n1 bootstrapped and serving after %s", time.Since(start).Round(time.Millisecond))

	type spec struct {
		name, ip string
		mdns     bool
		join     []string
	}
	specs := []spec{
		{"n2", "10.88.0.2", true, nil}, {"n3", "10.88.0.3", true, nil}, {"n4", "10.88.0.4", true, nil}, {"n5", "10.88.0.5", true, nil},
		{"n6", "10.88.1.6", false, []string{"10.88.0.1:" + apiPort}},
	}
	joinStart := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(specs))
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = l.start(s.name, s.ip, l.joinEnroll(labToken), s.mdns, s.join...)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", specs[i].name, err)
		}
	}
	all := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
	conns := map[string]*grpc.ClientConn{}
	for _, name := range all {
		conns[name] = l.dial(l.nodes[name], "reader")
	}
	converged := waitAll(t, conns, all, 30*time.Second)
	t.Logf("6 agents agree on the member list %s after the joiners started", converged.Sub(joinStart).Round(time.Millisecond))
	for _, name := range all[1:] {
		if _, err := os.Stat(filepath.Join(l.nodes[name].dir, "enroll.yaml")); !os.IsNotExist(err) {
			t.Errorf("%s: enroll file (with the token) not removed after joining: %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(l.nodes[name].dir, "pki", "ca.key")); err == nil {
			t.Errorf("%s holds the CA key; only n1 may", name)
		}
	}
	ctx := context.Background()
	admin := v1.NewClusterServiceClient(l.dial(n1, "admin"))
	tokens := func() int32 {
		r, err := admin.ListJoinTokens(ctx, &v1.ListJoinTokensRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetTokens()[0].GetUses()
	}
	if u := tokens(); u != 5 {
		t.Errorf("preseeded token used %d times, want 5", u)
	}

	t.Run("wrong token is refused", func(t *testing.T) {
		bad, err := l.start("bad", "10.88.0.7", l.joinEnroll("dvtest.zzzzzzzzzzzzzzzz"), true)
		if err == nil {
			bad.agent.Stop()
			t.Fatal("an agent with a wrong token started serving")
		}
		if !strings.Contains(err.Error(), "join token is not valid") {
			t.Fatalf("refusal does not say why: %v", err)
		}
		for _, f := range []string{"pki/node.crt", "pki/node.key", "pki/ca.crt", "state/cluster/state.json"} {
			if _, err := os.Stat(filepath.Join(l.dir, "bad", f)); err == nil {
				t.Errorf("the refused node got %s", f)
			}
		}
		waitAll(t, conns, all, 5*time.Second)
		if u := tokens(); u != 5 {
			t.Errorf("the refused join counted as a token use (%d)", u)
		}
	})

	t.Run("a call through one member reaches another", func(t *testing.T) {
		for _, target := range []string{"n4", "n6"} {
			nd, err := v1.NewNodeServiceClient(l.dial(n1, "reader")).GetNode(toNode(ctx, target), &v1.GetNodeRequest{})
			if err != nil || nd.GetName() != target {
				t.Fatalf("GetNode via n1 on %s: %v %v", target, nd.GetName(), err)
			}
		}
		// dvctl: one endpoint, --node picks the member.
		out, err := l.dvctl(l.nodes["n2"], "reader", "--node", "n6", "status", "-o", "json")
		if err != nil {
			t.Fatalf("dvctl --node n6 status: %v\n%s", err, out)
		}
		var st struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Name != "n6" {
			t.Fatalf("dvctl via n2 on n6 answered %q (%v)", out, err)
		}
		out, err = l.dvctl(n1, "reader", "--node", "n3", "cluster", "members")
		if err != nil {
			t.Fatalf("dvctl cluster members: %v\n%s", err, out)
		}
		for _, name := range all {
			if !strings.Contains(out, name+" ") {
				t.Errorf("dvctl cluster members misses %s:\n%s", name, out)
			}
		}
		// An operator gains nothing by going through another member.
		_, err = v1.NewClusterServiceClient(l.dial(l.nodes["n3"], "operator")).CreateJoinToken(toNode(ctx, "n1"), &v1.CreateJoinTokenRequest{})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("operator creating a token via n3 on n1: %v", err)
		}
		out, err = l.dvctl(l.nodes["n5"], "reader", "--node", "n9", "status")
		if err == nil || !strings.Contains(out, `node "n9" is not a member`) {
			t.Fatalf("dvctl --node n9: %v\n%s", err, out)
		}
	})

	t.Run("a killed node leaves every member list", func(t *testing.T) {
		killed := time.Now()
		l.nodes["n5"].agent.Kill()
		// Until gossip has dropped it, a call forwarded to it fails fast
		// and names it; afterwards it is not a member.
		_, err := v1.NewNodeServiceClient(l.dial(n1, "reader")).GetNode(toNode(ctx, "n5"), &v1.GetNodeRequest{})
		if c := status.Code(err); (c != codes.Unavailable && c != codes.NotFound) || !strings.Contains(err.Error(), "n5") {
			t.Errorf("forwarding to the killed n5: %v", err)
		}
		rest := slices.DeleteFunc(slices.Clone(all), func(s string) bool { return s == "n5" })
		delete(conns, "n5")
		bound := cluster.LANTiming().FailureDetectionBound(len(all))
		gone := waitAll(t, conns, rest, 2*bound)
		took := gone.Sub(killed)
		t.Logf("n5 killed: removed everywhere after %s (bound %s)", took.Round(time.Millisecond), bound)
		if took > bound {
			t.Errorf("removal took %s, longer than the failure-detection bound %s", took, bound)
		}
	})

	t.Run("a stopped node leaves", func(t *testing.T) {
		// It says goodbye (usually gone everywhere in a few 100 ms); the
		// goodbye is gossip over UDP, so the bound is failure detection's.
		stopped := time.Now()
		l.nodes["n4"].agent.Stop()
		delete(conns, "n4")
		gone := waitAll(t, conns, []string{"n1", "n2", "n3", "n6"}, cluster.LANTiming().FailureDetectionBound(len(all)))
		t.Logf("n4 stopped: removed everywhere after %s", gone.Sub(stopped).Round(time.Millisecond))
	})
	fmt.Fprintln(os.Stderr) // keep `go test` output readable after agent logs
}
