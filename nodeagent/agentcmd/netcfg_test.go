package agentcmd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/testenv/netns"
)

// mainEnv makes this test binary run debvisor-agent's command line instead
// of the tests: TestNetcfgConsole starts it on a tmux terminal.
const mainEnv = "DEBVISOR_AGENTCMD_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		os.Exit(Main(context.Background(), os.Args[1:]))
	}
	os.Exit(m.Run())
}

// screen is a tmux session of 80×24 running one command.
type screen struct {
	t      *testing.T
	socket string // tmux -L: a server of our own, not the user's
	shots  int
}

func newScreen(t *testing.T, command string) *screen {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("the console test needs tmux (scripts/deps/base.apt): %v", err)
	}
	s := &screen{t: t, socket: fmt.Sprintf("dvtest%d", os.Getpid())}
	s.tmux("new-session", "-d", "-x", "80", "-y", "24", "-s", "netcfg", command)
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", s.socket, "kill-server").Run() })
	s.tmux("set-option", "-t", "netcfg", "remain-on-exit", "on")
	return s
}

func (s *screen) tmux(args ...string) string {
	s.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", s.socket}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (s *screen) capture() string { return s.tmux("capture-pane", "-p", "-t", "netcfg") }

// keys sends tmux key names ("Down", "Space", "Enter") or literal text.
func (s *screen) keys(keys ...string) {
	s.t.Helper()
	for _, k := range keys {
		s.tmux("send-keys", "-t", "netcfg", k)
		// One key per frame: a burst could land in the same read and
		// arrive as one run of characters.
		time.Sleep(60 * time.Millisecond)
	}
}

// waitFor waits until the screen shows every want, then logs it as the
// step's screenshot and returns it.
func (s *screen) waitFor(step string, want ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := s.capture()
		missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return strings.Contains(got, w) })
		if len(missing) == 0 {
			s.shots++
			s.t.Logf("screen %d, %s:\n%s", s.shots, step, frame(got))
			return got
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: the screen never showed %q:\n%s", step, missing, frame(got))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// frame boxes a capture so its 80 columns and blank lines show in the log.
func frame(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	var b strings.Builder
	b.WriteString("┌" + strings.Repeat("─", 80) + "┐\n")
	for _, l := range lines {
		n := len([]rune(l))
		b.WriteString("│" + l + strings.Repeat(" ", max(80-n, 0)) + "│\n")
	}
	b.WriteString("└" + strings.Repeat("─", 80) + "┘")
	return b.String()
}

// lineWith returns the screen's line holding every part.
func lineWith(screen string, parts ...string) string {
	for _, l := range strings.Split(screen, "\n") {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(l, p) }) {
			return l
		}
	}
	return ""
}

// TestNetcfgConsole drives `debvisor-agent netcfg` on a real terminal
// (tmux, 80×24) in a network namespace with two NICs (veths, their peers
// in a second namespace): a VLAN id the API refuses is shown inline and
// nothing is written; then a bond of both NICs (802.3ad), VLAN 100 on it
// with a static address and gateway, reviewed, applied and confirmed
// before its deadline. Every screen is logged.
//
// The console runs the agent's network service in process (no agent on
// the socket), on a state directory and networkd directory of its own.
// This host's kernel has no bonding or 802.1Q module, so there the agent
// config sets network.files_only: validation, plan, networkd files,
// desired configuration and the pending/confirmed record are the real
// ones, the netlink steps are not run. Creating bonds and VLANs live is
// proven in a QEMU guest, not here; where the kernel can make a bond,
// this test applies live and checks the links too.
func TestNetcfgConsole(t *testing.T) {
	node, peer := netns.Add(t, "tui"), netns.Add(t, "tuipeer")
	for i, nic := range []string{"eth1", "eth2"} {
		node.MustIP(t, "link", "add", nic, "address", fmt.Sprintf("02:00:00:00:00:%02x", i+1), "type", "veth",
			"peer", "name", "p"+nic, "netns", peer.Name)
		node.MustIP(t, "link", "set", nic, "up")
		peer.MustIP(t, "link", "set", "p"+nic, "up")
	}
	live := node.IP("link", "add", "dvprobe0", "type", "bond") == nil &&
		node.IP("link", "add", "link", "dvprobe0", "name", "dvprobe0.2", "type", "vlan", "id", "2") == nil
	_ = node.IP("link", "del", "dvprobe0")
	if live {
		t.Log("this kernel makes bonds and VLANs: the change is applied live")
	} else {
		t.Log("no bonding/802.1Q in this kernel: network.files_only (validation, plan, files, confirm; no netlink steps)")
	}

	dir := t.TempDir()
	networkd, state := filepath.Join(dir, "network"), filepath.Join(dir, "state")
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, `socket: %q
state_dir: %q
network:
  enabled: true
  networkd_dir: %q
  management_interface: ""
  confirm_deadline: 120s
  reload_networkd: false
  resolv_conf: ""
  files_only: %v
`, filepath.Join(dir, "agent.sock"), state, networkd, !live), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(networkd, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s := newScreen(t, fmt.Sprintf("env %s=1 LANG=C.UTF-8 TERM=xterm-256color ip netns exec %s %s netcfg --config %s 2>%s",
		mainEnv, node.Name, exe, cfgPath, filepath.Join(dir, "stderr")))
	t.Cleanup(func() {
		if b, _ := os.ReadFile(filepath.Join(dir, "stderr")); len(b) > 0 {
			t.Logf("netcfg stderr:\n%s", b)
		}
	})

	scr := s.waitFor("the links", "LINK", "eth1", "eth2", "02:00:00:00:00:01", "q quit")
	if l := lineWith(scr, "eth1", "veth", "up"); l == "" {
		t.Errorf("eth1 is not listed as an up veth")
	}

	// A bond of both NICs, mode chosen with →.
	s.keys("b")
	s.waitFor("the bond form", "Create a bond", "[bond0", "active-backup")
	s.keys("Down", "Right", "Down", "Space", "Down", "Space")
	scr = s.waitFor("the bond form filled in", "802.3ad")
	for _, nic := range []string{"eth1", "eth2"} {
		if lineWith(scr, nic, "[x]") == "" {
			t.Errorf("%s is not ticked", nic)
		}
	}
	s.keys("Enter")
	s.waitFor("the bond in the draft", "Bond bond0 (802.3ad) of eth1, eth2 added", "+ bond bond0  802.3ad  members eth1, eth2")

	// A VLAN id the API refuses: shown inline, nothing written.
	s.keys("Down", "Down", "v")
	s.waitFor("the VLAN form", "Add a VLAN", "◀ bond0 ▶")
	s.keys("Down", "4095", "Enter")
	s.waitFor("a bad VLAN in the draft", "+ vlan bond0.4095  id 4095 on bond0")
	s.keys("r")
	s.waitFor("the API refuses VLAN 4095", "✗ Refused, nothing was applied", "4095")
	if files, _ := os.ReadDir(networkd); len(files) != 0 {
		t.Errorf("a refused change wrote %d networkd files", len(files))
	}
	s.keys("Escape", "Down", "x")
	s.waitFor("the bad VLAN dropped", "Dropped bond0.4095")

	// VLAN 100 on the bond, its name the default parent.id.
	s.keys("v") // the cursor is back on bond0
	s.waitFor("the VLAN form again", "Add a VLAN", "◀ bond0 ▶")
	s.keys("Down", "100", "Enter")
	s.waitFor("the VLAN in the draft", "VLAN bond0.100 (id 100 on bond0) added")

	// Static addressing of the VLAN.
	s.keys("Down", "a")
	s.waitFor("the address form", "Addressing of bond0.100", "◀ DHCP ▶")
	s.keys("Right", "Down", "192.0.2.10/24", "Down", "192.0.2.1")
	s.waitFor("the address form filled in", "◀ static ▶", "[192.0.2.10/24]", "[192.0.2.1")
	s.keys("Enter")
	s.waitFor("the draft complete", "+ addr bond0.100  192.0.2.10/24 via 192.0.2.1", "bond0.100    vlan    new")

	// Review: the node's plan.
	s.keys("r")
	s.waitFor("the review", "✓ Valid", "create bond bond0 (802.3ad", "create vlan bond0.100 (id 100 on bond0)",
		"write 10-debvisor-bond0.netdev")

	// Apply: pending, with its countdown.
	s.keys("Enter")
	scr = s.waitFor("applied, pending", "waits for your confirmation", "Reverts in", "unless confirmed")
	if !strings.Contains(scr, "Reverts in 1:5") && !strings.Contains(scr, "Reverts in 2:00") {
		t.Errorf("the countdown does not start near the 120 s deadline")
	}
	if _, err := os.Stat(filepath.Join(state, "network", "pending.json")); err != nil {
		t.Errorf("no pending change on disk: %v", err)
	}
	time.Sleep(1100 * time.Millisecond)
	if scr2 := s.capture(); lineWith(scr2, "Reverts in") == lineWith(scr, "Reverts in") {
		t.Errorf("the countdown does not move:\n%s", frame(scr2))
	}

	// Confirm.
	s.keys("c")
	s.waitFor("confirmed", "confirmed.", "q quit")
	if _, err := os.Stat(filepath.Join(state, "network", "pending.json")); !os.IsNotExist(err) {
		t.Errorf("pending.json after the confirmation: %v", err)
	}
	var last v1.NetworkChange
	readProto(t, filepath.Join(state, "network", "last.json"), &last)
	if last.GetState() != v1.NetworkChange_STATE_CONFIRMED || !strings.HasPrefix(last.GetRequestedBy(), "console") {
		t.Errorf("last change: %v", &last)
	}
	var desired v1.NetworkConfig
	readProto(t, filepath.Join(state, "network", "desired.json"), &desired)
	want := &v1.NetworkConfig{
		Bonds:      []*v1.Bond{{Name: "bond0", Mode: "802.3ad", Members: []string{"eth1", "eth2"}}},
		Vlans:      []*v1.Vlan{{Name: "bond0.100", Parent: "bond0", Id: 100}},
		Interfaces: []*v1.InterfaceConfig{{Name: "bond0.100", Addresses: []string{"192.0.2.10/24"}, Gateway4: "192.0.2.1"}},
	}
	if !proto.Equal(&desired, want) {
		t.Errorf("desired configuration:\n got %v\nwant %v", &desired, want)
	}
	for file, lines := range map[string][]string{
		"10-debvisor-bond0.netdev":      {"Kind=bond", "Mode=802.3ad"},
		"10-debvisor-eth1.network":      {"Bond=bond0"},
		"10-debvisor-eth2.network":      {"Bond=bond0"},
		"10-debvisor-bond0.network":     {"VLAN=bond0.100"},
		"10-debvisor-bond0.100.netdev":  {"Kind=vlan", "Id=100"},
		"10-debvisor-bond0.100.network": {"Address=192.0.2.10/24", "Gateway=192.0.2.1"},
	} {
		b, err := os.ReadFile(filepath.Join(networkd, file))
		if err != nil {
			t.Error(err)
			continue
		}
		for _, l := range lines {
			if !strings.Contains(string(b), l+"\n") {
				t.Errorf("%s lacks %q:\n%s", file, l, b)
			}
		}
	}
	if live {
		out, err := node.Command("ip", "-d", "addr", "show", "bond0.100").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "192.0.2.10/24") || !strings.Contains(string(out), "id 100") {
			t.Errorf("bond0.100 live: %v\n%s", err, out)
		}
	}

	s.keys("q")
	deadline := time.Now().Add(5 * time.Second)
	for strings.TrimSpace(s.tmux("display-message", "-p", "-t", "netcfg", "#{pane_dead}")) != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("netcfg did not quit on q:\n%s", frame(s.capture()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := strings.TrimSpace(s.tmux("display-message", "-p", "-t", "netcfg", "#{pane_dead_status}")); st != "0" {
		t.Errorf("netcfg exited with status %s", st)
	}
}

func readProto(t *testing.T, path string, m proto.Message) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
