package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sluicefw/sluice/appliance/state"
	"github.com/sluicefw/sluice/dataplane/flows"
	"github.com/sluicefw/sluice/dataplane/netconf"
	"github.com/sluicefw/sluice/dataplane/nft"
	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/tui"
)

// basePolicy lets lan reach SSH on the box; noSSH is the same policy
// without it: committing noSSH from a lan session cuts that session.
const basePolicy = `hostname: box
interfaces:
  wan: {device: eth0, zone: wan, addresses: [81.0.0.2/24], gateway: 81.0.0.1}
  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}
zones:
  wan: {inbound: deny}
  lan:
    services: [ssh, dns]
    egress: {default: allow}
forward:
  - {from: lan, to: wan}
`

var noSSH = strings.Replace(basePolicy, "services: [ssh, dns]", "services: [dns]", 1)

// noEgress drops lan's connections to the internet.
var noEgress = strings.Replace(basePolicy, "egress: {default: allow}", "egress: {default: deny}", 1)

// fakeEngine records what it is asked to apply.
type fakeEngine struct {
	mu      sync.Mutex
	applied []*policy.Program
	fail    error
	flows   []flows.Flow
	killed  []flows.Flow
}

func (e *fakeEngine) Name() string { return "fake" }

func (e *fakeEngine) Apply(p *policy.Program) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fail != nil {
		return e.fail
	}
	e.applied = append(e.applied, p)
	return nil
}

func (e *fakeEngine) Check(*policy.Program) (string, error) { return "", nil }

func (e *fakeEngine) Flows() ([]flows.Flow, error) { return e.flows, nil }

func (e *fakeEngine) KillFlow(f flows.Flow) error {
	e.killed = append(e.killed, f)
	return nil
}

func (e *fakeEngine) Counters() (map[string]nft.Counter, error) { return nil, nil }

// hostname of the last program applied.
func (e *fakeEngine) last() *policy.Program {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.applied) == 0 {
		return nil
	}
	return e.applied[len(e.applied)-1]
}

// fakeClock is a clock whose timers fire only when the test says.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// Advance moves the clock and runs the timers that came due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for _, t := range c.timers {
		if !t.stopped && !t.at.After(c.now) {
			t.stopped = true
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

type fixture struct {
	r      *Router
	engine *fakeEngine
	clock  *fakeClock
	store  *state.Store
	dir    string
}

func newFixture(t *testing.T, mgmt ...string) *fixture {
	t.Helper()
	dir := t.TempDir()
	clock := &fakeClock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	store, err := state.Open(dir, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	engine := &fakeEngine{}
	r, err := New(Config{
		Store: store, Engine: engine, Default: []byte(basePolicy), DefaultName: "default.yaml",
		Management: mgmt, Now: clock.Now, AfterFunc: clock.AfterFunc,
		Links: func(*policy.Program) ([]netconf.Link, error) { return nil, nil },
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &fixture{r: r, engine: engine, clock: clock, store: store, dir: dir}
}

// start applies the policy in force, as Run does first.
func (f *fixture) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.r.Run(ctx, time.Hour) }()
	deadline := time.Now().Add(5 * time.Second)
	for f.engine.last() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Run did not apply the policy within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

var (
	admin  = tui.Identity{Name: "alice", Role: tui.Admin, Remote: netip.MustParseAddrPort("192.168.1.10:51234"), Local: netip.MustParseAddrPort("192.168.1.1:22")}
	viewer = tui.Identity{Name: "bob", Role: tui.Viewer, Remote: netip.MustParseAddrPort("192.168.1.11:40000"), Local: netip.MustParseAddrPort("192.168.1.1:22")}
)

func actions(t *testing.T, r *Router) []string {
	t.Helper()
	var out []string
	for _, e := range r.Audit() {
		out = append(out, e.Who+" "+e.Action)
	}
	return out
}

func TestCommitLapsesBackToPrevious(t *testing.T) {
	f := newFixture(t)
	f.start(t)
	p, err := f.r.Commit(admin, noEgress, "close egress", false)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	want := tui.Pending{Version: tui.Version{N: 1, Who: admin.String(), Why: "close egress", When: f.clock.Now()}, Previous: 0, Deadline: f.clock.Now().Add(DefaultConfirm)}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("pending (-want +got):\n%s", diff)
	}
	if got, _ := f.r.Policy(); got != noEgress {
		t.Errorf("policy in force after commit is not the committed text")
	}
	if s := f.r.Status(); s.Pending == nil || s.Pending.Version.N != 1 {
		t.Errorf("status pending = %+v, want v1", s.Pending)
	}

	f.clock.Advance(DefaultConfirm - time.Second)
	if _, ok := f.r.Pending(); !ok {
		t.Fatal("pending commit rolled back before its deadline")
	}
	f.clock.Advance(time.Second)
	if _, ok := f.r.Pending(); ok {
		t.Fatal("commit still pending after its deadline")
	}
	if got, v := f.r.Policy(); got != basePolicy || v.N != 0 {
		t.Errorf("after the lapse the policy in force is v%d, want the default back", v.N)
	}
	if n := len(f.engine.applied); n != 3 {
		t.Errorf("engine applied %d programs, want 3 (boot, commit, rollback)", n)
	}
	if diff := cmp.Diff([]string{admin.String() + " commit", "sluice rollback"}, actions(t, f.r)); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
	// The box restarts: the unconfirmed version is in the history, and
	// the default is still what boots.
	r2, err := New(Config{Store: f.store, Engine: &fakeEngine{}, Default: []byte(basePolicy), DefaultName: "default.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if _, v := r2.Policy(); v.N != 0 {
		t.Errorf("after restart policy v%d is in force, want the default", v.N)
	}
}

func TestConfirmKeepsCommit(t *testing.T) {
	f := newFixture(t)
	f.start(t)
	if err := f.r.Confirm(admin); !errors.Is(err, ErrNothingPending) {
		t.Errorf("Confirm with nothing pending = %v, want ErrNothingPending", err)
	}
	if _, err := f.r.Commit(admin, noEgress, "close egress", false); err != nil {
		t.Fatal(err)
	}
	if err := f.r.Confirm(viewer); !errors.Is(err, ErrViewer) {
		t.Errorf("Confirm by a viewer = %v, want ErrViewer", err)
	}
	if err := f.r.Confirm(admin); err != nil {
		t.Fatalf("Confirm: %v", err)
	}
	f.clock.Advance(time.Hour)
	if got, v := f.r.Policy(); got != noEgress || v.N != 1 {
		t.Errorf("after confirm and an hour, v%d in force, want v1", v.N)
	}
	r2, err := New(Config{Store: f.store, Engine: &fakeEngine{}, Default: []byte(basePolicy), DefaultName: "default.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if got, v := r2.Policy(); got != noEgress || v.N != 1 || v.Why != "close egress" {
		t.Errorf("after restart v%d (%q) in force, want v1 (close egress)", v.N, v.Why)
	}

	// A second commit lapses back to v1, the confirmed one.
	if _, err := f.r.Commit(admin, basePolicy, "reopen", false); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(DefaultConfirm)
	if _, v := f.r.Policy(); v.N != 1 {
		t.Errorf("second commit lapsed to v%d, want v1", v.N)
	}
}

func TestCommitRefusesLockout(t *testing.T) {
	f := newFixture(t, "tcp 192.168.1.20:40000 -> 192.168.1.1:22 in lan")
	f.start(t)
	_, err := f.r.Commit(admin, noSSH, "tidy services", false)
	var lock *LockoutError
	if !errors.As(err, &lock) {
		t.Fatalf("Commit cutting the session = %v, want a LockoutError", err)
	}
	if !strings.Contains(err.Error(), "your session tcp 192.168.1.10:51234 -> 192.168.1.1:22") || lock.Rule.Kind != policy.KindInbound {
		t.Errorf("refusal = %q (rule kind %v), want it to name the session and the lan inbound rule", err, lock.Rule.Kind)
	}
	if _, v := f.r.Policy(); v.N != 0 || len(f.engine.applied) != 1 {
		t.Errorf("a refused commit changed the policy (v%d) or applied something (%d)", v.N, len(f.engine.applied))
	}
	// From the console there is no session to cut, but the management
	// path is.
	_, err = f.r.Commit(tui.Identity{Name: "console", Console: true}, noSSH, "tidy", false)
	if !errors.As(err, &lock) || !strings.Contains(err.Error(), "management path tcp 192.168.1.20:40000") {
		t.Errorf("console commit cutting the management path = %v, want a LockoutError naming it", err)
	}
	if _, err := f.r.Commit(admin, noSSH, "tidy services", true); err != nil {
		t.Fatalf("forced Commit: %v", err)
	}
	want := []string{admin.String() + " commit-refused", "console commit-refused", admin.String() + " commit-forced", admin.String() + " commit"}
	if diff := cmp.Diff(want, actions(t, f.r)); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
}

func TestCommitRefusals(t *testing.T) {
	f := newFixture(t)
	f.start(t)
	if _, err := f.r.Commit(viewer, noEgress, "", false); !errors.Is(err, ErrViewer) {
		t.Errorf("viewer Commit = %v, want ErrViewer", err)
	}
	_, err := f.r.Commit(admin, "zones: {lan: {bogus: 1}}\n", "", false)
	if err == nil || !strings.Contains(err.Error(), "not valid") || !strings.Contains(err.Error(), "new policy:1:") {
		t.Errorf("invalid Commit = %v, want the diagnostics with their line", err)
	}
	f.engine.fail = errors.New("kernel says no")
	_, err = f.r.Commit(admin, noEgress, "", false)
	if err == nil || !strings.Contains(err.Error(), "kernel says no") || !strings.Contains(err.Error(), "default.yaml stays in force") {
		t.Errorf("Commit the engine refuses = %v", err)
	}
	if _, ok := f.r.Pending(); ok {
		t.Error("a commit the engine refused is pending")
	}
	if got, _ := f.r.Policy(); got != basePolicy {
		t.Error("a commit the engine refused changed the policy in force")
	}
}

func TestRecovery(t *testing.T) {
	f := newFixture(t)
	f.start(t)
	console := tui.Identity{Name: "console", Console: true}
	for _, text := range []string{noEgress, noSSH} {
		if _, err := f.r.Commit(admin, text, "", true); err != nil {
			t.Fatal(err)
		}
		if err := f.r.Confirm(admin); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(f.r.Versions()); got != 2 {
		t.Fatalf("%d versions, want 2", got)
	}
	if err := f.r.Rollback(console, 1); err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if got, v := f.r.Policy(); got != noEgress || v.N != 1 {
		t.Errorf("after rollback v%d in force, want v1", v.N)
	}
	if err := f.r.Rollback(console, 7); err == nil {
		t.Error("Rollback to a version that does not exist succeeded")
	}
	if err := f.r.ResetDefault(console); err != nil {
		t.Fatal(err)
	}
	if got, v := f.r.Policy(); got != basePolicy || v.N != 0 {
		t.Errorf("after reset v%d in force, want the default", v.N)
	}
	if err := f.r.Power(console, tui.Reboot); err == nil || !strings.Contains(err.Error(), "PID 1") {
		t.Errorf("Power outside PID 1 = %v, want a refusal naming PID 1", err)
	}
	pub := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl carol"
	if err := f.r.AddKey(console, pub); err != nil {
		t.Fatalf("AddKey: %v", err)
	}
	if err := f.r.FactoryReset(console); err != nil {
		t.Fatalf("FactoryReset: %v", err)
	}
	if n := len(f.r.Versions()); n != 0 {
		t.Errorf("%d versions after factory reset, want 0", n)
	}
	if keys, _ := f.store.Keys(); len(keys) != 0 {
		t.Errorf("%d keys after factory reset, want 0", len(keys))
	}
	want := []string{"console factory-reset"} // the log was erased with the rest
	if diff := cmp.Diff(want, actions(t, f.r)[1:]); diff != "" {
		t.Errorf("audit after factory reset (-want +got):\n%s", diff)
	}
}

func TestPreviewBehaviour(t *testing.T) {
	f := newFixture(t)
	f.start(t)
	web := flows.Flow{Proto: policy.ProtoTCP, Src: netip.MustParseAddrPort("192.168.1.10:40000"), Dst: netip.MustParseAddrPort("93.184.216.34:443")}
	dns := flows.Flow{Proto: policy.ProtoUDP, Src: netip.MustParseAddrPort("192.168.1.10:5353"), Dst: netip.MustParseAddrPort("192.168.1.1:53")}
	f.engine.flows = []flows.Flow{web, dns}
	p := f.r.Preview(noEgress)
	if p.Diagnostics.Err() != nil {
		t.Fatalf("diagnostics: %v", p.Diagnostics)
	}
	if p.Flows != 2 || len(p.Changes) != 1 || p.Changes[0].Flow != web {
		t.Fatalf("preview judged %d flows with changes %+v, want the web flow only", p.Flows, p.Changes)
	}
	if c := p.Changes[0]; !strings.HasPrefix(c.Before, "accept ") || !strings.HasPrefix(c.After, "drop ") || !strings.Contains(c.After, "lan egress default") {
		t.Errorf("change %q -> %q, want accept -> drop by lan egress default", c.Before, c.After)
	}
	wantDiff := "--- default.yaml\n+++ new policy\n@@ -6,6 +6,6 @@\n   wan: {inbound: deny}\n   lan:\n     services: [ssh, dns]\n-    egress: {default: allow}\n+    egress: {default: deny}\n forward:\n   - {from: lan, to: wan}\n"
	if diff := cmp.Diff(wantDiff, p.TextDiff); diff != "" {
		t.Errorf("text diff (-want +got):\n%s", diff)
	}
	bad := f.r.Preview("zones: [\n")
	if bad.Diagnostics.Err() == nil {
		t.Error("preview of broken YAML has no errors")
	}
}

// TestDiffMatchesGNU compares Diff with diff -u on edits of the example
// policies: the same hunks, line for line.
func TestDiffMatchesGNU(t *testing.T) {
	if _, err := exec.LookPath("diff"); err != nil {
		t.Skip("needs diff(1)")
	}
	office, err := os.ReadFile("../../examples/office.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a := string(office)
	lines := strings.SplitAfter(a, "\n")
	edit := func(f func([]string) []string) string {
		return strings.Join(f(append([]string(nil), lines...)), "")
	}
	tests := map[string]string{
		"one line changed":  strings.Replace(a, "rate: 20/second", "rate: 5/second", 1),
		"line added":        edit(func(l []string) []string { return append(l[:10], append([]string{"# note\n"}, l[10:]...)...) }),
		"lines removed":     edit(func(l []string) []string { return append(l[:3], l[9:]...) }),
		"first line":        "# new first line\n" + a,
		"far apart changes": strings.Replace(strings.Replace(a, "office-edge", "edge", 1), "20/second", "30/second", 1),
		"to empty":          "",
		"everything":        "hostname: x\n",
		"no final newline":  strings.TrimSuffix(a, "\n") + "\n# end",
	}
	dir := t.TempDir()
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			pa, pb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			os.WriteFile(pa, []byte(a), 0o644)
			os.WriteFile(pb, []byte(b), 0o644)
			out, _ := exec.Command("diff", "-u", "--label", "a", "--label", "b", pa, pb).Output()
			if diff := cmp.Diff(string(out), Diff("a", "b", a, b)); diff != "" {
				t.Errorf("Diff vs diff -u (-gnu +ours):\n%s", diff)
			}
		})
	}
	if got := Diff("a", "b", a, a); got != "" {
		t.Errorf("Diff of equal texts = %q, want empty", got)
	}
}

func TestCommands(t *testing.T) {
	f := newFixture(t)
	f.start(t)
	f.engine.flows = []flows.Flow{{ID: 7, Proto: policy.ProtoTCP, Src: netip.MustParseAddrPort("192.168.1.10:40000"), Dst: netip.MustParseAddrPort("93.184.216.34:443"), State: "ESTABLISHED"}}
	run := func(stdin string, args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := f.r.Command(context.Background(), admin, args, strings.NewReader(stdin), &out, &errb)
		return out.String(), errb.String(), code
	}
	if out, _, code := run("", "policy", "show"); code != 0 || out != basePolicy {
		t.Errorf("policy show = %d %q", code, out)
	}
	if _, errs, code := run("", "policy", "commit"); code != 1 || !strings.Contains(errs, "no policy on standard input") {
		t.Errorf("policy commit without input = %d %q", code, errs)
	}
	out, errs, code := run(noEgress, "policy", "commit", "--why", "close egress")
	if code != 0 || !strings.Contains(out, "committed v1: run `confirm` within 2m0s") {
		t.Errorf("policy commit = %d %q %q", code, out, errs)
	}
	if out, _, _ := run("", "status"); !strings.Contains(out, "pending  v1 by alice (admin) from 192.168.1.10:51234: confirm within 2m0s or v0 comes back") {
		t.Errorf("status while pending:\n%s", out)
	}
	if out, _, code := run("", "confirm"); code != 0 || out != "confirmed v1\n" {
		t.Errorf("confirm = %d %q", code, out)
	}
	if _, errs, code := run("", "confirm"); code != 1 || !strings.Contains(errs, "no commit is waiting") {
		t.Errorf("second confirm = %d %q", code, errs)
	}
	out, _, code = run("", "flows", "--json")
	var got []flows.Flow
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 {
		t.Fatalf("flows --json = %d %q: %v", code, out, err)
	}
	if diff := cmp.Diff(f.engine.flows, got, cmpopts.EquateComparable(netip.AddrPort{})); diff != "" {
		t.Errorf("flows --json (-want +got):\n%s", diff)
	}
	if out, _, _ := run("", "policy", "history"); !strings.Contains(out, "v1 *") || !strings.Contains(out, "close egress") {
		t.Errorf("policy history:\n%s", out)
	}
	if _, errs, code := run("", "reboot", "now"); code != 2 || !strings.Contains(errs, "unknown command") {
		t.Errorf("unknown command = %d %q", code, errs)
	}
	var out2, errb bytes.Buffer
	if code := f.r.Command(context.Background(), viewer, []string{"policy", "commit"}, strings.NewReader(noSSH), &out2, &errb); code != 1 || !strings.Contains(errb.String(), "read-only") {
		t.Errorf("viewer commit = %d %q", code, errb.String())
	}
}

// An event from outside (a failed SSH login) is written while the router's
// lock is held elsewhere, as during a commit: logins do not wait for it.
func TestAuditEventDoesNotWaitForTheRouter(t *testing.T) {
	f := newFixture(t)
	f.r.mu.Lock()
	done := make(chan struct{})
	go func() {
		f.r.AuditEvent("192.0.2.7", "ssh login refused", "unknown key")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		f.r.mu.Unlock()
		t.Fatal("AuditEvent waited for the router's lock")
	}
	f.r.mu.Unlock()
	if got := actions(t, f.r); !slices.Contains(got, "192.0.2.7 ssh login refused") {
		t.Errorf("audit log %v, want the refused login in it", got)
	}
}
