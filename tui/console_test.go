package tui

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/sluicefw/sluice/dataplane/flows"
)

// consoleClock is the fixed "now" of every test.
var consoleClock = time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)

// consoleFakeMonitor serves a fixed Status.
type consoleFakeMonitor struct{ st Status }

func (m *consoleFakeMonitor) Status() Status      { return m.st }
func (m *consoleFakeMonitor) Flows() []flows.Flow { return nil }
func (m *consoleFakeMonitor) Drops() []Drop       { return nil }
func (m *consoleFakeMonitor) Rules() []RuleStat   { return nil }
func (m *consoleFakeMonitor) Audit() []AuditEntry { return nil }

// consoleFakeRecovery records the actions asked of it, and fails them all
// with err when set.
type consoleFakeRecovery struct {
	mu       sync.Mutex
	versions []Version
	err      error
	calls    []string
	ids      []Identity
}

func (r *consoleFakeRecovery) record(id Identity, call string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call)
	r.ids = append(r.ids, id)
	return r.err
}

func (r *consoleFakeRecovery) Versions() []Version { return r.versions }
func (r *consoleFakeRecovery) Rollback(id Identity, n int) error {
	return r.record(id, fmt.Sprintf("rollback %d", n))
}
func (r *consoleFakeRecovery) ResetDefault(id Identity) error { return r.record(id, "reset-default") }
func (r *consoleFakeRecovery) AddKey(id Identity, line string) error {
	return r.record(id, "add-key "+line)
}
func (r *consoleFakeRecovery) Power(id Identity, p Power) error {
	if p == PowerOff {
		return r.record(id, "power-off")
	}
	return r.record(id, "reboot")
}
func (r *consoleFakeRecovery) FactoryReset(id Identity) error { return r.record(id, "factory-reset") }

func (r *consoleFakeRecovery) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// consoleFixture is a box with a pending commit, a short history, alerts
// and two interfaces.
func consoleFixture() (*consoleFakeMonitor, *consoleFakeRecovery) {
	at := func(d time.Duration) time.Time { return consoleClock.Add(-d) }
	versions := []Version{
		{N: 5, Who: "alice", Why: "first policy", When: at(72 * time.Hour)},
		{N: 6, Who: "bob", Why: "allow dns to 9.9.9.9", When: at(30 * time.Hour)},
		{N: 7, Who: "alice", Why: "open ssh from lan", When: at(3 * time.Hour)},
		{N: 8, Who: "bob", Why: "tighten lan egress", When: at(time.Minute)},
	}
	m := &consoleFakeMonitor{st: Status{
		Hostname: "gw1",
		Engine:   "kernel (nftables)",
		Started:  at(76*time.Hour + 12*time.Minute),
		Policy:   versions[3],
		Pending: &Pending{
			Version:  versions[3],
			Previous: 7,
			Deadline: consoleClock.Add(4*time.Minute + 12*time.Second),
		},
		Interfaces: []Interface{
			{Name: "wan", Device: "eth0", Up: true,
				Addrs:   []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24"), netip.MustParsePrefix("2001:db8::2/64")},
				RxBytes: 1288490189, TxBytes: 356515840},
			{Name: "lan", Device: "eth1", Up: false},
		},
		Alerts: []string{
			"dhcp: no lease on wan after 30s",
			"dns forwarder: upstream 9.9.9.9:53 unreachable (i/o timeout); answering from cache only, which holds 12 names",
		},
	}}
	return m, &consoleFakeRecovery{versions: versions}
}

func consoleNewFixture() (*Console, *consoleFakeRecovery, *[]time.Duration) {
	m, r := consoleFixture()
	var slept []time.Duration
	c := &Console{
		Monitor:  m,
		Recovery: r,
		Now:      func() time.Time { return consoleClock },
		Sleep:    func(_ context.Context, d time.Duration) { slept = append(slept, d) },
	}
	return c, r, &slept
}

// consoleRun runs c on the script's lines and returns what it wrote.
func consoleRun(t *testing.T, c *Console, script ...string) string {
	t.Helper()
	in := strings.NewReader(strings.Join(script, "\n") + "\n")
	var out bytes.Buffer
	if err := c.Run(context.Background(), in, &out); err != nil {
		t.Fatalf("Run: %v", err)
	}
	return out.String()
}

func TestConsoleActions(t *testing.T) {
	recoveryErr := errors.New("rollback v7: write /perm/policy.yaml: no space left on device")
	for _, tc := range []struct {
		name   string
		script []string
		err    error // what every Recovery action returns
		want   []string
		says   []string // in the output
	}{
		{name: "rollback", script: []string{"3", "7", "y"}, want: []string{"rollback 7"},
			says: []string{"* v8 ", "replace v8 with v7? (y/n): ", "rolled back: v7 is in force"}},
		{name: "rollback v-prefixed", script: []string{"3", "v6", "yes"}, want: []string{"rollback 6"}},
		{name: "rollback refused", script: []string{"3", "7", "n"}, says: []string{"cancelled"}},
		{name: "rollback anything but yes", script: []string{"3", "7", "sure"}, says: []string{"cancelled"}},
		{name: "rollback empty", script: []string{"3", ""}, says: []string{"cancelled"}},
		{name: "rollback unknown", script: []string{"3", "42"}, says: []string{"no version 42 in the history"}},
		{name: "rollback to itself", script: []string{"3", "8"}, says: []string{"v8 is already in force"}},
		{name: "rollback fails", script: []string{"3", "7", "y"}, err: recoveryErr, want: []string{"rollback 7"},
			says: []string{"error: rollback v7: write /perm/policy.yaml: no space left on device"}},
		{name: "reset", script: []string{"4", "y"}, want: []string{"reset-default"},
			says: []string{"the built-in default policy is in force"}},
		{name: "reset refused", script: []string{"4", "n"}, says: []string{"cancelled"}},
		{name: "add key", script: []string{"5", "role=viewer ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK carol"},
			want: []string{"add-key role=viewer ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK carol"}, says: []string{"key added"}},
		{name: "add key rejected", script: []string{"5", "ssh-ed25519 nonsense"}, err: errors.New("authorized_keys line 1: illegal base64"),
			want: []string{"add-key ssh-ed25519 nonsense"}, says: []string{"error: authorized_keys line 1: illegal base64"}},
		{name: "add key empty", script: []string{"5", ""}, says: []string{"cancelled"}},
		{name: "reboot", script: []string{"6", "y"}, want: []string{"reboot"}, says: []string{"rebooting"}},
		{name: "reboot refused", script: []string{"6", "n"}, says: []string{"cancelled"}},
		{name: "power off", script: []string{"7", "Y"}, want: []string{"power-off"}, says: []string{"powering off"}},
		{name: "power off refused", script: []string{"7", ""}, says: []string{"cancelled"}},
		{name: "factory reset", script: []string{"8", "factory-reset"}, want: []string{"factory-reset"},
			says: []string{"factory reset done"}},
		{name: "factory reset yes", script: []string{"8", "y"}, says: []string{"cancelled"}},
		{name: "factory reset capitals", script: []string{"8", "FACTORY-RESET"}, says: []string{"cancelled"}},
		{name: "factory reset spelled", script: []string{"8", "factory reset"}, says: []string{"cancelled"}},
		{name: "factory reset more", script: []string{"8", "factory-reset!"}, says: []string{"cancelled"}},
		{name: "factory reset fails", script: []string{"8", "factory-reset"}, err: errors.New("erase /perm: busy"),
			want: []string{"factory-reset"}, says: []string{"error: erase /perm: busy"}},
		{name: "unknown", script: []string{"x"}, says: []string{"unknown choice"}},
		{name: "status", script: []string{"1"},
			says: []string{"engine   kernel (nftables)", "uptime   3d4h12m", "alerts   2, newest first:", "  - dhcp: no lease"}},
		{name: "interfaces", script: []string{"2"},
			says: []string{"wan       eth0      up    1.2 GiB      340.0 MiB", "198.51.100.2/24 2001:db8::2/64", "lan       eth1      down"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, r, _ := consoleNewFixture()
			r.err = tc.err
			out := consoleRun(t, c, tc.script...)
			if diff := cmp.Diff(tc.want, r.got()); diff != "" {
				t.Errorf("Recovery calls (-want +got):\n%s", diff)
			}
			for _, s := range tc.says {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
			// Whatever happened, the menu comes back.
			if got := strings.Count(out, " 1  status and last errors"); got < 2 && tc.name != "unknown" {
				t.Errorf("menu shown %d times, want it back after the action:\n%s", got, out)
			}
			want := Identity{Name: "console", Role: Admin, Console: true}
			for _, id := range r.ids {
				if id != want {
					t.Errorf("action done as %+v, want %+v", id, want)
				}
			}
		})
	}
}

func TestConsoleIdentity(t *testing.T) {
	c, r, _ := consoleNewFixture()
	c.ID = Identity{Name: "console-ttyS0", Role: Admin, Console: true}
	consoleRun(t, c, "6", "y")
	if diff := cmp.Diff([]Identity{c.ID}, r.ids, cmp.Comparer(func(a, b Identity) bool { return a == b })); diff != "" {
		t.Errorf("identities (-want +got):\n%s", diff)
	}
}

func TestConsolePassphrase(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script []string
		tried  []string
		slept  []time.Duration
		menu   bool
	}{
		{name: "right", script: []string{"open sesame"}, tried: []string{"open sesame"}, menu: true},
		{name: "wrong then right", script: []string{"guess", "open sesame"}, tried: []string{"guess", "open sesame"}, menu: true},
		{name: "empty lines are not tries", script: []string{"", "", "", "open sesame"}, tried: []string{"open sesame"}, menu: true},
		{name: "three wrong wait", script: []string{"a", "b", "c", "open sesame"},
			tried: []string{"a", "b", "c", "open sesame"}, slept: []time.Duration{5 * time.Second}, menu: true},
		{name: "each wrong after three waits", script: []string{"a", "b", "c", "d", "e"},
			tried: []string{"a", "b", "c", "d", "e"}, slept: []time.Duration{5 * time.Second, 5 * time.Second, 5 * time.Second}},
		{name: "spaces are part of it", script: []string{" open sesame", "open sesame"}, tried: []string{" open sesame", "open sesame"}, menu: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, r, slept := consoleNewFixture()
			var tried []string
			c.Passphrase = func(p string) bool {
				tried = append(tried, p)
				return p == "open sesame"
			}
			// An open console goes on to reboot.
			script := tc.script
			if tc.menu {
				script = append(script, "6", "y")
			}
			out := consoleRun(t, c, script...)
			if diff := cmp.Diff(tc.tried, tried); diff != "" {
				t.Errorf("passphrases tried (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.slept, *slept); diff != "" {
				t.Errorf("sleeps (-want +got):\n%s", diff)
			}
			gotMenu := strings.Contains(out, " 1  status and last errors")
			if gotMenu != tc.menu {
				t.Errorf("menu shown %v, want %v:\n%s", gotMenu, tc.menu, out)
			}
			var want []string
			if tc.menu {
				want = []string{"reboot"}
			}
			if diff := cmp.Diff(want, r.got()); diff != "" {
				t.Errorf("Recovery calls (-want +got):\n%s", diff)
			}
			if wrong := len(tc.tried) - consoleBtoi(tc.menu); strings.Count(out, "wrong passphrase\n") != wrong {
				t.Errorf("want %d \"wrong passphrase\":\n%s", wrong, out)
			}
		})
	}
}

func consoleBtoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestConsoleEOF(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		gate     bool
	}{
		{name: "empty", in: ""},
		{name: "after a choice", in: "1\n"},
		{name: "line without newline", in: "6\ny"},
		{name: "in a confirmation", in: "8\n"},
		{name: "in the pager", in: "3\n"},
		{name: "at the passphrase", in: "", gate: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, r, _ := consoleNewFixture()
			if tc.gate {
				c.Passphrase = func(string) bool { return false }
			}
			if err := c.Run(context.Background(), strings.NewReader(tc.in), io.Discard); err != nil {
				t.Errorf("Run = %v, want nil at the end of input", err)
			}
			if tc.name == "line without newline" {
				if diff := cmp.Diff([]string{"reboot"}, r.got()); diff != "" {
					t.Errorf("Recovery calls (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestConsoleReadError(t *testing.T) {
	c, _, _ := consoleNewFixture()
	boom := errors.New("input/output error")
	err := c.Run(context.Background(), io.MultiReader(strings.NewReader("1\n"), consoleErrReader{boom}), io.Discard)
	if !errors.Is(err, boom) {
		t.Errorf("Run = %v, want %v", err, boom)
	}
}

type consoleErrReader struct{ err error }

func (r consoleErrReader) Read([]byte) (int, error) { return 0, r.err }

// consolePrompted is a writer that says when a prompt (a write not ending
// in a newline) has been written.
type consolePrompted struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	prompt chan string
}

func (w *consolePrompted) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf.Write(p)
	w.mu.Unlock()
	if !bytes.HasSuffix(p, []byte("\n")) {
		select {
		case w.prompt <- string(p):
		default:
		}
	}
	return len(p), nil
}

func TestConsoleCancel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		gate   bool
		script string // typed at once
		shown  string // cancel once the output ends with this
	}{
		{name: "blocked at the menu", shown: "choice: "},
		{name: "blocked in a confirmation", script: "6\n", shown: "reboot now? (y/n): "},
		{name: "waiting after wrong passphrases", gate: true, script: "a\nb\nc\n", shown: "wait 5s\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, r, _ := consoleNewFixture()
			c.Sleep = nil // the real timer: cancelling must cut the wait short
			if tc.gate {
				c.Passphrase = func(string) bool { return false }
			}
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() { _, _ = io.WriteString(pw, tc.script) }()
			out := &consoleSyncBuffer{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx, pr, out) }()

			for deadline := time.Now().Add(5 * time.Second); !strings.HasSuffix(out.String(), tc.shown); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("output never ended with %q:\n%s", tc.shown, out.String())
				}
			}
			start := time.Now()
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run = %v, want context.Canceled", err)
				}
				if d := time.Since(start); d > time.Second {
					t.Errorf("Run took %v to return after cancel", d)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("Run did not return after cancel while blocked")
			}
			if got := r.got(); len(got) != 0 {
				t.Errorf("Recovery calls %q, want none", got)
			}
		})
	}
}

// consoleSyncBuffer is a bytes.Buffer written by Run and read by the test.
type consoleSyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *consoleSyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *consoleSyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// consoleTerminal plays the operator at a terminal: it hands the console
// the script's next line only once a prompt is written, and records what
// the terminal would show, input echoed, in screens: what is written
// between two reads.
type consoleTerminal struct {
	t       testing.TB
	prompts chan struct{}
	mu      sync.Mutex
	script  []string
	rest    []byte // of a line longer than a Read
	all     strings.Builder
	screen  strings.Builder
	screens []string
	bad     []string // what the console wrote that a dumb terminal cannot take
}

func newConsoleTerminal(t testing.TB, script []string) *consoleTerminal {
	return &consoleTerminal{t: t, script: script, prompts: make(chan struct{}, len(script)+64)}
}

func (x *consoleTerminal) Write(p []byte) (int, error) {
	x.mu.Lock()
	for _, line := range strings.Split(strings.TrimSuffix(string(p), "\n"), "\n") {
		if len(line) > consoleWidth {
			x.bad = append(x.bad, fmt.Sprintf("%d columns: %q", len(line), line))
		}
		for _, b := range []byte(line) {
			if b < ' ' || b > '~' {
				x.bad = append(x.bad, fmt.Sprintf("byte %#x: %q", b, line))
				break
			}
		}
	}
	x.all.Write(p)
	x.screen.Write(p)
	x.mu.Unlock()
	if len(p) > 0 && p[len(p)-1] != '\n' {
		select {
		case x.prompts <- struct{}{}:
		default:
			x.t.Errorf("more prompts than reads")
		}
	}
	return len(p), nil
}

func (x *consoleTerminal) Read(p []byte) (int, error) {
	if len(x.rest) > 0 {
		n := copy(p, x.rest)
		x.rest = x.rest[n:]
		return n, nil
	}
	select {
	case <-x.prompts:
	case <-time.After(5 * time.Second):
		x.t.Errorf("the console reads without a prompt; screen so far:\n%s", x.screen.String())
		return 0, io.EOF
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.screens = append(x.screens, x.screen.String())
	x.screen.Reset()
	if len(x.script) == 0 {
		return 0, io.EOF
	}
	line := x.script[0]
	x.script = x.script[1:]
	// The tty echoes what is typed, except a passphrase.
	if strings.HasSuffix(x.all.String(), "passphrase: ") {
		x.all.WriteString("\n")
	} else {
		x.all.WriteString(consoleASCII(line) + "\n")
	}
	x.rest = []byte(line + "\n")
	n := copy(p, x.rest)
	x.rest = x.rest[n:]
	return n, nil
}

// check says what breaks a dumb 80x24 terminal: a screen taller than 24
// lines, or a written line wider than the console's width or with a byte
// that is not printable ASCII. (Echoed input is the operator's.)
func (x *consoleTerminal) check(t testing.TB) {
	t.Helper()
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, s := range append(x.screens, x.screen.String()) {
		if n := strings.Count(s, "\n") + 1; n > consoleHeight {
			t.Errorf("screen %d has %d lines:\n%s", i, n, s)
		}
	}
	for _, bad := range x.bad {
		t.Errorf("written: %s", bad)
	}
}

func consolePlay(t testing.TB, c *Console, script []string) *consoleTerminal {
	term := newConsoleTerminal(t, script)
	if err := c.Run(context.Background(), term, term); err != nil {
		t.Errorf("Run: %v", err)
	}
	return term
}

func TestConsoleGolden(t *testing.T) {
	c, _, _ := consoleNewFixture()
	c.Passphrase = func(p string) bool { return p == "open sesame" }
	script := []string{
		"", "guess", "open sesame", // the gate
		"1", "", // status, then enter redraws the menu
		"2",           // interfaces
		"3", "7", "n", // a rollback, refused
		"3", "v7", "y", // and done
		"5", "role=viewer ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl carol",
		"4", "n",
		"8", "factory reset",
		"six",
		"r",
		"6", "y",
	}
	term := consolePlay(t, c, script)
	term.check(t)

	got := term.all.String()
	golden := "testdata/console.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to record it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("transcript differs from %s (-want +got):\n%s", golden, diff)
	}
}

// consoleBigFixture has more of everything than a screen holds, and
// names a terminal must not be given raw.
func consoleBigFixture() (*consoleFakeMonitor, *consoleFakeRecovery) {
	m, r := consoleFixture()
	st := &m.st
	st.Hostname = "gw-\x1b[31mred\x1b[0m-" + strings.Repeat("very-long-", 10) + "héllo"
	st.Engine = "userspace\t(" + strings.Repeat("x", 200) + ")"
	st.Policy.Why = strings.Repeat("word ", 60) + strings.Repeat("z", 300)
	for i := range 60 {
		st.Alerts = append(st.Alerts, fmt.Sprintf("alert %d: \x07bell \x1b]0;title\x07 ünïcode %s", i, strings.Repeat("w ", i)))
	}
	for i := range 30 {
		ifc := Interface{Name: fmt.Sprintf("vlan%d-with-a-long-name", i), Device: "eth0." + fmt.Sprint(i), Up: i%2 == 0, RxBytes: 1 << (2 * i), TxBytes: ^uint64(0)}
		for j := range i % 12 {
			ifc.Addrs = append(ifc.Addrs, netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x::%x/64", i, j+1)))
		}
		st.Interfaces = append(st.Interfaces, ifc)
	}
	st.Pending.Deadline = consoleClock.Add(-time.Second)
	r.versions = nil
	for i := range 80 {
		r.versions = append(r.versions, Version{N: i, Who: strings.Repeat("w", i), Why: "why\r\n" + strings.Repeat("y", i), When: consoleClock.Add(-time.Duration(80-i) * time.Hour)})
	}
	st.Policy.N = 79
	r.err = errors.New("refused:\n" + strings.Repeat("\x1b[2J long reason ", 30))
	return m, r
}

func TestConsoleScreens(t *testing.T) {
	more := func(n int) []string { return make([]string, n) } // enter at each "more"
	for _, tc := range []struct {
		name   string
		script []string
	}{
		{name: "status", script: append([]string{"1"}, more(10)...)},
		{name: "status stopped", script: []string{"1", "q", "9"}},
		{name: "interfaces", script: append([]string{"2"}, more(10)...)},
		{name: "history", script: append([]string{"3"}, append(more(3), "3", "y")...)},
		{name: "history stopped", script: []string{"3", "q", "4", "y"}},
		{name: "errors", script: []string{"4", "y", "", "5", strings.Repeat("k", 5000), "", "6", "y", "8", "factory-reset", ""}},
		{name: "unknown", script: []string{"\x1b[A", "10", "ünï", "q"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, r := consoleBigFixture()
			c := &Console{Monitor: m, Recovery: r, Now: func() time.Time { return consoleClock }}
			term := consolePlay(t, c, tc.script)
			term.check(t)
			if t.Failed() {
				t.Logf("transcript:\n%s", term.all.String())
			}
		})
	}
}

func TestConsolePagerStops(t *testing.T) {
	m, r := consoleBigFixture()
	c := &Console{Monitor: m, Recovery: r, Now: func() time.Time { return consoleClock }}
	term := consolePlay(t, c, []string{"1", "q"})
	out := term.all.String()
	if !strings.Contains(out, "more (enter), q to stop: ") {
		t.Fatalf("no pager prompt:\n%s", out)
	}
	if strings.Contains(out, "alert 0:") {
		t.Errorf("q did not stop the listing:\n%s", out)
	}
	if !strings.Contains(out, "alert 59:") {
		t.Errorf("the newest alert is not first:\n%s", out)
	}
}

// TestConsoleEchoOff types a passphrase on a pseudo-terminal: the console
// must not echo it, and must echo again afterwards.
func TestConsoleEchoOff(t *testing.T) {
	master, slave, err := consoleOpenPTY()
	if err != nil {
		t.Skipf("no pseudo-terminal to test echo on: %v", err)
	}
	defer master.Close()
	defer slave.Close()

	var mu sync.Mutex
	var seen bytes.Buffer
	go func() {
		b := make([]byte, 1024)
		for {
			n, err := master.Read(b)
			mu.Lock()
			seen.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	waitFor := func(s string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			mu.Lock()
			ok := strings.Contains(seen.String(), s)
			mu.Unlock()
			if ok {
				return
			}
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("terminal never showed %q:\n%q", s, seen.String())
	}

	c, _, _ := consoleNewFixture()
	c.Passphrase = func(p string) bool { return p == "open sesame" }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, slave, slave) }()

	waitFor("recovery passphrase: ")
	if _, err := master.Write([]byte("open sesame\n")); err != nil {
		t.Fatal(err)
	}
	waitFor("choice: ")
	if _, err := master.Write([]byte("echoed\n")); err != nil {
		t.Fatal(err)
	}
	waitFor("echoed")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(seen.String(), "sesame") {
		t.Errorf("the passphrase was echoed:\n%q", seen.String())
	}
	tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&unix.ECHO == 0 {
		t.Error("echo still off after the passphrase")
	}
}

// consoleOpenPTY opens a new pseudo-terminal pair.
func consoleOpenPTY() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	rc, err := m.SyscallConn()
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	var n int
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr != nil {
			return
		}
		n, ioErr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
	})
	if err == nil {
		err = ioErr
	}
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, s, nil
}

func FuzzConsole(f *testing.F) {
	f.Add([]byte("1\n2\n3\n7\ny\n4\nn\n5\nssh-ed25519 AAAA x\n6\nn\n7\nn\n8\nfactory-reset\nr\n9\n\n"), false)
	f.Add([]byte("3\nq\n3\n\n\n\n\n42\n1\nq\n2\n\x1b[A\n"), false)
	f.Add([]byte("a\nb\nc\nd\nopen\n1\n"), true)
	f.Add([]byte("\r\n\x00\xff\xfe\n8\nfactory-reset\r\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, gate bool) {
		m, r := consoleBigFixture()
		if len(data)%2 == 0 {
			m, r = consoleFixture()
		}
		c := &Console{
			Monitor:  m,
			Recovery: r,
			Now:      func() time.Time { return consoleClock },
			Sleep:    func(context.Context, time.Duration) {},
		}
		if gate {
			c.Passphrase = func(p string) bool { return p == "open" }
		}
		term := consolePlay(t, c, strings.Split(string(data), "\n"))
		term.check(t)
		for _, call := range r.got() {
			if call == "factory-reset" && !bytes.Contains(data, []byte("factory-reset")) {
				t.Errorf("factory reset without the word")
			}
		}
	})
}

// TestConsoleConfirm: with Confirm set and a commit pending, the menu offers
// c, which confirms as the console; without Confirm there is no such line.
func TestConsoleConfirm(t *testing.T) {
	c, _, _ := consoleNewFixture()
	out := consoleRun(t, c, "")
	if strings.Contains(out, "confirm the pending commit") {
		t.Errorf("menu offers confirming without a Confirm func:\n%s", out)
	}
	var got []Identity
	c.Confirm = func(id Identity) error { got = append(got, id); return nil }
	out = consoleRun(t, c, "c")
	if !strings.Contains(out, " c  confirm the pending commit") || !strings.Contains(out, "confirmed v8 by bob") {
		t.Errorf("confirming from the console:\n%s", out)
	}
	if want := []Identity{{Name: "console", Role: Admin, Console: true}}; !cmp.Equal(want, got, cmp.Comparer(func(a, b Identity) bool { return a == b })) {
		t.Errorf("Confirm called with %+v, want %+v", got, want)
	}
	c.Confirm = func(Identity) error { return errors.New("no commit is waiting for confirmation") }
	if out := consoleRun(t, c, "c"); !strings.Contains(out, "error: no commit is waiting") {
		t.Errorf("a failed confirm is not shown:\n%s", out)
	}
}
