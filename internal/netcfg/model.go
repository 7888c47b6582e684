package netcfg

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

type screen int

const (
	linksScreen screen = iota
	formScreen
	reviewScreen
	pendingScreen
)

// formKind says what a submitted form does to the draft.
type formKind int

const (
	bondForm formKind = iota
	vlanForm
	addrForm
)

type model struct {
	ctx context.Context
	o   Options

	width, height int
	screen        screen

	st    *v1.NetworkState // last read; nil until the first answer
	draft *v1.NetworkConfig
	rows  []row
	cur   int // selected row

	fm     *form
	fmKind formKind

	plan     *v1.NetworkChange // the dry run of the draft
	planErr  string
	planning bool
	scroll   int

	pending  *v1.NetworkChange
	deadline time.Time // local clock
	busy     string    // a call is running: what it does

	msg string // the status line: the last outcome or error
}

// row is one link of the list: live, or declared by the draft only.
type row struct {
	name, kind, state, carrier, mac, master, addrs string
}

type (
	stateMsg struct {
		st  *v1.NetworkState
		err error
	}
	planMsg struct {
		ch  *v1.NetworkChange
		err error
	}
	appliedMsg struct {
		ch  *v1.NetworkChange
		err error
	}
	resolvedMsg struct {
		ch  *v1.NetworkChange
		err error
	}
	tickMsg struct{}
)

func newModel(ctx context.Context, o Options) *model {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = 10 * time.Second
	}
	return &model{ctx: ctx, o: o, width: 80, height: 24, draft: &v1.NetworkConfig{}, busy: "reading the network"}
}

func (m *model) Init() tea.Cmd { return tea.Batch(m.load(), tick()) }

func tick() tea.Cmd { return tea.Tick(time.Second, func(time.Time) tea.Msg { return tickMsg{} }) }

func (m *model) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(m.ctx, m.o.CallTimeout)
}

func (m *model) load() tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := m.call()
		defer cancel()
		st, err := m.o.Service.GetNetwork(ctx, &v1.GetNetworkRequest{})
		return stateMsg{st, err}
	}
}

func (m *model) apply(dry bool) tea.Cmd {
	req := &v1.ApplyNetworkRequest{Config: proto.CloneOf(m.draft), DryRun: dry}
	if m.o.ConfirmTimeout > 0 {
		req.ConfirmTimeout = durationpb.New(m.o.ConfirmTimeout)
	}
	return func() tea.Msg {
		ctx, cancel := m.call()
		defer cancel()
		resp, err := m.o.Service.ApplyNetwork(ctx, req)
		if dry {
			return planMsg{resp.GetChange(), err}
		}
		return appliedMsg{resp.GetChange(), err}
	}
}

func (m *model) resolve(confirm bool) tea.Cmd {
	id := m.pending.GetId()
	return func() tea.Msg {
		ctx, cancel := m.call()
		defer cancel()
		var (
			ch  *v1.NetworkChange
			err error
		)
		if confirm {
			ch, err = m.o.Service.ConfirmNetwork(ctx, &v1.ConfirmNetworkRequest{Id: id})
		} else {
			ch, err = m.o.Service.RevertNetwork(ctx, &v1.RevertNetworkRequest{Id: id})
		}
		return resolvedMsg{ch, err}
	}
}

// edited reports whether the draft differs from the node's configuration.
func (m *model) edited() bool { return !proto.Equal(m.draft, m.desired()) }

func (m *model) desired() *v1.NetworkConfig {
	if d := m.st.GetDesired(); d != nil {
		return d
	}
	return &v1.NetworkConfig{}
}

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = max(msg.Width, 20), max(msg.Height, 10)
		return m, nil
	case tickMsg:
		if m.screen == pendingScreen && m.busy == "" && !m.o.Now().Before(m.deadline) {
			// The node reverts at the deadline: ask it what became of the change.
			m.busy = "waiting for the node to revert"
			return m, tea.Batch(m.load(), tick())
		}
		return m, tick()
	case stateMsg:
		m.busy = ""
		if msg.err != nil {
			m.msg = "✗ read the network: " + errText(msg.err)
			return m, nil
		}
		m.loaded(msg.st)
		return m, nil
	case planMsg:
		m.planning = false
		m.plan, m.planErr = msg.ch, ""
		if msg.err != nil {
			m.planErr = errText(msg.err)
		}
		return m, nil
	case appliedMsg:
		m.busy = ""
		if msg.err != nil {
			m.screen, m.planErr = reviewScreen, errText(msg.err)
			m.msg = "✗ not applied"
			return m, nil
		}
		m.pendingFrom(msg.ch)
		return m, nil
	case resolvedMsg:
		m.busy = ""
		if msg.err != nil {
			m.msg = "✗ " + errText(msg.err)
		} else {
			m.msg = fmt.Sprintf("Change %s %s.", msg.ch.GetId(), stateWord(msg.ch.GetState()))
		}
		m.busy = "reading the network"
		return m, m.load()
	case tea.KeyMsg:
		if msg.Type == tea.KeyCtrlC {
			return m, tea.Quit
		}
		if m.busy != "" && m.screen != pendingScreen {
			return m, nil
		}
		switch m.screen {
		case linksScreen:
			return m.linksKey(msg)
		case formScreen:
			return m.formKey(msg)
		case reviewScreen:
			return m.reviewKey(msg)
		case pendingScreen:
			return m.pendingKey(msg)
		}
	}
	return m, nil
}

func stateWord(s v1.NetworkChange_State) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

// loaded takes a fresh state: a pending change (ours or anyone's) shows
// its countdown; otherwise the list, the draft kept across the refresh
// unless the node's configuration moved under it.
func (m *model) loaded(st *v1.NetworkState) {
	prevDesired := m.desired()
	edited := m.st != nil && m.edited()
	m.st = st
	if !edited || !proto.Equal(prevDesired, m.desired()) {
		m.draft = proto.CloneOf(m.desired())
	}
	if p := st.GetPending(); p != nil {
		if m.pending.GetId() != p.GetId() {
			m.deadline = p.GetDeadline().AsTime()
		}
		m.pending, m.screen = p, pendingScreen
	} else if m.screen == pendingScreen {
		last := st.GetLast()
		if last.GetId() == m.pending.GetId() && m.msg == "" {
			m.msg = fmt.Sprintf("Change %s %s: %s.", last.GetId(), stateWord(last.GetState()), last.GetReason())
		}
		m.pending, m.screen = nil, linksScreen
	}
	m.rows = rowsOf(st, m.draft)
	m.cur = min(m.cur, max(len(m.rows)-1, 0))
}

func (m *model) pendingFrom(ch *v1.NetworkChange) {
	// Count down on our clock for the length the node gave: clocks of a
	// remote node and this terminal need not agree.
	d := ch.GetDeadline().AsTime().Sub(ch.GetAppliedAt().AsTime())
	m.pending, m.deadline, m.screen, m.msg = ch, m.o.Now().Add(d), pendingScreen, ""
}

// rowsOf lists the live links (loopback aside) and then those the draft
// declares that do not exist yet; masters and addressing are the draft's
// where it says something.
func rowsOf(st *v1.NetworkState, draft *v1.NetworkConfig) []row {
	var out []row
	live := map[string]bool{}
	for _, l := range st.GetLinks() {
		if l.GetKind() == "loopback" || l.GetName() == "lo" {
			continue
		}
		live[l.GetName()] = true
		state := l.GetOperState()
		if !l.GetUp() {
			state = "off"
		}
		r := row{name: l.GetName(), kind: l.GetKind(), state: state, carrier: yesNo(l.GetCarrier()), mac: l.GetMac(),
			master: l.GetMaster(), addrs: strings.Join(l.GetAddresses(), " ")}
		if ms := masterIn(draft, l.GetName()); ms != r.master && (ms != "" || declaresMaster(draft, r.master)) {
			r.master = "→" + dashIf(ms)
		}
		if ic := interfaceIn(draft, l.GetName()); ic != nil && addressing(ic) != r.addrs {
			r.addrs = "→" + addressing(ic)
		}
		out = append(out, r)
	}
	var fresh []row
	add := func(name, kind string) {
		if live[name] {
			return
		}
		r := row{name: name, kind: kind, state: "new", carrier: "-", mac: "-", master: masterIn(draft, name)}
		if ic := interfaceIn(draft, name); ic != nil {
			r.addrs = addressing(ic)
		}
		fresh = append(fresh, r)
	}
	for _, b := range draft.GetBonds() {
		add(b.GetName(), "bond")
	}
	for _, v := range draft.GetVlans() {
		add(v.GetName(), "vlan")
	}
	for _, b := range draft.GetBridges() {
		add(b.GetName(), "bridge")
	}
	return append(out, fresh...)
}

func declaresMaster(c *v1.NetworkConfig, name string) bool {
	k := virtualKind(c, name)
	return name != "" && (k == "bond" || k == "bridge")
}

func interfaceIn(c *v1.NetworkConfig, name string) *v1.InterfaceConfig {
	for _, ic := range c.GetInterfaces() {
		if ic.GetName() == name {
			return ic
		}
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dashIf(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (m *model) selected() string {
	if m.cur < len(m.rows) {
		return m.rows[m.cur].name
	}
	return ""
}

func (m *model) linksKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	m.msg = ""
	switch k.String() {
	case "up", "k":
		m.cur = max(m.cur-1, 0)
	case "down", "j":
		m.cur = min(m.cur+1, max(len(m.rows)-1, 0))
	case "b":
		m.openBond()
	case "v":
		m.openVLAN()
	case "a", "enter":
		if n := m.selected(); n != "" {
			m.openAddr(n)
		}
	case "x", "delete":
		if n := m.selected(); n != "" && declares(m.draft, n) {
			m.draft = without(m.draft, n)
			m.rows = rowsOf(m.st, m.draft)
			m.cur = min(m.cur, max(len(m.rows)-1, 0))
			m.msg = "Dropped " + n + " from the new configuration."
		}
	case "u":
		m.draft = proto.CloneOf(m.desired())
		m.rows = rowsOf(m.st, m.draft)
		m.msg = "Edits undone."
	case "g":
		m.busy = "reading the network"
		return m, m.load()
	case "r":
		if !m.edited() {
			m.msg = "Nothing to apply: the configuration is unchanged."
			return m, nil
		}
		m.screen, m.plan, m.planErr, m.planning, m.scroll = reviewScreen, nil, "", true, 0
		return m, m.apply(true)
	case "q":
		return m, tea.Quit
	}
	return m, nil
}

// memberCandidates are the links a bond may take: NICs (and veths, which
// stand in for them in tests), not the virtual links DebVisor makes.
func (m *model) memberCandidates() []row {
	var out []row
	for _, r := range m.rows {
		switch r.kind {
		case "bond", "vlan", "bridge", "tun", "loopback":
			continue
		}
		if r.state == "new" {
			continue
		}
		out = append(out, r)
	}
	return out
}

func (m *model) openBond() {
	name := "bond0"
	for i := 0; virtualKind(m.draft, name) != "" || m.isLive(name); i++ {
		name = "bond" + strconv.Itoa(i+1)
	}
	fm := &form{title: "Create a bond: tick its members with Space"}
	fm.fields = append(fm.fields,
		&field{kind: textField, label: "Name", value: name},
		&field{kind: choiceField, label: "Mode", choices: BondModes},
		&field{kind: labelField, label: "Members"})
	for _, r := range m.memberCandidates() {
		fm.fields = append(fm.fields, &field{kind: checkField, label: r.name,
			hint: fmt.Sprintf("%-4s %-8s carrier %-3s %s", r.kind, r.state, r.carrier, r.mac)})
	}
	m.fm, m.fmKind, m.screen = fm.first(), bondForm, formScreen
}

func (m *model) isLive(name string) bool {
	return slices.ContainsFunc(m.st.GetLinks(), func(l *v1.Link) bool { return l.GetName() == name })
}

func (m *model) openVLAN() {
	var parents []string
	for _, r := range m.rows {
		if r.kind != "vlan" && r.kind != "bridge" {
			parents = append(parents, r.name)
		}
	}
	if len(parents) == 0 {
		m.msg = "✗ no link to put a VLAN on"
		return
	}
	parent := &field{kind: choiceField, label: "Parent", choices: parents}
	if i := slices.Index(parents, m.selected()); i >= 0 {
		parent.choice = i
	}
	fm := &form{title: "Add a VLAN (802.1Q) on a NIC or bond", fields: []*field{
		parent,
		{kind: textField, label: "VLAN id", hint: "1-4094"},
		{kind: textField, label: "Name", hint: "empty: <parent>.<id>"},
	}}
	m.fm, m.fmKind, m.screen = fm.first(), vlanForm, formScreen
}

func (m *model) openAddr(name string) {
	method := &field{kind: choiceField, label: "Method", choices: []string{"DHCP", "static"}}
	addr := &field{kind: textField, label: "Address", hint: "CIDR, e.g. 192.0.2.10/24"}
	gw := &field{kind: textField, label: "Gateway", hint: "optional"}
	if ic := interfaceIn(m.draft, name); ic != nil && !ic.GetDhcp4() && len(ic.GetAddresses()) > 0 {
		method.choice, addr.value, gw.value = 1, ic.GetAddresses()[0], ic.GetGateway4()+ic.GetGateway6()
	}
	static := func() bool { return method.choice == 0 }
	addr.hidden, gw.hidden = static, static
	fm := &form{title: "Addressing of " + name, fields: []*field{
		{kind: labelField, label: "Interface", value: name}, method, addr, gw,
	}}
	m.fm, m.fmKind, m.screen = fm.first(), addrForm, formScreen
}

func (m *model) formKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.Type {
	case tea.KeyEsc:
		m.screen, m.msg = linksScreen, ""
		return m, nil
	case tea.KeyEnter:
		if err := m.submit(); err != "" {
			m.msg = "✗ " + err
			return m, nil
		}
		m.screen = linksScreen
		m.rows = rowsOf(m.st, m.draft)
		return m, nil
	}
	m.fm.key(k)
	return m, nil
}

// submit adds the form to the draft. It checks only what the form needs
// to build a request; the API validates the rest at review.
func (m *model) submit() string {
	f := m.fm.fields
	switch m.fmKind {
	case bondForm:
		name := f[0].value
		if name == "" {
			return "the bond needs a name"
		}
		var members []string
		for _, x := range f[3:] {
			if x.checked {
				members = append(members, x.label)
			}
		}
		if len(members) == 0 {
			return "tick at least one member with Space"
		}
		m.draft = withBond(m.draft, &v1.Bond{Name: name, Mode: f[1].chosen(), Members: members})
		m.msg = fmt.Sprintf("Bond %s (%s) of %s added: r reviews and applies.", name, f[1].chosen(), strings.Join(members, ", "))
	case vlanForm:
		id, err := strconv.ParseUint(f[1].value, 10, 32)
		if err != nil {
			return fmt.Sprintf("VLAN id %q is not a number", f[1].value)
		}
		name := f[2].value
		if name == "" {
			name = fmt.Sprintf("%s.%d", f[0].chosen(), id)
		}
		m.draft = withVLAN(m.draft, &v1.Vlan{Name: name, Parent: f[0].chosen(), Id: uint32(id)})
		m.msg = fmt.Sprintf("VLAN %s (id %d on %s) added.", name, id, f[0].chosen())
	case addrForm:
		name, dhcp := f[0].value, f[1].choice == 0
		if !dhcp {
			if _, err := netip.ParsePrefix(f[2].value); err != nil {
				return fmt.Sprintf("address %q is not in CIDR form (192.0.2.10/24)", f[2].value)
			}
		}
		m.draft = withAddressing(m.draft, name, dhcp, f[2].value, f[3].value)
		m.msg = fmt.Sprintf("%s: %s.", name, addressing(interfaceIn(m.draft, name)))
	}
	return ""
}

func (m *model) reviewKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.String() {
	case "esc", "q":
		m.screen = linksScreen
	case "up", "k":
		m.scroll = max(m.scroll-1, 0)
	case "down", "j":
		m.scroll++
	case "enter", "a":
		if m.planning || m.planErr != "" || m.plan == nil {
			return m, nil
		}
		m.busy = "applying"
		return m, m.apply(false)
	}
	return m, nil
}

func (m *model) pendingKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	if m.busy != "" {
		return m, nil
	}
	switch k.String() {
	case "c", "enter":
		m.busy = "confirming"
		return m, m.resolve(true)
	case "r":
		m.busy = "reverting"
		return m, m.resolve(false)
	}
	return m, nil
}
