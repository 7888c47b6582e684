package netcfg

import (
	"fmt"
	"strings"
	"unicode"

	tea "github.com/charmbracelet/bubbletea"
)

// A form is a column of fields: ↑/↓ and Tab move between them, typing
// edits a text field, ←/→ change a choice, Space ticks a box.
type form struct {
	title  string
	fields []*field
	focus  int
}

type fieldKind int

const (
	textField fieldKind = iota
	choiceField
	checkField
	labelField // shown, never focused
)

type field struct {
	kind    fieldKind
	label   string
	value   string   // textField: the text; labelField: what is shown
	choices []string // choiceField
	choice  int
	checked bool // checkField
	hint    string
	// hidden reports whether the field is skipped for now (a static
	// address when DHCP is chosen).
	hidden func() bool
}

func (f *field) focusable() bool {
	return f.kind != labelField && (f.hidden == nil || !f.hidden())
}

func (f *field) chosen() string { return f.choices[f.choice] }

func (fm *form) move(d int) {
	for i := fm.focus + d; i >= 0 && i < len(fm.fields); i += d {
		if fm.fields[i].focusable() {
			fm.focus = i
			return
		}
	}
}

// first focuses the first focusable field.
func (fm *form) first() *form {
	fm.focus = -1
	fm.move(1)
	return fm
}

// key handles one key; it reports whether the form took it.
func (fm *form) key(k tea.KeyMsg) bool {
	f := fm.fields[fm.focus]
	switch k.Type {
	case tea.KeyUp, tea.KeyShiftTab:
		fm.move(-1)
	case tea.KeyDown, tea.KeyTab:
		fm.move(1)
	case tea.KeyLeft:
		if f.kind == choiceField {
			f.choice = (f.choice + len(f.choices) - 1) % len(f.choices)
		}
	case tea.KeyRight:
		if f.kind == choiceField {
			f.choice = (f.choice + 1) % len(f.choices)
		}
	case tea.KeySpace:
		switch f.kind {
		case checkField:
			f.checked = !f.checked
		case choiceField:
			f.choice = (f.choice + 1) % len(f.choices)
		default:
			return false // no spaces in names or addresses
		}
	case tea.KeyBackspace:
		if f.kind == textField && f.value != "" {
			r := []rune(f.value)
			f.value = string(r[:len(r)-1])
		}
	case tea.KeyRunes:
		if f.kind != textField {
			return false
		}
		for _, r := range k.Runes {
			if unicode.IsPrint(r) && !unicode.IsSpace(r) && len(f.value) < 64 {
				f.value += string(r)
			}
		}
	default:
		return false
	}
	return true
}

func (fm *form) lines() []string {
	out := []string{fm.title, ""}
	for i, f := range fm.fields {
		if f.hidden != nil && f.hidden() {
			continue
		}
		cur := "  "
		if i == fm.focus {
			cur = "▶ "
		}
		var v string
		switch f.kind {
		case textField:
			v = "[" + f.value
			if i == fm.focus {
				v += "▏"
			}
			v += "]"
		case choiceField:
			v = "◀ " + f.chosen() + " ▶"
		case checkField:
			v = "[ ]"
			if f.checked {
				v = "[x]"
			}
		case labelField:
			v = f.value
		}
		line := fmt.Sprintf("%s%-14s %s", cur, f.label, v)
		if f.hint != "" {
			line += "  " + f.hint
		}
		out = append(out, strings.TrimRight(line, " "))
	}
	return out
}
