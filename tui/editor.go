package tui

import (
	"fmt"
	"strings"

	tea "github.com/charmbracelet/bubbletea"
)

// textEditor edits a policy text in the terminal: arrows, page keys,
// home/end, enter, backspace, delete and tab (two spaces, as YAML wants).
// The zero value is an empty text.
type textEditor struct {
	lines    [][]rune
	row, col int
	top      int // first line shown
}

func newTextEditor(text string) textEditor {
	var e textEditor
	for _, l := range strings.Split(text, "\n") {
		e.lines = append(e.lines, []rune(l))
	}
	return e
}

// Value returns the edited text.
func (e textEditor) Value() string {
	parts := make([]string, len(e.lines))
	for i, l := range e.lines {
		parts[i] = string(l)
	}
	return strings.Join(parts, "\n")
}

func (e textEditor) insert(r []rune) textEditor {
	l := e.lines[e.row]
	n := make([]rune, 0, len(l)+len(r))
	n = append(n, l[:e.col]...)
	n = append(n, r...)
	e.lines[e.row] = append(n, l[e.col:]...)
	e.col += len(r)
	return e
}

// Update edits the text for one key; height is how many lines are shown,
// for the page keys and scrolling.
func (e textEditor) Update(msg tea.KeyMsg, height int) textEditor {
	if len(e.lines) == 0 {
		e.lines = [][]rune{nil}
	}
	// The lines are shared with earlier values of e; copy before changing.
	lines := make([][]rune, len(e.lines))
	copy(lines, e.lines)
	e.lines = lines
	switch msg.Type {
	case tea.KeyRunes:
		e = e.insert(msg.Runes)
	case tea.KeySpace:
		e = e.insert([]rune{' '})
	case tea.KeyTab:
		e = e.insert([]rune{' ', ' '})
	case tea.KeyEnter:
		l := e.lines[e.row]
		head, tail := append([]rune(nil), l[:e.col]...), append([]rune(nil), l[e.col:]...)
		e.lines = append(e.lines[:e.row+1], append([][]rune{tail}, e.lines[e.row+1:]...)...)
		e.lines[e.row] = head
		e.row++
		e.col = 0
	case tea.KeyBackspace:
		switch {
		case e.col > 0:
			l := e.lines[e.row]
			e.lines[e.row] = append(append([]rune(nil), l[:e.col-1]...), l[e.col:]...)
			e.col--
		case e.row > 0:
			prev := e.lines[e.row-1]
			e.col = len(prev)
			e.lines[e.row-1] = append(append([]rune(nil), prev...), e.lines[e.row]...)
			e.lines = append(e.lines[:e.row], e.lines[e.row+1:]...)
			e.row--
		}
	case tea.KeyDelete:
		l := e.lines[e.row]
		switch {
		case e.col < len(l):
			e.lines[e.row] = append(append([]rune(nil), l[:e.col]...), l[e.col+1:]...)
		case e.row+1 < len(e.lines):
			e.lines[e.row] = append(append([]rune(nil), l...), e.lines[e.row+1]...)
			e.lines = append(e.lines[:e.row+1], e.lines[e.row+2:]...)
		}
	case tea.KeyUp:
		e.row--
	case tea.KeyDown:
		e.row++
	case tea.KeyPgUp:
		e.row -= height
	case tea.KeyPgDown:
		e.row += height
	case tea.KeyLeft:
		if e.col > 0 {
			e.col--
		} else if e.row > 0 {
			e.row--
			e.col = len(e.lines[e.row])
		}
	case tea.KeyRight:
		if e.col < len(e.lines[e.row]) {
			e.col++
		} else if e.row+1 < len(e.lines) {
			e.row++
			e.col = 0
		}
	case tea.KeyHome, tea.KeyCtrlA:
		e.col = 0
	case tea.KeyEnd, tea.KeyCtrlE:
		e.col = len(e.lines[e.row])
	}
	e.row = clamp(e.row, 0, len(e.lines)-1)
	e.col = clamp(e.col, 0, len(e.lines[e.row]))
	if height > 0 {
		e.top = clamp(e.top, e.row-height+1, e.row)
	}
	return e
}

// View writes height lines from e.top with line numbers and the cursor.
func (e textEditor) View(st styles, width, height int) string {
	var b strings.Builder
	for i := e.top; i < e.top+height && i < len(e.lines); i++ {
		l := e.lines[i]
		fmt.Fprintf(&b, "%4d  ", i+1)
		if i == e.row {
			b.WriteString(truncate(string(l[:e.col]), width-6))
			cur := " "
			if e.col < len(l) {
				cur = string(l[e.col])
			}
			b.WriteString(st.cursor.Render(cur))
			if e.col < len(l) {
				b.WriteString(truncate(string(l[e.col+1:]), width-7-e.col))
			}
		} else {
			b.WriteString(truncate(string(l), width-6))
		}
		b.WriteString("\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func clamp(v, lo, hi int) int {
	if v > hi {
		v = hi
	}
	if v < lo {
		v = lo
	}
	return v
}

// truncate cuts s to at most n runes.
func truncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}
