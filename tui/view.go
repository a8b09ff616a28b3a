package tui

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/sluicefw/sluice/dataplane/policy"
)

// quickAllow inserts "zone entry" into the edited (or in-force) policy
// text and previews the result.
func (m Model) quickAllow(v string) (tea.Model, tea.Cmd) {
	zone, entry, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || strings.TrimSpace(entry) == "" {
		return m.setStatus("allow: write a zone and an entry, such as lan 1.1.1.1:443", true), nil
	}
	text := m.snap.PolicyText
	if m.polMode != policyView {
		text = m.editor.Value()
	}
	out, err := policy.AddAllow([]byte(text), zone, strings.TrimSpace(entry))
	if err != nil {
		return m.setStatus(err.Error(), true), nil
	}
	m.editor = newTextEditor(string(out))
	return m.setStatus("", false), m.previewCmd(string(out))
}

// View draws the current page.
func (m Model) View() string {
	now := m.opts.Now()
	var b strings.Builder
	// The title: host, tabs, who.
	host := m.snap.Status.Hostname
	if host == "" {
		host = "sluice"
	}
	b.WriteString(m.st.title.Render(host))
	for i, name := range pageNames {
		b.WriteString(" ")
		label := strconv.Itoa(i+1) + " " + name
		if page(i) == m.page {
			b.WriteString(m.st.activeTab.Render(label))
		} else {
			b.WriteString(m.st.tab.Render(label))
		}
	}
	b.WriteString("  " + m.st.dim.Render(m.id.Name+" ("+m.id.Role.String()+")"))
	b.WriteString("\n")
	for _, l := range m.bannerLines(now) {
		b.WriteString(m.st.banner.Render(l))
		b.WriteString("\n")
	}
	b.WriteString("\n")
	h := m.bodyHeight()
	var body string
	if m.fullHelp {
		body = m.fullHelpView()
	} else {
		switch m.page {
		case overviewPage:
			body = m.overviewView(now)
		case flowsPage:
			body = m.flows.View(m.st, now, m.width, h)
		case dropsPage:
			body = m.dropsView(h)
		case rulesPage:
			body = m.rulesView(now, h)
		case policyPage:
			body = m.policyView(h)
		case auditPage:
			body = m.auditView(h)
		}
	}
	lines := strings.Split(body, "\n")
	if len(lines) > h {
		lines = lines[:h]
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	b.WriteString(strings.Join(lines, "\n"))
	b.WriteString("\n")
	// The status line: an open prompt, or the last outcome, or a read error.
	switch {
	case m.prompt != noPrompt:
		b.WriteString(m.question + m.input.View(m.st))
	case m.status != "" && m.statusErr:
		b.WriteString(m.st.errorText.Render(truncate(m.status, m.width)))
	case m.status != "":
		b.WriteString(truncate(m.status, m.width))
	case m.snap.Err != nil:
		b.WriteString(m.st.errorText.Render(truncate("reading the box: "+m.snap.Err.Error(), m.width)))
	}
	b.WriteString("\n")
	b.WriteString(m.st.dim.Render(truncate(m.helpLine(), m.width)))
	return b.String()
}

// bannerLines is the pending commit's banner with its countdown, wrapped
// at spaces to the width; nil when nothing is pending.
func (m Model) bannerLines(now time.Time) []string {
	p := m.currentPending()
	if p == nil {
		return nil
	}
	left := p.Deadline.Sub(now).Truncate(time.Second)
	if left < 0 {
		left = 0
	}
	msg := fmt.Sprintf("commit v%d by %s: confirm within %s (press C) or it rolls back to v%d", p.Version.N, p.Version.Who, left, p.Previous)
	var lines []string
	for len(msg) > m.width && len(lines) < 2 {
		cut := strings.LastIndexByte(msg[:m.width+1], ' ')
		if cut <= 0 {
			cut = m.width
		}
		lines = append(lines, msg[:cut])
		msg = strings.TrimLeft(msg[cut:], " ")
	}
	return append(lines, truncate(msg, m.width))
}

// pageKeys are the keys of the current page, as the help line lists them.
func (m Model) pageKeys() [][2]string {
	switch {
	case m.prompt == killPrompt || m.prompt == forcePrompt:
		return [][2]string{{"y", "yes"}, {"n", "no"}}
	case m.prompt != noPrompt:
		return [][2]string{{"enter", "ok"}, {"esc", "cancel"}}
	}
	var keys [][2]string
	switch m.page {
	case flowsPage:
		keys = [][2]string{{"↑/↓", "move"}, {"/", "filter"}, {"s", "sort"}, {"x", "kill"}}
	case dropsPage:
		keys = [][2]string{{"space", "pause"}, {"/", "filter"}, {"↑/↓", "scroll"}}
	case rulesPage, auditPage:
		keys = [][2]string{{"↑/↓", "scroll"}}
	case policyPage:
		switch m.polMode {
		case policyEdit:
			return [][2]string{{"esc", "preview"}, {"ctrl+c", "quit"}}
		case policyPreview:
			keys = [][2]string{{"c", "commit"}, {"e", "edit"}, {"esc", "discard"}}
			if m.refusal != nil {
				keys = append(keys, [2]string{"F", "force"})
			}
		default:
			keys = [][2]string{{"↑/↓", "scroll"}, {"e", "edit"}, {"a", "allow"}}
		}
	}
	if m.currentPending() != nil {
		keys = append(keys, [2]string{"C", "confirm"})
	}
	return append(keys, [2]string{"1-6/tab", "pages"}, [2]string{"?", "help"}, [2]string{"q", "quit"})
}

func (m Model) helpLine() string {
	var parts []string
	for _, k := range m.pageKeys() {
		parts = append(parts, k[0]+" "+k[1])
	}
	return strings.Join(parts, " • ")
}

func (m Model) fullHelpView() string {
	rows := [][2]string{
		{"1..6", "overview, flows, drops, rules, policy, audit"},
		{"tab / shift+tab", "next / previous page"},
		{"C", "confirm the pending commit (admin)"},
		{"?", "this help, again to close"},
		{"q, ctrl+c", "quit"},
		{"", ""},
		{"flows", "↑/↓ pgup/pgdn home/end move, / filter, esc clear, s sort by bytes or age, x kill (admin)"},
		{"drops", "space pause, / filter, esc clear, ↑/↓ scroll"},
		{"rules, audit", "↑/↓ pgup/pgdn scroll"},
		{"policy", "e edit (admin), a allow \"zone entry\" (admin), ↑/↓ scroll"},
		{"editor", "esc preview"},
		{"preview", "c commit with a reason, F force after a refusal, e edit again, esc discard"},
	}
	var b strings.Builder
	b.WriteString(m.st.header.Render("Keys"))
	for _, r := range rows {
		b.WriteString("\n")
		if r[0] != "" {
			b.WriteString(truncate(fmt.Sprintf("  %-16s %s", r[0], r[1]), m.width))
		}
	}
	if m.id.Role == Viewer {
		b.WriteString("\n\nThis session is read-only: keys that change the box are refused.")
	}
	return b.String()
}

func (m Model) overviewView(now time.Time) string {
	if !m.loaded {
		return "loading…"
	}
	s := m.snap.Status
	var b strings.Builder
	fmt.Fprintf(&b, "host     %s\n", s.Hostname)
	fmt.Fprintf(&b, "engine   %s\n", s.Engine)
	if !s.Started.IsZero() {
		fmt.Fprintf(&b, "uptime   %s\n", age(now.Sub(s.Started)))
	}
	v := s.Policy
	fmt.Fprintf(&b, "policy   v%d", v.N)
	if v.Who != "" {
		fmt.Fprintf(&b, " by %s", v.Who)
	}
	if !v.When.IsZero() {
		fmt.Fprintf(&b, " %s ago", age(now.Sub(v.When)))
	}
	if v.Why != "" {
		fmt.Fprintf(&b, ": %s", v.Why)
	}
	b.WriteString("\n\n")
	// Addresses go last: a box with IPv6 has several per interface, and
	// they may run to the edge of the screen without hiding the rates.
	b.WriteString(m.st.header.Render(fmt.Sprintf("%-8s %-10s %-5s %12s %12s  %s", "IFACE", "DEVICE", "LINK", "RX", "TX", "ADDRESSES")))
	for _, in := range s.Interfaces {
		link := "down"
		if in.Up {
			link = "up"
		}
		var addrs []string
		for _, a := range in.Addrs {
			addrs = append(addrs, a.String())
		}
		rx, tx := "-", "-"
		if r, ok := m.rates[in.Name]; ok {
			rx, tx = bitRate(r[0]), bitRate(r[1])
		}
		b.WriteString("\n" + truncate(fmt.Sprintf("%-8s %-10s %-5s %12s %12s  %s", in.Name, in.Device, link, rx, tx, strings.Join(addrs, " ")), m.width))
	}
	b.WriteString("\n\n")
	b.WriteString(m.st.header.Render("Alerts"))
	if len(s.Alerts) == 0 {
		b.WriteString("\nnone")
	}
	for _, a := range s.Alerts {
		b.WriteString("\n" + truncate(a, m.width))
	}
	return b.String()
}

// bitRate writes bits per second with a decimal unit: 0 bit/s, 12.3 kbit/s.
func bitRate(r float64) string {
	units := []string{"bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"}
	i := 0
	for r >= 1000 && i < len(units)-1 {
		r /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", r, units[i])
	}
	return fmt.Sprintf("%.1f %s", r, units[i])
}

func dropLine(d Drop) string {
	rule := d.Rule
	if d.RuleName != "" {
		rule += " " + d.RuleName
	}
	return fmt.Sprintf("%-5s %s  %s (%s)", d.In, d.Summary, strings.TrimSpace(rule), d.Reason)
}

func (m Model) dropsView(h int) string {
	ds := m.filteredDrops()
	var b strings.Builder
	fmt.Fprintf(&b, "%d drops", len(m.drops))
	if m.dropFilter != "" {
		fmt.Fprintf(&b, ", %d match %q", len(ds), m.dropFilter)
	}
	if m.dropsPaused {
		b.WriteString(", paused")
	}
	h--
	end := len(ds) - m.dropTop
	start := max(end-h, 0)
	for _, d := range ds[start:max(end, 0)] {
		b.WriteString("\n" + truncate(d.Time.UTC().Format("15:04:05")+" "+dropLine(d), m.width))
	}
	return b.String()
}

func (m Model) rulesView(now time.Time, h int) string {
	var b strings.Builder
	b.WriteString(m.st.header.Render(truncate(fmt.Sprintf("%-12s %-36s %5s %10s %10s %-10s %s", "ID", "NAME", "LINE", "PACKETS", "BYTES", "LAST HIT", ""), m.width)))
	rules := m.snap.Rules
	// A rule never hit is stale once the policy has been in force for
	// StaleAfter: since the later of the start and the policy's commit.
	since := m.snap.Status.Started
	if w := m.snap.Status.Policy.When; w.After(since) {
		since = w
	}
	for i := m.rulesTop; i < len(rules) && i < m.rulesTop+h-1; i++ {
		r := rules[i]
		last, stale := "never", !since.IsZero() && now.Sub(since) > m.opts.StaleAfter
		if !r.LastHit.IsZero() {
			last = ago(now.Sub(r.LastHit))
			stale = now.Sub(r.LastHit) > m.opts.StaleAfter
		}
		line := "-"
		if r.Line > 0 {
			line = strconv.Itoa(r.Line)
		}
		name := r.Name
		if len(name) > 36 {
			name = name[:35] + "~"
		}
		row := truncate(fmt.Sprintf("%-12s %-36s %5s %10d %10s %-10s", r.ID, name, line, r.Packets, humanBytes(r.Bytes), last), m.width)
		if stale {
			row = m.st.stale.Render(truncate(row+" stale", m.width))
		}
		b.WriteString("\n" + row)
	}
	return b.String()
}

func (m Model) auditView(h int) string {
	var b strings.Builder
	b.WriteString(m.st.header.Render(truncate(fmt.Sprintf("%-20s %-40s %-12s %s", "TIME", "WHO", "ACTION", "DETAIL"), m.width)))
	a := m.snap.Audit
	for i := m.auditTop; i < len(a) && i < m.auditTop+h-1; i++ {
		e := a[len(a)-1-i] // newest first
		b.WriteString("\n" + truncate(fmt.Sprintf("%-20s %-40s %-12s %s", e.Time.UTC().Format("2006-01-02 15:04:05"), e.Who, e.Action, e.Detail), m.width))
	}
	return b.String()
}

func (m Model) policyView(h int) string {
	switch m.polMode {
	case policyEdit:
		return m.st.header.Render("editing (esc previews)") + "\n" + m.editor.View(m.st, m.width, h-1)
	case policyPreview:
		lines := m.previewLines()
		top := clamp(m.polTop, 0, max(len(lines)-h, 0))
		end := min(top+h, len(lines))
		return strings.Join(lines[top:end], "\n")
	}
	v := m.snap.Policy
	var b strings.Builder
	b.WriteString(m.st.header.Render(fmt.Sprintf("policy v%d", v.N)))
	lines := strings.Split(strings.TrimSuffix(m.snap.PolicyText, "\n"), "\n")
	top := clamp(m.polTop, 0, max(len(lines)-(h-1), 0))
	for i := top; i < len(lines) && i < top+h-1; i++ {
		b.WriteString("\n" + truncate(fmt.Sprintf("%4d  %s", i+1, lines[i]), m.width))
	}
	return b.String()
}

// previewLines is the preview of the edited text: diagnostics, the text
// diff and the flows whose verdict would change.
func (m Model) previewLines() []string {
	p := m.preview
	var out []string
	errs := len(p.Diagnostics.Errors())
	switch {
	case errs > 0:
		out = append(out, m.st.errorText.Render(fmt.Sprintf("preview: %d errors, %d warnings; fix the errors to commit", errs, len(p.Diagnostics)-errs)))
	default:
		out = append(out, m.st.header.Render(fmt.Sprintf("preview: %d warnings; c commits", len(p.Diagnostics))))
	}
	if m.refusal != nil {
		out = append(out, m.st.errorText.Render(truncate("refused: "+m.refusal.Error(), m.width)))
	}
	for _, d := range p.Diagnostics {
		sev := "error"
		if d.Severity == policy.Warning {
			sev = "warning"
		}
		s := fmt.Sprintf("%d:%d %s: %s", d.Pos.Line, d.Pos.Col, sev, d.Msg)
		if d.Fix != "" {
			s += "; " + d.Fix
		}
		out = append(out, truncate(s, m.width))
	}
	out = append(out, "", m.st.header.Render("text diff"))
	if p.TextDiff == "" {
		out = append(out, "no change")
	}
	for _, l := range strings.Split(strings.TrimSuffix(p.TextDiff, "\n"), "\n") {
		if l != "" {
			out = append(out, truncate(l, m.width))
		}
	}
	out = append(out, "", m.st.header.Render(fmt.Sprintf("behaviour: %d flows would change, %d live flows judged", len(p.Changes), p.Flows)))
	for _, c := range p.Changes {
		out = append(out, truncate(c.Flow.String(), m.width), truncate("    "+c.Before+" -> "+c.After, m.width))
	}
	return out
}
