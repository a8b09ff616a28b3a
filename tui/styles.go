package tui

import "github.com/charmbracelet/lipgloss"

// styles are the looks of one session, built from its renderer so that each
// SSH session renders for its own terminal.
type styles struct {
	title, tab, activeTab, banner, selected, header, stale, errorText, dim, cursor lipgloss.Style
}

func newStyles(r *lipgloss.Renderer) styles {
	return styles{
		title:     r.NewStyle().Bold(true),
		tab:       r.NewStyle().Foreground(lipgloss.Color("245")),
		activeTab: r.NewStyle().Bold(true).Underline(true),
		banner:    r.NewStyle().Bold(true).Foreground(lipgloss.Color("0")).Background(lipgloss.Color("214")),
		selected:  r.NewStyle().Reverse(true),
		header:    r.NewStyle().Bold(true),
		stale:     r.NewStyle().Foreground(lipgloss.Color("214")),
		errorText: r.NewStyle().Foreground(lipgloss.Color("196")),
		dim:       r.NewStyle().Foreground(lipgloss.Color("245")),
		cursor:    r.NewStyle().Reverse(true),
	}
}
