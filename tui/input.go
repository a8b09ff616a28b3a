package tui

import (
	"strings"

	tea "github.com/charmbracelet/bubbletea"
)

// lineInput is a one-line text field: a filter, a reason, a zone entry. The
// zero value is an empty field with the cursor at its start.
type lineInput struct {
	value []rune
	pos   int
}

func newLineInput(s string) lineInput {
	r := []rune(s)
	return lineInput{value: r, pos: len(r)}
}

// Value returns the text typed so far.
func (in lineInput) Value() string { return string(in.value) }

// Update edits the field for one key; keys it does not know leave it as is.
func (in lineInput) Update(msg tea.KeyMsg) lineInput {
	switch msg.Type {
	case tea.KeyRunes, tea.KeySpace:
		r := msg.Runes
		if msg.Type == tea.KeySpace {
			r = []rune{' '}
		}
		v := make([]rune, 0, len(in.value)+len(r))
		v = append(v, in.value[:in.pos]...)
		v = append(v, r...)
		in.value = append(v, in.value[in.pos:]...)
		in.pos += len(r)
	case tea.KeyBackspace:
		if in.pos > 0 {
			in.value = append(in.value[:in.pos-1:in.pos-1], in.value[in.pos:]...)
			in.pos--
		}
	case tea.KeyDelete:
		if in.pos < len(in.value) {
			in.value = append(in.value[:in.pos:in.pos], in.value[in.pos+1:]...)
		}
	case tea.KeyLeft:
		if in.pos > 0 {
			in.pos--
		}
	case tea.KeyRight:
		if in.pos < len(in.value) {
			in.pos++
		}
	case tea.KeyHome, tea.KeyCtrlA:
		in.pos = 0
	case tea.KeyEnd, tea.KeyCtrlE:
		in.pos = len(in.value)
	case tea.KeyCtrlU:
		in.value = append([]rune(nil), in.value[in.pos:]...)
		in.pos = 0
	}
	return in
}

// View writes the field with a block cursor at its position.
func (in lineInput) View(st styles) string {
	var b strings.Builder
	b.WriteString(string(in.value[:in.pos]))
	cur := " "
	if in.pos < len(in.value) {
		cur = string(in.value[in.pos])
	}
	b.WriteString(st.cursor.Render(cur))
	if in.pos < len(in.value) {
		b.WriteString(string(in.value[in.pos+1:]))
	}
	return b.String()
}
