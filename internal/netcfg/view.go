package netcfg

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// View draws the screen: a title bar, the body, a rule, the status line
// and the key help, exactly the terminal's height (24 lines at least
// fit an 80×24 console).
func (m *model) View() string {
	var body []string
	help := ""
	switch m.screen {
	case linksScreen:
		body, help = m.linksView(), "↑↓ move  b bond  v VLAN  a address  x drop  u undo  r review+apply  q quit"
	case formScreen:
		body, help = m.fm.lines(), "↑↓/Tab field  ←→ choose  Space tick  Enter OK  Esc cancel"
	case reviewScreen:
		body, help = m.reviewView(), "Enter apply  ↑↓ scroll  Esc back to editing"
	case pendingScreen:
		body, help = m.pendingView(), "c/Enter confirm (keep it)  r revert now  — no answer reverts at the deadline"
	}
	title := " DebVisor network configuration "
	if m.o.Source != "" {
		title += "─ " + m.o.Source + " "
	}
	status := m.msg
	if m.busy != "" {
		status = "… " + m.busy
	}
	w, h := m.width, m.height
	lines := make([]string, 0, h)
	bar := fit("──"+title, w)
	lines = append(lines, bar+strings.Repeat("─", max(w-utf8.RuneCountInString(bar), 0)))
	room := h - 4
	if len(body) > room {
		body = body[:room]
	}
	for _, l := range body {
		lines = append(lines, fit(" "+l, w))
	}
	for len(lines) < h-3 {
		lines = append(lines, "")
	}
	lines = append(lines, strings.Repeat("─", w), fit(" "+status, w), fit(" "+help, w))
	return strings.Join(lines, "\n")
}

// fit cuts s to w columns (every rune drawn here is one column wide).
func fit(s string, w int) string {
	if utf8.RuneCountInString(s) <= w {
		return s
	}
	r := []rune(s)
	return string(r[:w-1]) + "…"
}

func (m *model) linksView() []string {
	if m.st == nil {
		return []string{"Reading the node's links…"}
	}
	out := []string{fmt.Sprintf("  %-12s %-7s %-8s %-3s %-17s %-8s %s", "LINK", "KIND", "STATE", "CAR", "MAC", "MASTER", "ADDRESSES")}
	for i, r := range m.rows {
		cur := "  "
		if i == m.cur {
			cur = "▶ "
		}
		name := r.name
		if name == m.st.GetManagementInterface() {
			name += "*"
		}
		out = append(out, fmt.Sprintf("%s%-12s %-7s %-8s %-3s %-17s %-8s %s", cur, name, trunc(r.kind, 7), trunc(r.state, 8),
			r.carrier, trunc(r.mac, 17), trunc(dashIf(r.master), 8), dashIf(r.addrs)))
	}
	if m.st.GetManagementInterface() != "" {
		out = append(out, "", "* the management interface: changes to it must be confirmed in time")
	}
	if d := diff(m.desired(), m.draft); len(d) > 0 {
		out = append(out, "", "Not applied yet (r reviews):")
		out = append(out, d...)
	}
	return out
}

func trunc(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func (m *model) reviewView() []string {
	out := []string{"Changes to the node's configuration:"}
	for _, l := range diff(m.desired(), m.draft) {
		out = append(out, "  "+l)
	}
	out = append(out, "")
	switch {
	case m.planning:
		out = append(out, "Validating and planning…")
	case m.planErr != "":
		out = append(out, "✗ Refused, nothing was applied:")
		out = append(out, wrap(m.planErr, m.width-4)...)
		out = append(out, "", "Esc goes back to fix it.")
	case m.plan != nil:
		timeout := "the node's deadline"
		if m.o.ConfirmTimeout > 0 {
			timeout = m.o.ConfirmTimeout.String()
		}
		out = append(out, "✓ Valid. Enter applies it; it reverts unless confirmed within "+timeout+".")
		if m.plan.GetTouchesManagement() {
			out = append(out, "  It touches the management interface.")
		}
		out = append(out, "Plan:")
		steps := m.plan.GetPlan()
		if len(steps) == 0 {
			out = append(out, "  nothing to do")
		}
		for _, s := range steps {
			out = append(out, "  "+s)
		}
	}
	// Scrolling keeps the head (what changes) and scrolls the rest.
	room := m.height - 4
	if len(out) > room {
		m.scroll = min(m.scroll, len(out)-room)
		out = out[m.scroll : m.scroll+room]
	} else {
		m.scroll = 0
	}
	return out
}

func (m *model) pendingView() []string {
	p := m.pending
	left := max(m.deadline.Sub(m.o.Now()).Round(time.Second), 0)
	out := []string{
		fmt.Sprintf("Change %s is applied and waits for your confirmation.", p.GetId()),
		"",
		"┌" + strings.Repeat("─", 44) + "┐",
		fmt.Sprintf("│  Reverts in %-31s│", fmt.Sprintf("%d:%02d unless confirmed", int(left.Minutes()), int(left.Seconds())%60)),
		"└" + strings.Repeat("─", 44) + "┘",
		"",
	}
	if by := p.GetRequestedBy(); by != "" {
		out = append(out, "Requested by "+by+".")
	}
	out = append(out, "Check the node is still reachable the way you need it, then confirm.", "", "Its steps:")
	for _, s := range p.GetPlan() {
		out = append(out, "  "+s)
	}
	return out
}

// wrap breaks s into lines of at most w columns at spaces.
func wrap(s string, w int) []string {
	var out []string
	line := ""
	for _, word := range strings.Fields(s) {
		if line != "" && utf8.RuneCountInString(line)+1+utf8.RuneCountInString(word) > w {
			out = append(out, "  "+line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" {
		out = append(out, "  "+line)
	}
	return out
}
