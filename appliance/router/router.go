// Package router runs the box's policy: it keeps one policy in force on the
// dataplane, commits new ones under a confirm timer, refuses commits that
// would lock the committing operator out, and answers what the TUI, the SSH
// commands and the serial console ask.
//
// It is the one place that changes the policy in force, so every change is
// serialized, written to the state directory before it is applied, and
// audited with who made it and why.
package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"slices"
	"sync"
	"time"

	"github.com/sluicefw/sluice/appliance/state"
	"github.com/sluicefw/sluice/dataplane/droplog"
	"github.com/sluicefw/sluice/dataplane/flows"
	"github.com/sluicefw/sluice/dataplane/netconf"
	"github.com/sluicefw/sluice/dataplane/nft"
	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/tui"
)

// DefaultConfirm is how long a commit waits for confirmation before the
// previous policy comes back.
const DefaultConfirm = 120 * time.Second

// Engine is the dataplane a Router drives. The kernel engine (Kernel) is
// the one sluice runs; tests use a fake.
type Engine interface {
	Name() string
	// Apply puts prog in force atomically: on error the previous policy
	// stays in force.
	Apply(prog *policy.Program) error
	// Check puts prog back if the dataplane lost it or the box's learned
	// addresses changed; it says what it did, or "" when nothing was needed.
	Check(prog *policy.Program) (string, error)
	Flows() ([]flows.Flow, error)
	KillFlow(f flows.Flow) error
	Counters() (map[string]nft.Counter, error)
}

// Config is what a Router needs.
type Config struct {
	Store  *state.Store
	Engine Engine
	// Default is the policy used when the state holds none, and by
	// "reset to default": the built-in policy or the one --config names.
	Default     []byte
	DefaultName string
	// Confirm is the confirm window of a commit; DefaultConfirm if zero.
	Confirm time.Duration
	// Management lists packets, in `sluice explain` syntax, that every
	// new policy must accept: the declared management paths.
	Management []string
	// Drops is the drop log to show; nil when drops are not logged.
	Drops *droplog.Ring
	// Power reboots or powers off the machine; nil outside PID 1.
	Power func(tui.Power) error
	// Update installs a unified kernel image into the inactive boot slot
	// and returns what it did; nil where sluice does not boot from slots.
	Update func(uki []byte) (string, error)
	// Links reads the interfaces; netconf.Links when nil.
	Links func(*policy.Program) ([]netconf.Link, error)
	// Now and AfterFunc are the clock; time.Now and time.AfterFunc when nil.
	Now       func() time.Time
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
	Logger    *log.Logger
}

// loaded is one policy text with its compiled program and its place in the
// history.
type loaded struct {
	text []byte
	prog *policy.Program
	v    tui.Version
}

// Router is the running policy. Its methods are safe for concurrent use: mu
// guards everything below it and is held across Engine.Apply, so changes
// are applied one at a time in the order they were made. Nothing else is
// locked while mu is held, except the state store's own lock.
type Router struct {
	cfg     Config
	started time.Time
	ready   chan struct{} // closed once the first policy is in force

	mu        sync.Mutex
	current   loaded // in force
	confirmed loaded // what a lapsed commit goes back to
	pending   *tui.Pending
	stopTimer func() bool
	gen       int // bumped by every change, so a stale timer does nothing
	alerts    []string
	counters  map[string]nft.Counter
	lastHit   map[string]time.Time
}

// maxAlerts bounds the alerts kept for the overview.
const maxAlerts = 20

// New loads the policy in force from the state store: the confirmed
// version, or Default when there is none. A version that no longer
// compiles falls back to Default, with an alert. Nothing is applied until
// Run.
func New(cfg Config) (*Router, error) {
	if cfg.Confirm <= 0 {
		cfg.Confirm = DefaultConfirm
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	if cfg.Links == nil {
		cfg.Links = netconf.Links
	}
	if cfg.Logger == nil {
		cfg.Logger = log.New(io.Discard, "", 0)
	}
	r := &Router{cfg: cfg, started: cfg.Now(), ready: make(chan struct{}), lastHit: map[string]time.Time{}}
	def, err := r.defaultPolicy()
	if err != nil {
		return nil, fmt.Errorf("router: default policy: %w", err)
	}
	r.current = def
	text, v, warnings, err := cfg.Store.Current()
	for _, w := range warnings {
		r.alert(w)
	}
	switch {
	case err != nil:
		r.alert(fmt.Sprintf("policy history unreadable (%v): using %s", err, cfg.DefaultName))
	case text != nil:
		l, err := r.compile(fmt.Sprintf("policy v%d", v.N), text)
		if err != nil {
			r.alert(fmt.Sprintf("policy v%d no longer compiles (%v): using %s", v.N, err, cfg.DefaultName))
			break
		}
		l.v = version(v)
		r.current = l
	}
	r.confirmed = r.current
	return r, nil
}

func version(v state.Version) tui.Version {
	return tui.Version{N: v.N, Who: v.Who, Why: v.Why, When: v.When}
}

// defaultPolicy compiles the default policy, version 0.
func (r *Router) defaultPolicy() (loaded, error) {
	l, err := r.compile(r.cfg.DefaultName, r.cfg.Default)
	l.v = tui.Version{N: 0, Why: "the default policy, " + r.cfg.DefaultName}
	return l, err
}

// compile parses and compiles a policy text; errors are the diagnostics.
func (r *Router) compile(name string, text []byte) (loaded, error) {
	pol, diags := policy.Parse(name, text)
	if err := diags.Err(); err != nil {
		return loaded{}, err
	}
	prog, err := policy.Compile(pol)
	if err != nil {
		return loaded{}, err
	}
	return loaded{text: text, prog: prog}, nil
}

// alert records a problem for the overview and the console, and logs it.
// Callers hold mu, or own r exclusively (New).
func (r *Router) alert(msg string) {
	r.cfg.Logger.Print(msg)
	r.alerts = append(r.alerts, r.cfg.Now().Format("15:04:05")+" "+msg)
	if len(r.alerts) > maxAlerts {
		r.alerts = slices.Delete(r.alerts, 0, len(r.alerts)-maxAlerts)
	}
}

// raise is alert for callers that do not hold mu.
func (r *Router) raise(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.alert(msg)
}

// dropPending stops the confirm timer and forgets the pending commit.
// Callers hold mu.
func (r *Router) dropPending() {
	if r.stopTimer != nil {
		r.stopTimer()
	}
	r.pending, r.stopTimer = nil, nil
}

// audit writes one entry to the audit log; a failure to write it becomes
// an alert (the change itself stands). Caller holds r.mu.
func (r *Router) audit(who, action, detail string) {
	if err := r.writeAudit(who, action, detail); err != nil {
		r.alert(err.Error())
	}
}

// writeAudit writes one entry to the audit log and the logger. It needs no
// lock of the router's: the store orders its lines itself.
func (r *Router) writeAudit(who, action, detail string) error {
	err := r.cfg.Store.Audit(state.Entry{Time: r.cfg.Now(), Who: who, Action: action, Detail: detail})
	r.cfg.Logger.Printf("audit: %s %s: %s", who, action, detail)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// AuditEvent records an event from outside the router, such as a failed
// SSH login. The router's lock is taken only to raise an alert when the
// line cannot be written: logins do not wait behind a commit, nor behind
// each other's sync to disk.
func (r *Router) AuditEvent(who, action, detail string) {
	if err := r.writeAudit(who, action, detail); err != nil {
		r.raise(err.Error())
	}
}

// Run applies the policy in force and keeps it in force until ctx ends:
// the dataplane is checked every check interval, and counters are sampled
// every second for the rules' last hits. If the policy in force cannot be
// applied and it is not the default, the default is tried.
func (r *Router) Run(ctx context.Context, check time.Duration) error {
	r.mu.Lock()
	err := r.cfg.Engine.Apply(r.current.prog)
	if err != nil && r.current.v.N != 0 {
		r.alert(fmt.Sprintf("apply policy v%d: %v; applying %s", r.current.v.N, err, r.cfg.DefaultName))
		def, derr := r.defaultPolicy()
		if derr == nil {
			r.current, r.confirmed = def, def
			err = r.cfg.Engine.Apply(def.prog)
		}
	}
	if err != nil {
		r.mu.Unlock()
		return fmt.Errorf("apply %s: %w", r.describe(r.current), err)
	}
	r.cfg.Logger.Printf("%s applied: %d rules; running", r.describe(r.current), len(r.current.prog.Rules))
	select {
	case <-r.ready:
	default:
		close(r.ready)
	}
	r.mu.Unlock()

	tick := time.NewTicker(check)
	defer tick.Stop()
	sample := time.NewTicker(time.Second)
	defer sample.Stop()
	for {
		select {
		case <-ctx.Done():
			r.mu.Lock()
			if r.stopTimer != nil {
				r.stopTimer()
			}
			r.mu.Unlock()
			return nil
		case <-sample.C:
			r.sample()
		case <-tick.C:
			r.mu.Lock()
			if did, err := r.cfg.Engine.Check(r.current.prog); err != nil {
				r.alert(fmt.Sprintf("keep %s in force: %v", r.describe(r.current), err))
			} else if did != "" {
				r.alert(did)
			}
			r.mu.Unlock()
		}
	}
}

// describe names a loaded policy for logs: "policy v3" or the default's
// file name.
func (r *Router) describe(l loaded) string {
	if l.v.N == 0 {
		return r.cfg.DefaultName
	}
	return fmt.Sprintf("policy v%d", l.v.N)
}

// sample reads the rule counters and notes which moved.
func (r *Router) sample() {
	c, err := r.cfg.Engine.Counters()
	if err != nil {
		return // the check loop reports a missing table
	}
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, v := range c {
		if old, ok := r.counters[id]; (ok && v.Packets > old.Packets) || (!ok && v.Packets > 0) {
			r.lastHit[id] = now
		}
	}
	r.counters = c
}

// apply puts l in force and resets what belonged to the old ruleset.
// Callers hold mu.
func (r *Router) apply(l loaded) error {
	if err := r.cfg.Engine.Apply(l.prog); err != nil {
		return err
	}
	r.current = l
	r.counters = nil
	r.gen++
	return nil
}

// LockoutError is a commit refused because the new policy would drop the
// committing session's own connection or a declared management path.
type LockoutError struct {
	What   string // "your session tcp 192.168.1.10:51234 -> 192.168.1.1:22" or the management path
	Rule   policy.Rule
	Reason policy.Reason
}

func (e *LockoutError) Error() string {
	at := ""
	if e.Rule.Pos.Line > 0 {
		at = fmt.Sprintf(" (policy line %d)", e.Rule.Pos.Line)
	}
	return fmt.Sprintf("refused: the new policy would drop %s: rule %s %q%s; fix the policy, or commit with force", e.What, e.Rule.ID, e.Rule.Name, at)
}

// ErrViewer is returned when a viewer tries to change something.
var ErrViewer = errors.New("read-only: a viewer may not change the box")

// ErrNothingPending is returned by Confirm when no commit waits.
var ErrNothingPending = errors.New("no commit is waiting for confirmation")

func allowed(id tui.Identity) error {
	if id.Role != tui.Admin && !id.Console {
		return ErrViewer
	}
	return nil
}

// lockout checks that prog accepts id's own connection and every declared
// management path.
func (r *Router) lockout(id tui.Identity, prog *policy.Program) error {
	opts := netconf.Learned(prog)
	if !id.Console && id.Remote.IsValid() && id.Local.IsValid() {
		j := flows.NewJudge(prog, opts)
		f := flows.Flow{Proto: policy.ProtoTCP, Src: id.Remote, Dst: id.Local}
		if _, d, decided := j.Decide(f); decided && d.Verdict != policy.Accept {
			return &LockoutError{What: "your session " + f.String(), Rule: prog.Rules[d.Rule], Reason: d.Reason}
		}
	}
	if len(r.cfg.Management) == 0 {
		return nil
	}
	ev := policy.NewEvaluator(prog, opts)
	for _, m := range r.cfg.Management {
		pk, err := prog.ParsePacket(m)
		if err != nil {
			return fmt.Errorf("refused: management path %q under the new policy: %w; fix the policy, or commit with force", m, err)
		}
		if d := ev.Evaluate(&pk); d.Verdict != policy.Accept {
			if d.Rule < 0 {
				return fmt.Errorf("refused: the new policy would drop management path %q (%s); fix the policy, or commit with force", m, d.Reason)
			}
			return &LockoutError{What: "management path " + m, Rule: prog.Rules[d.Rule], Reason: d.Reason}
		}
	}
	return nil
}

// Commit applies text and starts the confirm timer; see tui.Operator.
func (r *Router) Commit(id tui.Identity, text, why string, force bool) (tui.Pending, error) {
	if err := allowed(id); err != nil {
		return tui.Pending{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := r.compile("new policy", []byte(text))
	if err != nil {
		return tui.Pending{}, fmt.Errorf("refused: the policy is not valid:\n%w", err)
	}
	if err := r.lockout(id, next.prog); err != nil {
		if !force {
			r.audit(id.String(), "commit-refused", err.Error())
			return tui.Pending{}, err
		}
		r.audit(id.String(), "commit-forced", err.Error())
	}
	v, err := r.cfg.Store.Add([]byte(text), id.String(), why)
	if err != nil {
		return tui.Pending{}, fmt.Errorf("commit: %w", err)
	}
	next.v = version(v)
	if err := r.apply(next); err != nil {
		r.audit(id.String(), "commit-failed", fmt.Sprintf("v%d: %v", v.N, err))
		return tui.Pending{}, fmt.Errorf("commit v%d: %w; %s stays in force", v.N, err, r.describe(r.current))
	}
	r.dropPending()
	p := tui.Pending{Version: next.v, Previous: r.confirmed.v.N, Deadline: r.cfg.Now().Add(r.cfg.Confirm)}
	r.pending = &p
	gen := r.gen
	r.stopTimer = r.cfg.AfterFunc(r.cfg.Confirm, func() { r.lapse(gen) })
	r.audit(id.String(), "commit", fmt.Sprintf("v%d (%s): confirm within %v or v%d comes back", v.N, why, r.cfg.Confirm, p.Previous))
	return p, nil
}

// lapse rolls back an unconfirmed commit, unless something changed since.
func (r *Router) lapse(gen int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil || r.gen != gen {
		return // confirmed or superseded meanwhile
	}
	n := r.pending.Version.N
	r.pending, r.stopTimer = nil, nil
	if err := r.apply(r.confirmed); err != nil {
		r.alert(fmt.Sprintf("roll back v%d to %s: %v", n, r.describe(r.confirmed), err))
		r.audit("sluice", "rollback-failed", fmt.Sprintf("v%d: %v", n, err))
		return
	}
	r.audit("sluice", "rollback", fmt.Sprintf("v%d was not confirmed within %v: %s is back", n, r.cfg.Confirm, r.describe(r.confirmed)))
}

// Confirm makes the pending commit permanent; see tui.Operator.
func (r *Router) Confirm(id tui.Identity) error {
	if err := allowed(id); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		return ErrNothingPending
	}
	n := r.pending.Version.N
	if err := r.cfg.Store.SetCurrent(n); err != nil {
		return fmt.Errorf("confirm v%d: %w", n, err)
	}
	r.dropPending()
	r.confirmed = r.current
	r.gen++
	r.audit(id.String(), "confirm", fmt.Sprintf("v%d", n))
	return nil
}

// setNow applies l and makes it the confirmed policy at once, dropping any
// pending commit. Callers hold mu.
func (r *Router) setNow(l loaded) error {
	if err := r.apply(l); err != nil {
		return err
	}
	if err := r.cfg.Store.SetCurrent(l.v.N); err != nil {
		r.alert(fmt.Sprintf("record v%d as the policy in force: %v", l.v.N, err))
	}
	r.dropPending()
	r.confirmed = l
	return nil
}

// Rollback applies version n of the history at once; see tui.Recovery.
func (r *Router) Rollback(id tui.Identity, n int) error {
	if err := allowed(id); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n == 0 {
		return r.resetDefault(id)
	}
	text, v, err := r.cfg.Store.Read(n)
	if err != nil {
		return fmt.Errorf("roll back to v%d: %w", n, err)
	}
	l, err := r.compile(fmt.Sprintf("policy v%d", n), text)
	if err != nil {
		return fmt.Errorf("roll back to v%d: %w", n, err)
	}
	l.v = version(v)
	if err := r.setNow(l); err != nil {
		return fmt.Errorf("roll back to v%d: %w", n, err)
	}
	r.audit(id.String(), "rollback", fmt.Sprintf("to v%d", n))
	return nil
}

// ResetDefault applies the default policy at once; see tui.Recovery.
func (r *Router) ResetDefault(id tui.Identity) error {
	if err := allowed(id); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resetDefault(id)
}

func (r *Router) resetDefault(id tui.Identity) error {
	def, err := r.defaultPolicy()
	if err != nil {
		return fmt.Errorf("reset to %s: %w", r.cfg.DefaultName, err)
	}
	if err := r.setNow(def); err != nil {
		return fmt.Errorf("reset to %s: %w", r.cfg.DefaultName, err)
	}
	r.audit(id.String(), "reset", "to "+r.cfg.DefaultName)
	return nil
}

// FactoryReset erases the state and applies the default; see tui.Recovery.
func (r *Router) FactoryReset(id tui.Identity) error {
	if err := allowed(id); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.cfg.Store.FactoryReset(); err != nil {
		return fmt.Errorf("factory reset: %w", err)
	}
	if err := r.resetDefault(id); err != nil {
		return err
	}
	r.audit(id.String(), "factory-reset", "state erased")
	return nil
}

// AddKey adds an authorized key; see tui.Recovery.
func (r *Router) AddKey(id tui.Identity, line string) error {
	if err := allowed(id); err != nil {
		return err
	}
	k, err := r.cfg.Store.AddKey(line)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.audit(id.String(), "add-key", fmt.Sprintf("%s (%s)", k.Name, k.Role))
	return nil
}

// Power reboots or powers off; see tui.Recovery.
func (r *Router) Power(id tui.Identity, p tui.Power) error {
	if err := allowed(id); err != nil {
		return err
	}
	what := map[tui.Power]string{tui.Reboot: "reboot", tui.PowerOff: "poweroff"}[p]
	if r.cfg.Power == nil {
		return fmt.Errorf("%s: sluice is not the machine's init (PID 1) here; %s the machine yourself", what, what)
	}
	r.AuditEvent(id.String(), what, "")
	return r.cfg.Power(p)
}

// Versions lists the history; see tui.Recovery.
func (r *Router) Versions() []tui.Version {
	vs, err := r.cfg.Store.Versions()
	if err != nil {
		r.raise(fmt.Sprintf("policy history: %v", err))
	}
	out := make([]tui.Version, 0, len(vs))
	for _, v := range vs {
		if v.Bad != "" {
			continue // damaged: Current and Read report it; nothing to roll back to
		}
		out = append(out, version(v))
	}
	return out
}

// Program returns the compiled policy in force.
func (r *Router) Program() *policy.Program {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current.prog
}

// KillFlow deletes a live connection; see tui.Operator.
func (r *Router) KillFlow(id tui.Identity, f flows.Flow) error {
	if err := allowed(id); err != nil {
		return err
	}
	if err := r.cfg.Engine.KillFlow(f); err != nil {
		return err
	}
	r.AuditEvent(id.String(), "kill-flow", f.String())
	return nil
}

// Policy returns the text and version in force; see tui.Operator.
func (r *Router) Policy() (string, tui.Version) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.current.text), r.current.v
}

// Preview says what committing text would do; see tui.Operator.
func (r *Router) Preview(text string) tui.Preview {
	r.mu.Lock()
	cur := r.current
	r.mu.Unlock()
	var p tui.Preview
	pol, diags := policy.Parse("new policy", []byte(text))
	p.Diagnostics = diags
	p.TextDiff = Diff(r.describe(cur), "new policy", string(cur.text), text)
	if diags.Err() != nil {
		return p
	}
	prog, err := policy.Compile(pol)
	if err != nil {
		p.Diagnostics = append(p.Diagnostics, policy.Diagnostic{File: "new policy", Severity: policy.Error, Msg: err.Error()})
		return p
	}
	live, err := r.cfg.Engine.Flows()
	if err != nil {
		p.Diagnostics = append(p.Diagnostics, policy.Diagnostic{File: "new policy", Severity: policy.Warning, Msg: "live flows not judged: " + err.Error()})
		return p
	}
	p.Flows = len(live)
	before := flows.NewJudge(cur.prog, netconf.Learned(cur.prog))
	after := flows.NewJudge(prog, netconf.Learned(prog))
	for _, f := range live {
		_, db, okb := before.Decide(f)
		_, da, oka := after.Decide(f)
		acceptB := !okb || db.Verdict == policy.Accept
		acceptA := !oka || da.Verdict == policy.Accept
		if acceptA == acceptB {
			continue
		}
		p.Changes = append(p.Changes, tui.FlowChange{Flow: f, Before: verdictText(cur.prog, db, okb), After: verdictText(prog, da, oka)})
	}
	return p
}

func verdictText(prog *policy.Program, d policy.Decision, decided bool) string {
	if !decided {
		return "accept (not filtered)"
	}
	if d.Rule < 0 || d.Rule >= len(prog.Rules) {
		return d.Verdict.String() + " (" + d.Reason.String() + ")"
	}
	ru := prog.Rules[d.Rule]
	return d.Verdict.String() + " " + string(ru.ID) + " " + ru.Name
}

// Status is the overview; see tui.Monitor.
func (r *Router) Status() tui.Status {
	r.mu.Lock()
	s := tui.Status{
		Hostname: r.current.prog.Hostname,
		Engine:   r.cfg.Engine.Name(),
		Started:  r.started,
		Policy:   r.current.v,
		Alerts:   slices.Clone(r.alerts),
	}
	if r.pending != nil {
		p := *r.pending
		s.Pending = &p
	}
	prog := r.current.prog
	r.mu.Unlock()
	links, err := r.cfg.Links(prog)
	if err != nil {
		s.Alerts = append(s.Alerts, "interfaces: "+err.Error())
	}
	for _, l := range links {
		s.Interfaces = append(s.Interfaces, tui.Interface{Name: l.Name, Device: l.Device, Up: l.Up, Addrs: l.Addrs, RxBytes: l.RxBytes, TxBytes: l.TxBytes})
	}
	return s
}

// Flows lists the live connections; see tui.Monitor.
func (r *Router) Flows() []flows.Flow {
	fs, err := r.cfg.Engine.Flows()
	if err != nil {
		r.raise(fmt.Sprintf("list flows: %v", err))
	}
	return fs
}

// Drops lists the latest drops, oldest first; see tui.Monitor.
func (r *Router) Drops() []tui.Drop {
	d, _ := r.DropsSince(0)
	return d
}

// DropsSince returns the drops recorded after the first seen ones (as many
// of them as the drop log still holds), oldest first, and the count of
// drops recorded so far, for the next call.
func (r *Router) DropsSince(seen uint64) ([]tui.Drop, uint64) {
	if r.cfg.Drops == nil {
		return nil, 0
	}
	recs, total := r.cfg.Drops.Snapshot()
	if n := total - seen; total >= seen && n < uint64(len(recs)) {
		recs = recs[uint64(len(recs))-n:]
	}
	if len(recs) == 0 {
		return nil, total
	}
	r.mu.Lock()
	prog := r.current.prog
	r.mu.Unlock()
	names := ifaceNames()
	out := make([]tui.Drop, 0, len(recs))
	for _, rec := range recs {
		d := tui.Drop{Time: rec.Time, In: names[rec.InIndex], Summary: rec.Summary()}
		if d.In == "" {
			d.In = fmt.Sprint(rec.InIndex)
		}
		if rec.Rule > 0 && int(rec.Rule) <= len(prog.Rules) {
			ru := prog.Rules[rec.Rule-1]
			d.Rule, d.RuleName, d.Reason = string(ru.ID), ru.Name, ru.Reason.String()
		}
		out = append(out, d)
	}
	return out, total
}

// Rules lists every rule with its counter; see tui.Monitor.
func (r *Router) Rules() []tui.RuleStat {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]tui.RuleStat, 0, len(r.current.prog.Rules))
	for _, ru := range r.current.prog.Rules {
		c := r.counters[string(ru.ID)]
		out = append(out, tui.RuleStat{ID: string(ru.ID), Name: ru.Name, Line: ru.Pos.Line, Packets: c.Packets, Bytes: c.Bytes, LastHit: r.lastHit[string(ru.ID)]})
	}
	return out
}

// Audit returns the latest audit entries, oldest first; see tui.Monitor.
func (r *Router) Audit() []tui.AuditEntry {
	es, err := r.cfg.Store.AuditLog(1000)
	if err != nil {
		r.raise(fmt.Sprintf("audit log: %v", err))
	}
	out := make([]tui.AuditEntry, 0, len(es))
	for _, e := range es {
		out = append(out, tui.AuditEntry{Time: e.Time, Who: e.Who, Action: e.Action, Detail: e.Detail})
	}
	return out
}

// Ready is closed once Run has put the first policy in force.
func (r *Router) Ready() <-chan struct{} { return r.ready }

// Pending returns the commit waiting for confirmation, if any.
func (r *Router) Pending() (tui.Pending, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		return tui.Pending{}, false
	}
	return *r.pending, true
}

var _ interface {
	tui.Monitor
	tui.Operator
	tui.Recovery
} = (*Router)(nil)
