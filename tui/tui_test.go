package tui

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/google/go-cmp/cmp"
	"github.com/muesli/termenv"
	"github.com/sluicefw/sluice/dataplane/flows"
	"github.com/sluicefw/sluice/dataplane/policy"
)

// update re-records the golden files under testdata:
//
//	go test ./tui -update
var update = flag.Bool("update", false, "re-record the golden files under testdata")

var t0 = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)

// clock is a fake clock that tests advance by hand.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

type fakeMonitor struct {
	status Status
	flows  []flows.Flow
	drops  []Drop
	rules  []RuleStat
	audit  []AuditEntry
	panics bool
}

func (f *fakeMonitor) Status() Status {
	if f.panics {
		panic("status: netlink socket closed")
	}
	return f.status
}
func (f *fakeMonitor) Flows() []flows.Flow { return append([]flows.Flow(nil), f.flows...) }
func (f *fakeMonitor) Drops() []Drop       { return append([]Drop(nil), f.drops...) }
func (f *fakeMonitor) Rules() []RuleStat   { return append([]RuleStat(nil), f.rules...) }
func (f *fakeMonitor) Audit() []AuditEntry { return append([]AuditEntry(nil), f.audit...) }

type commitCall struct {
	Who, Text, Why string
	Force          bool
}

type fakeOperator struct {
	text     string
	version  Version
	preview  Preview
	previews []string
	refuse   error // returned by Commit without force
	commits  []commitCall
	confirms int
	killed   []flows.Flow
	clock    *clock
	mon      *fakeMonitor // told of pending commits, as the daemon would be
}

func (f *fakeOperator) Policy() (string, Version) { return f.text, f.version }
func (f *fakeOperator) Preview(text string) Preview {
	f.previews = append(f.previews, text)
	return f.preview
}
func (f *fakeOperator) Commit(id Identity, text, why string, force bool) (Pending, error) {
	f.commits = append(f.commits, commitCall{id.Name, text, why, force})
	if f.refuse != nil && !force {
		return Pending{}, f.refuse
	}
	p := Pending{Version: Version{N: f.version.N + 1, Who: id.String(), Why: why, When: f.clock.now}, Previous: f.version.N, Deadline: f.clock.now.Add(90 * time.Second)}
	f.mon.status.Pending = &p
	return p, nil
}
func (f *fakeOperator) Confirm(id Identity) error {
	f.confirms++
	f.mon.status.Pending = nil
	return nil
}
func (f *fakeOperator) KillFlow(id Identity, fl flows.Flow) error {
	f.killed = append(f.killed, fl)
	return nil
}

const testPolicy = `hostname: gw
interfaces:
  wan: {device: eth0, zone: wan, addresses: [dhcp]}
  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}
zones:
  wan:
    inbound: deny
  lan:
    services: [ssh, dns]
    egress:
      default: deny
      allow:
        - {name: web, to: [93.184.216.34], ports: [tcp/443]}
forward:
  - {from: lan, to: wan}
`

func flow(id uint32, src, dst string, bytes uint64, start time.Time, state string) flows.Flow {
	return flows.Flow{
		ID: id, Proto: policy.ProtoTCP,
		Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		State: state, Start: start, Bytes: [2]uint64{bytes / 2, bytes - bytes/2},
	}
}

func testFixture() (*fakeMonitor, *fakeOperator, *clock) {
	c := &clock{now: t0}
	mon := &fakeMonitor{
		status: Status{
			Hostname: "gw", Engine: "kernel (nftables)", Started: t0.Add(-26 * time.Hour),
			Policy: Version{N: 4, Who: "alice (admin) from 192.168.1.10:51234", Why: "allow the printer", When: t0.Add(-3 * time.Hour)},
			Interfaces: []Interface{
				{Name: "wan", Device: "eth0", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("203.0.113.7/24")}, RxBytes: 1_000_000, TxBytes: 500_000},
				{Name: "lan", Device: "eth1", Up: false, Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.1.1/24"), netip.MustParsePrefix("fd00:53:1::1/64")}, RxBytes: 10, TxBytes: 20},
			},
			Alerts: []string{"12:00:00 wan: DHCP lease renewed"},
		},
		flows: []flows.Flow{
			flow(1, "192.168.1.10:40000", "93.184.216.34:443", 5000, t0.Add(-90*time.Second), "ESTABLISHED"),
			flow(2, "192.168.1.11:40001", "1.1.1.1:53", 100, t0.Add(-10*time.Minute), "TIME_WAIT"),
			flow(3, "192.168.1.12:40002", "8.8.8.8:443", 900_000, time.Time{}, "ESTABLISHED"),
		},
		drops: []Drop{
			{Time: t0.Add(-3 * time.Second), In: "wan", Summary: "tcp 198.51.100.9:5555 -> 203.0.113.7:22 [S]", Rule: "r0f1e2d3c4b", RuleName: "wan inbound deny", Reason: "inbound-deny"},
			{Time: t0.Add(-2 * time.Second), In: "lan", Summary: "udp 192.168.1.12:5353 -> 9.9.9.9:53", Rule: "r1a2b3c4d5e", RuleName: "lan egress default", Reason: "egress-default"},
		},
		rules: []RuleStat{
			{ID: "r1a2b3c4d5e", Name: "lan egress allow web", Line: 13, Packets: 1200, Bytes: 1_500_000, LastHit: t0.Add(-3 * time.Minute)},
			{ID: "r0f1e2d3c4b", Name: "wan inbound deny", Line: 7, Packets: 3, Bytes: 180, LastHit: t0.Add(-48 * time.Hour)},
			{ID: "r9a8b7c6d5e", Name: "lan services ssh", Line: 9},
		},
		audit: []AuditEntry{
			{Time: t0.Add(-3 * time.Hour), Who: "alice (admin) from 192.168.1.10:51234", Action: "commit", Detail: "v4: allow the printer"},
			{Time: t0.Add(-3*time.Hour + time.Minute), Who: "alice (admin) from 192.168.1.10:51234", Action: "confirm", Detail: "v4"},
		},
	}
	op := &fakeOperator{text: testPolicy, version: Version{N: 4}, clock: c, mon: mon,
		preview: Preview{
			Diagnostics: policy.Diagnostics{{Pos: policy.Pos{Line: 13, Col: 11}, Severity: policy.Warning, Msg: "entry web overlaps entry allow-1-1-1-1", Fix: "merge them"}},
			TextDiff:    "@@ -13 +13,2 @@\n         - {name: web, to: [93.184.216.34], ports: [tcp/443]}\n+        - {name: allow-1-1-1-1-tcp-443, to: [1.1.1.1], ports: [tcp/443]}\n",
			Changes: []FlowChange{{Flow: flow(9, "192.168.1.10:40100", "1.1.1.1:443", 0, time.Time{}, "SYN_SENT"),
				Before: "drop r1a2b3c4d5e lan egress default", After: "accept r2b3c4d5e6f lan egress allow allow-1-1-1-1-tcp-443"}},
			Flows: 3,
		}}
	return mon, op, c
}

var admin = Identity{Name: "alice", Role: Admin, Remote: netip.MustParseAddrPort("192.168.1.10:51234")}
var viewer = Identity{Name: "bob", Role: Viewer, Remote: netip.MustParseAddrPort("192.168.1.20:40000")}

// newTestModel returns a Model of size 100x30 with the colour profile and
// clock pinned, after its first snapshot.
func newTestModel(t testing.TB, id Identity, mon Monitor, op Operator, c *clock) Model {
	t.Helper()
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.Ascii)
	m := New(id, mon, op, Options{Now: c.Now, Renderer: r, Width: 100, Height: 30})
	return step(t, m, m.Init()())
}

// step feeds msg to m and then the replies of the commands it returns,
// except the refresh tick, which would wait.
func step(t testing.TB, m Model, msg tea.Msg) Model {
	t.Helper()
	next, cmd := m.Update(msg)
	m = next.(Model)
	if _, ok := msg.(SnapshotMsg); ok || cmd == nil {
		return m // the command is the re-armed tick
	}
	switch reply := cmd().(type) {
	case SnapshotMsg, PreviewMsg, CommitMsg, ConfirmMsg, KillMsg:
		return step(t, m, reply)
	}
	return m
}

// keyMsg turns a key name as tea.KeyMsg.String() writes it into the message.
func keyMsg(s string) tea.KeyMsg {
	names := map[string]tea.KeyType{
		"enter": tea.KeyEnter, "esc": tea.KeyEsc, "tab": tea.KeyTab, "shift+tab": tea.KeyShiftTab,
		"up": tea.KeyUp, "down": tea.KeyDown, "left": tea.KeyLeft, "right": tea.KeyRight,
		"pgup": tea.KeyPgUp, "pgdown": tea.KeyPgDown, "home": tea.KeyHome, "end": tea.KeyEnd,
		"backspace": tea.KeyBackspace, "delete": tea.KeyDelete, "ctrl+c": tea.KeyCtrlC, " ": tea.KeySpace,
	}
	if k, ok := names[s]; ok {
		return tea.KeyMsg{Type: k, Runes: []rune(map[bool]string{true: " "}[k == tea.KeySpace])}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)}
}

// press feeds each key in turn; text in quotes, such as `"lan x"`, is typed
// one rune at a time.
func press(t testing.TB, m Model, keys ...string) Model {
	t.Helper()
	for _, k := range keys {
		if len(k) > 2 && k[0] == '"' {
			for _, r := range k[1 : len(k)-1] {
				if r == ' ' {
					m = step(t, m, keyMsg(" "))
				} else {
					m = step(t, m, keyMsg(string(r)))
				}
			}
			continue
		}
		m = step(t, m, keyMsg(k))
	}
	return m
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./tui/ -update to record)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
	for i, l := range strings.Split(got, "\n") {
		if n := lipgloss.Width(l); n > 100 {
			t.Errorf("%s line %d is %d wide, more than 100", name, i+1, n)
		}
	}
	if n := strings.Count(got, "\n") + 1; n != 30 {
		t.Errorf("%s has %d lines, want 30", name, n)
	}
}

func TestGolden(t *testing.T) {
	t.Setenv("TERM", "xterm-256color") // must make no difference
	for _, tc := range []struct {
		name string
		id   Identity
		keys []string
		prep func(*fakeMonitor, *fakeOperator, *clock)
		tick bool // take a second sample one second later, for rates
	}{
		{name: "overview", id: admin, tick: true},
		{name: "flows", id: admin, keys: []string{"2", "down"}},
		{name: "flows-filter", id: admin, keys: []string{"2", "/", `"8.8"`, "enter", "s"}},
		{name: "drops", id: admin, keys: []string{"3", " "}},
		{name: "rules", id: admin, keys: []string{"4"}},
		{name: "policy", id: admin, keys: []string{"5"}},
		{name: "policy-edit", id: admin, keys: []string{"5", "e", "down", "end", `" # gateway"`}},
		{name: "policy-preview", id: admin, keys: []string{"5", "a", `"lan 1.1.1.1:443"`, "enter"}},
		{name: "audit", id: admin, keys: []string{"6"}},
		{name: "help", id: admin, keys: []string{"?"}},
		{name: "pending", id: admin, keys: []string{"2"}, prep: func(mon *fakeMonitor, op *fakeOperator, c *clock) {
			mon.status.Pending = &Pending{Version: Version{N: 5, Who: "alice (admin) from 192.168.1.10:51234"}, Previous: 4, Deadline: c.now.Add(83 * time.Second)}
		}},
		{name: "viewer", id: viewer, keys: []string{"2", "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mon, op, c := testFixture()
			if tc.prep != nil {
				tc.prep(mon, op, c)
			}
			m := newTestModel(t, tc.id, mon, op, c)
			if tc.tick {
				mon.status.Interfaces[0].RxBytes += 2_500_000
				mon.status.Interfaces[0].TxBytes += 40_000
				c.now = c.now.Add(time.Second)
				m = step(t, m, TickMsg(c.now))
			}
			m = press(t, m, tc.keys...)
			golden(t, tc.name, m.View())
		})
	}
}

func TestPages(t *testing.T) {
	mon, op, c := testFixture()
	m := newTestModel(t, admin, mon, op, c)
	for _, tc := range []struct {
		key  string
		want page
	}{
		{"2", flowsPage}, {"tab", dropsPage}, {"tab", rulesPage}, {"6", auditPage}, {"tab", overviewPage},
		{"shift+tab", auditPage}, {"5", policyPage}, {"1", overviewPage},
	} {
		m = press(t, m, tc.key)
		if got := m.page; got != tc.want {
			t.Errorf("after %q: page %s, want %s", tc.key, pageNames[got], pageNames[tc.want])
		}
	}
	if _, cmd := m.Update(keyMsg("q")); cmd == nil || cmd() != tea.Quit() {
		t.Errorf("q does not quit")
	}
}

func flowIDs(m Model) []uint32 {
	var ids []uint32
	for _, r := range m.flows.rows {
		ids = append(ids, m.flows.all[r].ID)
	}
	return ids
}

func TestFlowsSortFilterCursor(t *testing.T) {
	mon, op, c := testFixture()
	m := newTestModel(t, admin, mon, op, c)
	m = press(t, m, "2")
	if diff := cmp.Diff([]uint32{3, 1, 2}, flowIDs(m)); diff != "" {
		t.Errorf("by bytes (-want +got):\n%s", diff)
	}
	// Flow 3 has no start time: its age counts from when it was first seen (t0).
	m = press(t, m, "s")
	if diff := cmp.Diff([]uint32{2, 1, 3}, flowIDs(m)); diff != "" {
		t.Errorf("by age (-want +got):\n%s", diff)
	}
	c.now = t0.Add(time.Hour)
	m = step(t, m, TickMsg(c.now))
	if got, want := m.flows.start[2], t0; !got.Equal(want) {
		t.Errorf("flow 3 first seen %v, want %v (kept across refreshes)", got, want)
	}
	m = press(t, m, "/", `"time_w"`, "enter")
	if diff := cmp.Diff([]uint32{2}, flowIDs(m)); diff != "" {
		t.Errorf("filter by state (-want +got):\n%s", diff)
	}
	m = press(t, m, "/", "backspace", "backspace", "backspace", "backspace", "backspace", "backspace", `"8.8.8"`, "enter")
	if diff := cmp.Diff([]uint32{3}, flowIDs(m)); diff != "" {
		t.Errorf("filter by address (-want +got):\n%s", diff)
	}
	m = press(t, m, "esc")
	for _, tc := range []struct {
		key  string
		want int
	}{{"up", 0}, {"down", 1}, {"down", 2}, {"down", 2}, {"home", 0}, {"end", 2}, {"pgup", 0}, {"pgdown", 2}} {
		m = press(t, m, tc.key)
		if got := m.flows.cursor; got != tc.want {
			t.Errorf("after %q: cursor %d, want %d", tc.key, got, tc.want)
		}
	}
}

func TestKillFlow(t *testing.T) {
	mon, op, c := testFixture()
	m := newTestModel(t, admin, mon, op, c)
	m = press(t, m, "2", "x", "n")
	if len(op.killed) != 0 {
		t.Fatalf("n killed %v", op.killed)
	}
	m = press(t, m, "down", "x", "y")
	var got []uint32
	for _, f := range op.killed {
		got = append(got, f.ID)
	}
	if diff := cmp.Diff([]uint32{1}, got); diff != "" {
		t.Errorf("killed (-want +got):\n%s", diff)
	}
	if want := "killed tcp 192.168.1.10:40000 -> 93.184.216.34:443"; m.status != want {
		t.Errorf("status %q, want %q", m.status, want)
	}
}

func TestViewerRefused(t *testing.T) {
	mon, op, c := testFixture()
	mon.status.Pending = &Pending{Version: Version{N: 5}, Previous: 4, Deadline: t0.Add(time.Minute)}
	for _, keys := range [][]string{{"2", "x"}, {"5", "e"}, {"5", "a"}, {"C"}} {
		m := newTestModel(t, viewer, mon, op, c)
		m = press(t, m, keys...)
		if got, want := m.status, "read-only: viewer"; got != want {
			t.Errorf("%v: status %q, want %q", keys, got, want)
		}
		if m.prompt != noPrompt || m.polMode != policyView {
			t.Errorf("%v: viewer got a prompt or the editor", keys)
		}
	}
	if len(op.killed)+len(op.commits)+op.confirms != 0 {
		t.Errorf("a viewer changed the box: %+v", op)
	}
}

func TestCommitRefusedThenForced(t *testing.T) {
	mon, op, c := testFixture()
	op.refuse = errors.New("lockout: rule r0f1e2d3c4b wan inbound deny would drop your own connection")
	m := newTestModel(t, admin, mon, op, c)
	m = press(t, m, "5", "a", `"lan 1.1.1.1:443"`, "enter")
	if m.polMode != policyPreview || len(op.previews) != 1 || !strings.Contains(op.previews[0], "allow-1-1-1-1-tcp-443") {
		t.Fatalf("quick allow: mode %d, previews %q", m.polMode, op.previews)
	}
	m = press(t, m, "c", `"open dns"`, "enter")
	if m.refusal == nil || !strings.Contains(m.status, "r0f1e2d3c4b") {
		t.Fatalf("refusal not shown: status %q", m.status)
	}
	m = press(t, m, "F", "y")
	want := []commitCall{
		{"alice", op.previews[0], "open dns", false},
		{"alice", op.previews[0], "open dns", true},
	}
	if diff := cmp.Diff(want, op.commits); diff != "" {
		t.Errorf("commits (-want +got):\n%s", diff)
	}
	if p := m.currentPending(); p == nil || p.Version.N != 5 {
		t.Fatalf("no pending commit after force: %+v", p)
	}
	c.now = c.now.Add(7 * time.Second)
	// The banner wraps at 100 columns.
	if got, want := strings.Join(strings.Fields(m.View()), " "), "commit v5 by alice (admin) from 192.168.1.10:51234: confirm within 1m23s (press C) or it rolls back to v4"; !strings.Contains(got, want) {
		t.Errorf("view lacks the banner %q:\n%s", want, got)
	}
	m = press(t, m, "C")
	if op.confirms != 1 || m.currentPending() != nil {
		t.Errorf("confirm: %d calls, pending %+v", op.confirms, m.currentPending())
	}
}

func TestCommitBlockedByErrors(t *testing.T) {
	mon, op, c := testFixture()
	op.preview.Diagnostics = policy.Diagnostics{{Pos: policy.Pos{Line: 3, Col: 5}, Severity: policy.Error, Msg: "unknown key \"zonez\"", Fix: "did you mean \"zones\"?"}}
	m := newTestModel(t, admin, mon, op, c)
	m = press(t, m, "5", "e", "esc", "c")
	if got, want := m.status, "cannot commit: 1 errors"; got != want || m.prompt != noPrompt {
		t.Errorf("status %q, want %q", got, want)
	}
	if got := strings.Join(m.previewLines(), "\n"); !strings.Contains(got, `3:5 error: unknown key "zonez"; did you mean "zones"?`) {
		t.Errorf("preview lacks the diagnostic:\n%s", got)
	}
}

func TestCountdown(t *testing.T) {
	mon, op, c := testFixture()
	mon.status.Pending = &Pending{Version: Version{N: 5, Who: "alice"}, Previous: 4, Deadline: t0.Add(90 * time.Second)}
	m := newTestModel(t, admin, mon, op, c)
	for _, tc := range []struct {
		after time.Duration
		want  string
	}{{0, "1m30s"}, {7*time.Second + 500*time.Millisecond, "1m22s"}, {89 * time.Second, "1s"}, {2 * time.Minute, "0s"}} {
		c.now = t0.Add(tc.after)
		want := "confirm within " + tc.want + " (press C)"
		if got := m.View(); !strings.Contains(got, want) {
			t.Errorf("after %v: view lacks %q", tc.after, want)
		}
	}
}

func TestRates(t *testing.T) {
	mon, op, c := testFixture()
	m := newTestModel(t, admin, mon, op, c)
	mon.status.Interfaces[0].RxBytes += 125_000 // 1 Mbit in 1s
	mon.status.Interfaces[0].TxBytes += 1_250
	c.now = c.now.Add(time.Second)
	m = step(t, m, TickMsg(c.now))
	if diff := cmp.Diff([2]float64{1_000_000, 10_000}, m.rates["wan"]); diff != "" {
		t.Errorf("wan rates (-want +got):\n%s", diff)
	}
}

func TestDropsPause(t *testing.T) {
	mon, op, c := testFixture()
	m := newTestModel(t, admin, mon, op, c)
	m = press(t, m, "3", " ")
	mon.drops = append(mon.drops, Drop{Time: t0, In: "wan", Summary: "icmp 198.51.100.9 -> 203.0.113.7"})
	m = step(t, m, TickMsg(t0))
	if got := len(m.drops); got != 2 {
		t.Errorf("paused: %d drops, want 2", got)
	}
	m = press(t, m, " ")
	if got := len(m.drops); got != 3 {
		t.Errorf("resumed: %d drops, want 3", got)
	}
	m = press(t, m, "/", `"9.9.9.9"`, "enter")
	if got := len(m.filteredDrops()); got != 1 {
		t.Errorf("filtered: %d drops, want 1", got)
	}
}

func TestMonitorPanicIsState(t *testing.T) {
	mon, op, c := testFixture()
	mon.panics = true
	m := newTestModel(t, admin, mon, op, c)
	if got := m.View(); !strings.Contains(got, "reading the box: status: netlink socket closed") {
		t.Errorf("view does not show the error:\n%s", got)
	}
}

func manyFlows(n int, seed uint64) []flows.Flow {
	fs := make([]flows.Flow, n)
	x := seed
	for i := range fs {
		x = x*6364136223846793005 + 1442695040888963407
		fs[i] = flows.Flow{
			ID: uint32(i + 1), Proto: policy.ProtoTCP,
			Src:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), uint16(30000+i%30000)),
			Dst:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(x >> 56), byte(x >> 48), byte(x >> 40), byte(x >> 32)}), 443),
			State: "ESTABLISHED", Start: t0.Add(-time.Duration(x%100000) * time.Second),
			Bytes: [2]uint64{x % 1_000_000, x % 77_777},
		}
	}
	return fs
}

func BenchmarkFlowsView(b *testing.B) {
	mon, op, c := testFixture()
	mon.flows = manyFlows(100_000, 1)
	m := newTestModel(b, admin, mon, op, c)
	m = step(b, m, tea.WindowSizeMsg{Width: 120, Height: 40})
	m = press(b, m, "2", "pgdown", "pgdown")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		_ = m.View()
	}
}

// BenchmarkFlowsViewAllRows is the baseline for BenchmarkFlowsView: the
// same table code asked to render every one of the 100,000 rows, as a
// table without a viewport would.
func BenchmarkFlowsViewAllRows(b *testing.B) {
	mon, op, c := testFixture()
	mon.flows = manyFlows(100_000, 1)
	m := newTestModel(b, admin, mon, op, c)
	m = step(b, m, tea.WindowSizeMsg{Width: 120, Height: 40})
	m = press(b, m, "2")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		_ = m.flows.View(m.st, t0, 120, 100_000+10)
	}
}

func BenchmarkFlowsRefresh(b *testing.B) {
	for _, filter := range []string{"", "192.168.1"} {
		b.Run(fmt.Sprintf("filter=%q", filter), func(b *testing.B) {
			mon, op, c := testFixture()
			m := newTestModel(b, admin, mon, op, c)
			m = press(b, m, "2")
			m.flows = m.flows.setFilter(filter)
			snaps := [2][]flows.Flow{manyFlows(100_000, 1), manyFlows(100_000, 2)}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				m.flows = m.flows.setFlows(snaps[i%2], t0)
			}
		})
	}
}

// TestOneTick checks that only the refresh re-arms the tick: a snapshot
// read after a change does not start a second one.
func TestOneTick(t *testing.T) {
	mon, op, c := testFixture()
	m := New(admin, mon, op, Options{Now: c.Now})
	if _, cmd := m.Update(m.Init()()); cmd == nil {
		t.Errorf("the first snapshot does not arm the tick")
	}
	_, cmd := m.Update(KillMsg{Flow: mon.flows[0]})
	if cmd == nil {
		t.Fatal("a kill does not read the box again")
	}
	if _, again := m.Update(cmd()); again != nil {
		t.Errorf("the snapshot after a kill arms a second tick")
	}
}

func TestTextEditor(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		keys []string
		want string
	}{
		{"type at end of first line", "a: 1\nb: 2", []string{"end", `"0"`}, "a: 10\nb: 2"},
		{"enter splits", "ab", []string{"right", "enter"}, "a\nb"},
		{"backspace joins", "a\nb", []string{"down", "backspace"}, "ab"},
		{"delete joins", "a\nb", []string{"end", "delete"}, "ab"},
		{"tab is two spaces", "x", []string{"tab"}, "  x"},
		{"cursor clamps", "ab\nc", []string{"up", "up", "end", "down", "down", "down", `"!"`}, "ab\nc!"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTextEditor(tc.text)
			for _, k := range tc.keys {
				if len(k) > 2 && k[0] == '"' {
					e = e.Update(keyMsg(k[1:len(k)-1]), 10)
					continue
				}
				e = e.Update(keyMsg(k), 10)
			}
			if diff := cmp.Diff(tc.want, e.Value()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	// Editing leaves earlier values alone.
	a := newTextEditor("ab")
	b := a.Update(keyMsg("x"), 10)
	if got, want := a.Value(), "ab"; got != want {
		t.Errorf("earlier value changed to %q, want %q (b is %q)", got, want, b.Value())
	}
}

func TestQuickAllowError(t *testing.T) {
	mon, op, c := testFixture()
	m := newTestModel(t, admin, mon, op, c)
	m = press(t, m, "5", "a", `"dmz 1.1.1.1"`, "enter")
	if want := "no such zone (zones: wan, lan)"; !strings.Contains(m.status, want) || !m.statusErr {
		t.Errorf("status %q, want an error containing %q", m.status, want)
	}
	if len(op.previews) != 0 || m.polMode != policyView {
		t.Errorf("a failed quick allow previewed %q", op.previews)
	}
}

// TestStaleRules: a rule hit longer ago than StaleAfter is stale; one never
// hit is stale only once the policy has been in force that long.
func TestStaleRules(t *testing.T) {
	for _, tc := range []struct {
		name      string
		inForce   time.Duration // since the policy was committed
		wantNever bool          // the never-hit rule is marked stale
	}{
		{"policy committed 3h ago", 3 * time.Hour, false},
		{"policy committed 2 days ago", 48 * time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mon, op, c := testFixture()
			mon.status.Started = t0.Add(-30 * 24 * time.Hour)
			mon.status.Policy.When = t0.Add(-tc.inForce)
			m := newTestModel(t, admin, mon, op, c)
			view := press(t, m, "4").View()
			stale := map[string]bool{}
			for _, line := range strings.Split(view, "\n") {
				if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "r") {
					stale[f[0]] = strings.HasSuffix(strings.TrimSpace(line), "stale")
				}
			}
			want := map[string]bool{"r1a2b3c4d5e": false, "r0f1e2d3c4b": true, "r9a8b7c6d5e": tc.wantNever}
			if diff := cmp.Diff(want, stale); diff != "" {
				t.Errorf("stale rules (-want +got):\n%s\n%s", diff, view)
			}
		})
	}
}
