package tui

import (
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/sluicefw/sluice/dataplane/flows"
)

// Options tune a Model; the zero value of each field picks its default.
type Options struct {
	Now        func() time.Time   // the clock; default time.Now
	Refresh    time.Duration      // how often the Monitor is read; default 1s
	StaleAfter time.Duration      // a rule not hit for this long is stale; default 24h
	Renderer   *lipgloss.Renderer // the session's renderer; default lipgloss.DefaultRenderer()
	Width      int                // initial size, until a tea.WindowSizeMsg says otherwise
	Height     int
}

// page is one of the TUI's pages, in the order of their keys.
type page int

const (
	overviewPage page = iota
	flowsPage
	dropsPage
	rulesPage
	policyPage
	auditPage
	numPages
)

var pageNames = [numPages]string{"Overview", "Flows", "Drops", "Rules", "Policy", "Audit"}

// TickMsg says it is time to read the Monitor again.
type TickMsg time.Time

// SnapshotMsg carries what the Monitor and Operator said at At. Err is set
// when reading them failed (a panic in an implementation is caught and
// becomes Err).
type SnapshotMsg struct {
	At         time.Time
	Status     Status
	Flows      []flows.Flow
	Drops      []Drop
	Rules      []RuleStat
	Audit      []AuditEntry
	PolicyText string
	Policy     Version
	Err        error

	rearm bool // taken on the refresh tick, which it re-arms
}

// PreviewMsg carries the preview of an edited policy text.
type PreviewMsg struct {
	Text    string
	Preview Preview
	Err     error
}

// CommitMsg is the result of a commit.
type CommitMsg struct {
	Pending Pending
	Force   bool
	Err     error
}

// ConfirmMsg is the result of confirming the pending commit.
type ConfirmMsg struct{ Err error }

// KillMsg is the result of killing a flow.
type KillMsg struct {
	Flow flows.Flow
	Err  error
}

// promptKind says what an open prompt asks for.
type promptKind uint8

const (
	noPrompt     promptKind = iota
	flowFilter              // text: the flows page's filter
	dropFilter              // text: the drops page's filter
	killPrompt              // y/n: kill the selected flow
	reasonPrompt            // text: why a commit is made
	forcePrompt             // y/n: commit despite the refusal
	allowPrompt             // text: "zone entry" for the allow quick action
)

// policyMode is what the policy page shows.
type policyMode uint8

const (
	policyView policyMode = iota
	policyEdit
	policyPreview
)

// Model is the TUI of one session. It is a value: Update returns the next
// Model and never changes the one it was called on (maps and slices it
// holds are replaced, never written in place). It is used by one goroutine,
// the session's bubbletea program; the Monitor and Operator are called from
// its commands.
type Model struct {
	id   Identity
	mon  Monitor
	op   Operator
	opts Options
	st   styles

	width, height int
	page          page
	fullHelp      bool

	snap    SnapshotMsg
	loaded  bool
	prevAt  time.Time
	prevIf  map[string]Interface // the previous sample, for rates
	rates   map[string][2]float64
	pending *Pending // from the last commit, until the next snapshot says

	flows      flowTable
	killTarget flows.Flow // the flow the open kill prompt names

	drops       []Drop
	dropsPaused bool
	dropFilter  string
	dropTop     int // rows scrolled up from the newest

	rulesTop int
	auditTop int

	// the policy page
	polTop     int
	polMode    policyMode
	editor     textEditor
	preview    Preview
	previewFor string
	why        string
	refusal    error // the last commit refusal, which F may override

	prompt    promptKind
	input     lineInput
	question  string
	status    string // the last outcome, shown above the help line
	statusErr bool
}

// New returns the TUI for the session of id.
func New(id Identity, mon Monitor, op Operator, opts Options) Model {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Refresh <= 0 {
		opts.Refresh = time.Second
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = 24 * time.Hour
	}
	if opts.Renderer == nil {
		opts.Renderer = lipgloss.DefaultRenderer()
	}
	if opts.Width <= 0 {
		opts.Width = 80
	}
	if opts.Height <= 0 {
		opts.Height = 24
	}
	return Model{
		id: id, mon: mon, op: op, opts: opts,
		st:    newStyles(opts.Renderer),
		width: opts.Width, height: opts.Height,
		flows: newFlowTable(),
	}
}

// Init reads the Monitor at once; the reply re-arms the refresh tick.
func (m Model) Init() tea.Cmd { return m.fetchTick() }

// fetchTick is fetch on the refresh tick: its snapshot re-arms the tick, so
// that exactly one tick is pending at any time.
func (m Model) fetchTick() tea.Cmd {
	f := m.fetch()
	return func() tea.Msg {
		s := f().(SnapshotMsg)
		s.rearm = true
		return s
	}
}

// fetch reads the Monitor and the policy in force in a command, such as
// right after a change.
func (m Model) fetch() tea.Cmd {
	mon, op, now := m.mon, m.op, m.opts.Now
	return func() tea.Msg {
		var s SnapshotMsg
		s.Err = catch(func() {
			s.Status = mon.Status()
			s.Flows = mon.Flows()
			s.Drops = mon.Drops()
			s.Rules = mon.Rules()
			s.Audit = mon.Audit()
			s.PolicyText, s.Policy = op.Policy()
		})
		s.At = now()
		return s
	}
}

func (m Model) tick() tea.Cmd {
	return tea.Tick(m.opts.Refresh, func(t time.Time) tea.Msg { return TickMsg(t) })
}

// catch runs f and turns a panic into an error.
func catch(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	f()
	return nil // f returned normally
}

func (m Model) admin() bool { return m.id.Role == Admin }

func (m Model) setStatus(s string, isErr bool) Model {
	m.status, m.statusErr = s, isErr
	return m
}

// bodyHeight is how many lines a page has.
func (m Model) bodyHeight() int {
	h := m.height - 4 - len(m.bannerLines(m.opts.Now())) // title, banner, blank, status, help
	return max(h, 1)
}

func (m Model) currentPending() *Pending {
	if m.pending != nil {
		return m.pending
	}
	return m.snap.Status.Pending
}

// Update handles one message.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.flows = m.flows.clampCursor(m.bodyHeight() - 2)
		return m, nil
	case TickMsg:
		return m, m.fetchTick()
	case SnapshotMsg:
		if !msg.rearm {
			return m.takeSnapshot(msg), nil
		}
		return m.takeSnapshot(msg), m.tick()
	case PreviewMsg:
		if msg.Err != nil {
			return m.setStatus("preview: "+msg.Err.Error(), true), nil
		}
		m.preview, m.previewFor, m.polMode = msg.Preview, msg.Text, policyPreview
		m.refusal = nil
		return m.setStatus("", false), nil
	case CommitMsg:
		if msg.Err != nil {
			m.refusal = msg.Err
			hint := ""
			if !msg.Force {
				hint = " (F forces)"
			}
			return m.setStatus("commit refused: "+msg.Err.Error()+hint, true), nil
		}
		p := msg.Pending
		m.pending, m.refusal, m.polMode = &p, nil, policyView
		return m.setStatus(fmt.Sprintf("committed v%d; confirm with C", p.Version.N), false), m.fetch()
	case ConfirmMsg:
		if msg.Err != nil {
			return m.setStatus("confirm: "+msg.Err.Error(), true), nil
		}
		m.pending = nil
		return m.setStatus("confirmed", false), m.fetch()
	case KillMsg:
		if msg.Err != nil {
			return m.setStatus("kill "+msg.Flow.String()+": "+msg.Err.Error(), true), nil
		}
		return m.setStatus("killed "+msg.Flow.String(), false), m.fetch()
	case tea.KeyMsg:
		return m.key(msg)
	}
	return m, nil
}

func (m Model) takeSnapshot(s SnapshotMsg) Model {
	if s.Err != nil {
		m.snap.Err = s.Err
		return m
	}
	rates := make(map[string][2]float64)
	if m.prevIf != nil {
		if dt := s.At.Sub(m.prevAt).Seconds(); dt > 0 {
			for _, in := range s.Status.Interfaces {
				if p, ok := m.prevIf[in.Name]; ok && in.RxBytes >= p.RxBytes && in.TxBytes >= p.TxBytes {
					rates[in.Name] = [2]float64{float64(in.RxBytes-p.RxBytes) * 8 / dt, float64(in.TxBytes-p.TxBytes) * 8 / dt}
				}
			}
		}
	}
	prev := make(map[string]Interface, len(s.Status.Interfaces))
	for _, in := range s.Status.Interfaces {
		prev[in.Name] = in
	}
	m.prevIf, m.prevAt, m.rates = prev, s.At, rates
	m.snap, m.loaded, m.pending = s, true, nil
	m.flows = m.flows.setFlows(s.Flows, s.At)
	if !m.dropsPaused {
		m.drops = s.Drops
	}
	return m
}

// readOnly is what a viewer sees on a key that would change the box.
func (m Model) readOnly() (tea.Model, tea.Cmd) {
	return m.setStatus("read-only: viewer", true), nil
}

func (m Model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	if k.Type == tea.KeyCtrlC {
		return m, tea.Quit
	}
	if m.prompt != noPrompt {
		return m.promptKey(k)
	}
	if m.page == policyPage && m.polMode == policyEdit {
		if k.Type == tea.KeyEsc {
			text := m.editor.Value()
			return m, m.previewCmd(text)
		}
		m.editor = m.editor.Update(k, m.bodyHeight()-1)
		return m, nil
	}
	switch s := k.String(); s {
	case "q":
		return m, tea.Quit
	case "?":
		m.fullHelp = !m.fullHelp
		return m, nil
	case "1", "2", "3", "4", "5", "6":
		m.page, m.fullHelp = page(s[0]-'1'), false
		return m, nil
	case "tab":
		m.page, m.fullHelp = (m.page+1)%numPages, false
		return m, nil
	case "shift+tab":
		m.page, m.fullHelp = (m.page+numPages-1)%numPages, false
		return m, nil
	case "C":
		if !m.admin() {
			return m.readOnly()
		}
		if m.currentPending() == nil {
			return m.setStatus("nothing to confirm", false), nil
		}
		op, id := m.op, m.id
		return m, func() tea.Msg {
			var err error
			if e := catch(func() { err = op.Confirm(id) }); e != nil {
				err = e
			}
			return ConfirmMsg{Err: err}
		}
	}
	switch m.page {
	case flowsPage:
		return m.flowsKey(k)
	case dropsPage:
		return m.dropsKey(k)
	case rulesPage:
		m.rulesTop = scroll(m.rulesTop, k, len(m.snap.Rules), m.bodyHeight()-1)
	case auditPage:
		m.auditTop = scroll(m.auditTop, k, len(m.snap.Audit), m.bodyHeight()-1)
	case policyPage:
		return m.policyKey(k)
	}
	return m, nil
}

// scroll moves a list's first shown row for a key.
func scroll(top int, k tea.KeyMsg, n, height int) int {
	switch k.String() {
	case "up", "k":
		top--
	case "down", "j":
		top++
	case "pgup":
		top -= height
	case "pgdown":
		top += height
	case "home", "g":
		top = 0
	case "end", "G":
		top = n - height
	}
	return clamp(top, 0, max(n-height, 0))
}

func (m Model) openPrompt(kind promptKind, question, value string) Model {
	m.prompt, m.question, m.input = kind, question, newLineInput(value)
	return m
}

func (m Model) flowsKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.String() {
	case "/":
		return m.openPrompt(flowFilter, "filter: ", m.flows.filter), nil
	case "s":
		m.flows = m.flows.toggleSort()
		return m, nil
	case "esc":
		m.flows = m.flows.setFilter("")
		return m, nil
	case "x":
		if !m.admin() {
			return m.readOnly()
		}
		f, ok := m.flows.selected()
		if !ok {
			return m.setStatus("no flow selected", false), nil
		}
		m.killTarget = f
		return m.openPrompt(killPrompt, "kill "+f.String()+"? (y/n) ", ""), nil
	}
	m.flows = m.flows.Update(k, m.bodyHeight()-2)
	return m, nil
}

func (m Model) dropsKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.String() {
	case " ":
		m.dropsPaused = !m.dropsPaused
		if !m.dropsPaused {
			m.drops = m.snap.Drops
		}
		return m, nil
	case "/":
		return m.openPrompt(dropFilter, "filter: ", m.dropFilter), nil
	case "esc":
		m.dropFilter = ""
		return m, nil
	}
	n := len(m.filteredDrops())
	h := m.bodyHeight() - 1
	// dropTop counts from the newest (up goes back in time), scroll from
	// the oldest.
	last := max(n-h, 0)
	m.dropTop = last - scroll(last-m.dropTop, k, n, h)
	return m, nil
}

func (m Model) filteredDrops() []Drop {
	if m.dropFilter == "" {
		return m.drops
	}
	needle := strings.ToLower(m.dropFilter)
	var out []Drop
	for _, d := range m.drops {
		if strings.Contains(strings.ToLower(dropLine(d)), needle) {
			out = append(out, d)
		}
	}
	return out
}

func (m Model) policyKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	s := k.String()
	if m.polMode == policyPreview {
		switch s {
		case "esc":
			m.polMode = policyView
			m.refusal = nil
			return m.setStatus("edit discarded", false), nil
		case "e":
			m.polMode = policyEdit
			return m, nil
		case "c":
			if !m.admin() {
				return m.readOnly()
			}
			if n := len(m.preview.Diagnostics.Errors()); n > 0 {
				return m.setStatus(fmt.Sprintf("cannot commit: %d errors", n), true), nil
			}
			return m.openPrompt(reasonPrompt, "why: ", m.why), nil
		case "F":
			if !m.admin() {
				return m.readOnly()
			}
			if m.refusal == nil {
				return m.setStatus("nothing to force: commit first (c)", false), nil
			}
			return m.openPrompt(forcePrompt, "commit despite the refusal? (y/n) ", ""), nil
		}
		m.polTop = scroll(m.polTop, k, len(m.previewLines()), m.bodyHeight())
		return m, nil
	}
	switch s {
	case "e":
		if !m.admin() {
			return m.readOnly()
		}
		m.editor = newTextEditor(m.snap.PolicyText)
		m.polMode = policyEdit
		return m, nil
	case "a":
		if !m.admin() {
			return m.readOnly()
		}
		return m.openPrompt(allowPrompt, "allow (zone entry, such as lan 1.1.1.1:443): ", ""), nil
	}
	m.polTop = scroll(m.polTop, k, strings.Count(m.snap.PolicyText, "\n")+1, m.bodyHeight())
	return m, nil
}

func (m Model) previewCmd(text string) tea.Cmd {
	op := m.op
	return func() tea.Msg {
		var p Preview
		err := catch(func() { p = op.Preview(text) })
		return PreviewMsg{Text: text, Preview: p, Err: err}
	}
}

func (m Model) commitCmd(force bool) tea.Cmd {
	op, id, text, why := m.op, m.id, m.previewFor, m.why
	return func() tea.Msg {
		var p Pending
		var err error
		if e := catch(func() { p, err = op.Commit(id, text, why, force) }); e != nil {
			err = e
		}
		return CommitMsg{Pending: p, Force: force, Err: err}
	}
}

func (m Model) promptKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	kind := m.prompt
	if kind == killPrompt || kind == forcePrompt {
		yes := k.String() == "y" || k.String() == "Y"
		m.prompt = noPrompt
		if !yes {
			return m.setStatus("cancelled", false), nil
		}
		if kind == forcePrompt {
			return m.setStatus("forcing the commit…", false), m.commitCmd(true)
		}
		f := m.killTarget // as asked, even if a refresh moved the cursor
		op, id := m.op, m.id
		return m, func() tea.Msg {
			var err error
			if e := catch(func() { err = op.KillFlow(id, f) }); e != nil {
				err = e
			}
			return KillMsg{Flow: f, Err: err}
		}
	}
	switch k.Type {
	case tea.KeyEsc:
		m.prompt = noPrompt
		return m, nil
	case tea.KeyEnter:
		m.prompt = noPrompt
		v := m.input.Value()
		switch kind {
		case flowFilter:
			m.flows = m.flows.setFilter(v)
		case dropFilter:
			m.dropFilter, m.dropTop = v, 0
		case reasonPrompt:
			if strings.TrimSpace(v) == "" {
				return m.setStatus("a commit needs a reason", true), nil
			}
			m.why = v
			return m.setStatus("committing…", false), m.commitCmd(false)
		case allowPrompt:
			return m.quickAllow(v)
		}
		return m, nil
	}
	m.input = m.input.Update(k)
	if kind == flowFilter {
		m.flows = m.flows.setFilter(m.input.Value())
	}
	return m, nil
}
