package netcfg

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

func TestDraftEdits(t *testing.T) {
	c := withBond(&v1.NetworkConfig{}, &v1.Bond{Name: "bond0", Mode: "802.3ad", Members: []string{"eth1", "eth2"}})
	c = withVLAN(c, &v1.Vlan{Name: "bond0.100", Parent: "bond0", Id: 100})
	c = withAddressing(c, "bond0.100", false, "192.0.2.10/24", "192.0.2.1")
	c = withAddressing(c, "eth3", true, "", "")
	want := []string{
		"+ bond bond0  802.3ad  members eth1, eth2",
		"+ vlan bond0.100  id 100 on bond0",
		"+ addr bond0.100  192.0.2.10/24 via 192.0.2.1",
		"+ addr eth3  DHCP",
	}
	if got := diff(&v1.NetworkConfig{}, c); !slices.Equal(got, want) {
		t.Errorf("diff:\n got %q\nwant %q", got, want)
	}
	if masterIn(c, "eth2") != "bond0" || virtualKind(c, "bond0.100") != "vlan" {
		t.Errorf("masterIn/virtualKind wrong on %v", c)
	}
	// Dropping the bond takes its VLAN along; the VLAN's addressing stays
	// in the draft for the API to refuse (it names a link that is gone).
	d := without(c, "bond0")
	if len(d.GetBonds()) != 0 || len(d.GetVlans()) != 0 || len(d.GetInterfaces()) != 2 {
		t.Errorf("without bond0: %v", d)
	}
	if len(c.GetBonds()) != 1 {
		t.Error("edits changed the configuration they started from")
	}
}

// fakeService keeps one pending change and reverts it when asked to read
// after its deadline, as the node would have.
type fakeService struct {
	now     time.Time
	pending *v1.NetworkChange
	last    *v1.NetworkChange
}

func (f *fakeService) GetNetwork(context.Context, *v1.GetNetworkRequest) (*v1.NetworkState, error) {
	if f.pending != nil && !f.now.Before(f.pending.GetDeadline().AsTime()) {
		f.last, f.pending = f.pending, nil
		f.last.State, f.last.Reason = v1.NetworkChange_STATE_REVERTED, "confirm deadline passed"
	}
	return &v1.NetworkState{
		Links:   []*v1.Link{{Name: "eth1", Kind: "device", Up: true, OperState: "up", Carrier: true, Mac: "02:00:00:00:00:01"}},
		Pending: f.pending, Last: f.last,
	}, nil
}

func (f *fakeService) ApplyNetwork(_ context.Context, r *v1.ApplyNetworkRequest) (*v1.ApplyNetworkResponse, error) {
	ch := &v1.NetworkChange{State: v1.NetworkChange_STATE_PLANNED, Plan: []string{"add address 192.0.2.10/24 to eth1"}}
	if !r.GetDryRun() {
		ch.Id, ch.State = "net-0000000000000001", v1.NetworkChange_STATE_PENDING
		ch.AppliedAt, ch.Deadline = timestamppb.New(f.now), timestamppb.New(f.now.Add(30*time.Second))
		f.pending = ch
	}
	return &v1.ApplyNetworkResponse{Change: ch}, nil
}

func (f *fakeService) ConfirmNetwork(context.Context, *v1.ConfirmNetworkRequest) (*v1.NetworkChange, error) {
	panic("not called")
}

func (f *fakeService) RevertNetwork(context.Context, *v1.RevertNetworkRequest) (*v1.NetworkChange, error) {
	panic("not called")
}

// run feeds msg to the model and the messages its commands return
// (ticks aside), as the program would.
func run(m *model, msg tea.Msg) {
	_, cmd := m.Update(msg)
	for cmd != nil {
		out := cmd()
		if _, ok := out.(tickMsg); ok || out == nil {
			return
		}
		if b, ok := out.(tea.BatchMsg); ok {
			for _, c := range b {
				if o := c(); o != nil {
					if _, ok := o.(tickMsg); !ok {
						run(m, o)
					}
				}
			}
			return
		}
		_, cmd = m.Update(out)
	}
}

func keys(m *model, ks ...tea.KeyMsg) {
	for _, k := range ks {
		run(m, k)
	}
}

func runes(s string) tea.KeyMsg { return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)} }

func TestUnconfirmedChangeCountsDownAndReverts(t *testing.T) {
	f := &fakeService{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := newModel(context.Background(), Options{Service: f, Now: func() time.Time { return f.now }})
	run(m, m.load()())
	keys(m, runes("a"), tea.KeyMsg{Type: tea.KeyRight}, tea.KeyMsg{Type: tea.KeyDown}, runes("192.0.2.10/24"),
		tea.KeyMsg{Type: tea.KeyEnter}, runes("r"))
	if !strings.Contains(m.View(), "✓ Valid") {
		t.Fatalf("no valid plan:\n%s", m.View())
	}
	keys(m, tea.KeyMsg{Type: tea.KeyEnter})
	if v := m.View(); !strings.Contains(v, "Reverts in 0:30 unless confirmed") {
		t.Fatalf("no countdown:\n%s", v)
	}
	f.now = f.now.Add(12 * time.Second)
	if v := m.View(); !strings.Contains(v, "Reverts in 0:18") {
		t.Fatalf("the countdown does not follow the clock:\n%s", v)
	}
	f.now = f.now.Add(20 * time.Second)
	run(m, tickMsg{})
	v := m.View()
	if m.screen != linksScreen || !strings.Contains(v, "reverted: confirm deadline passed") {
		t.Fatalf("the revert is not shown:\n%s", v)
	}
	for i, l := range strings.Split(v, "\n") {
		if n := len([]rune(l)); n > 80 {
			t.Errorf("line %d is %d columns wide: %q", i+1, n, l)
		}
	}
	if n := strings.Count(v, "\n") + 1; n != 24 {
		t.Errorf("the screen has %d lines, not 24", n)
	}
}
