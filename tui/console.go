package tui

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Console is the recovery screen on the serial console (ttyS0) and the
// first virtual terminal (tty1): a numbered menu that needs nothing of the
// network, for when SSH is out of reach.
//
// It is line-based so that it works on any terminal, however dumb: it
// writes plain printable ASCII lines, never an escape sequence, none wider
// than 79 columns and at most 24 lines between two reads (longer
// output is paged), and it reads whole lines, leaving echo and line editing
// to the kernel's tty line discipline.
//
// Monitor and Recovery must be set; the other fields may be left zero. Run
// does not modify the Console, so one value may serve several terminals at
// once, one Run each; Monitor and Recovery are then called concurrently.
type Console struct {
	// ID is who the Recovery actions are done as. The zero Identity stands
	// for Identity{Name: "console", Role: Admin, Console: true}.
	ID       Identity
	Monitor  Monitor
	Recovery Recovery
	// Passphrase reports whether a typed passphrase opens the console. Nil
	// opens it without asking: physical access is the credential. An empty
	// line is never tried, so an operator may press enter to wake the line.
	Passphrase func(string) bool
	// Now is the clock for the uptime and the pending commit's time left;
	// nil is time.Now.
	Now func() time.Time
	// Sleep waits d, or less if ctx ends first: the delay after wrong
	// passphrases. Nil uses a timer.
	Sleep func(ctx context.Context, d time.Duration)
	// Confirm keeps the commit waiting for confirmation (Operator.Confirm).
	// Nil leaves confirming to SSH; otherwise the menu offers it while a
	// commit waits.
	Confirm func(id Identity) error
}

const (
	// consoleWidth is the widest line written. A character in the 80th
	// column makes some terminals wrap before the newline comes, which would
	// double every full line.
	consoleWidth = 79
	// consoleHeight is the lines a screen holds, the prompt's included.
	consoleHeight = 24
	// consoleMaxLine is how much of an input line is kept; it is the kernel
	// tty's own limit on a canonical line, and an RSA key fits in it.
	consoleMaxLine = 4096
	// consoleTries is how many wrong passphrases go unpunished; each one
	// after that waits consoleDelay.
	consoleTries = 3
	consoleDelay = 5 * time.Second
	// consoleFactoryWord is what an operator must type to factory-reset.
	consoleFactoryWord = "factory-reset"
)

// Run shows the recovery menu on out and acts on the lines read from in
// until in reaches its end (Run then returns nil) or ctx ends (Run returns
// ctx.Err() at once, even in the middle of a read). Any other error is a
// failed read or write of the terminal.
//
// Run reads in from a goroutine of its own and does not close it: a read
// in progress when Run returns is abandoned, and the goroutine ends when
// that read does. When in is an *os.File on a terminal, echo is off while
// the passphrase is typed.
func (c *Console) Run(ctx context.Context, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines := make(chan consoleInput)
	go consoleRead(in, lines, ctx.Done())

	s := &consoleSession{
		c:   c,
		id:  c.ID,
		now: c.Now,
		t:   &consoleTerm{ctx: ctx, out: out, in: in, lines: lines},
	}
	if s.id == (Identity{}) {
		s.id = Identity{Name: "console", Role: Admin, Console: true}
	}
	if s.now == nil {
		s.now = time.Now
	}
	err := s.run()
	if errors.Is(err, io.EOF) {
		return nil // the operator typed ctrl-D, or the script ran out: the session is over
	}
	return err
}

// consoleInput is one line read from the terminal, or the error that ended
// the reading.
type consoleInput struct {
	line string
	err  error
}

// consoleRead sends the lines of in, without their line ends, then the
// error that ended them (io.EOF at the end), until done is closed.
func consoleRead(in io.Reader, to chan<- consoleInput, done <-chan struct{}) {
	send := func(v consoleInput) bool {
		select {
		case to <- v:
			return true
		case <-done:
			return false
		}
	}
	r := bufio.NewReaderSize(in, consoleMaxLine)
	for {
		line, err := consoleReadLine(r)
		if err == nil || line != "" {
			if !send(consoleInput{line: line}) {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				err = fmt.Errorf("console read: %w", err)
			}
			send(consoleInput{err: err})
			return
		}
	}
}

// consoleReadLine reads up to a newline, keeping the first consoleMaxLine
// bytes and dropping the rest; the line end (\n or \r\n) is cut off.
func consoleReadLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if room := consoleMaxLine - len(b); room > 0 {
			b = append(b, chunk[:min(len(chunk), room)]...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		line := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		return line, err
	}
}

// consoleTerm is the terminal of one Run: it writes sanitised lines,
// counts them to page what would not fit a screen, and reads lines.
// It is used by one goroutine.
type consoleTerm struct {
	ctx   context.Context
	out   io.Writer
	in    io.Reader // for turning echo off, when it is a terminal
	lines <-chan consoleInput
	used  int   // lines written since the last read
	err   error // the first write error, or the error that ended reading
}

func (t *consoleTerm) write(s string) {
	if t.err != nil {
		return
	}
	if _, err := io.WriteString(t.out, s); err != nil {
		t.err = fmt.Errorf("console write: %w", err)
	}
}

// read waits for the next line, as typed.
func (t *consoleTerm) read() (string, error) {
	if t.err != nil {
		return "", t.err
	}
	select {
	case <-t.ctx.Done():
		return "", t.ctx.Err()
	case in := <-t.lines:
		if in.err != nil {
			t.err = in.err
			return "", in.err
		}
		t.used = 0
		return in.line, nil
	}
}

// ask writes a one-line prompt, leaving the cursor after it, and returns
// the answer with the spaces around it trimmed.
func (t *consoleTerm) ask(prompt string) (string, error) {
	t.write(consoleClip(prompt))
	s, err := t.read()
	return strings.TrimSpace(s), err
}

// askSecret is ask with echo off when in is a terminal, and the answer
// as typed.
func (t *consoleTerm) askSecret(prompt string) (string, error) {
	restore := consoleEchoOff(t.in)
	if restore != nil {
		defer restore()
	}
	t.write(consoleClip(prompt))
	return t.read()
}

// page writes lines, each clipped to the width. When only the prompt's
// line is left on the screen it asks for more first; q there drops the
// rest of lines, which is not an error.
func (t *consoleTerm) page(lines ...string) error {
	for _, l := range lines {
		if t.used >= consoleHeight-1 {
			a, err := t.ask("more (enter), q to stop: ")
			if err != nil {
				return err
			}
			if strings.EqualFold(a, "q") {
				return nil // the operator has seen enough
			}
		}
		t.write(consoleClip(l) + "\n")
		t.used++
	}
	return t.err
}

// fit makes room for n lines, the prompt's included, by waiting for enter
// when the screen holds too much already.
func (t *consoleTerm) fit(n int) error {
	if t.used+n <= consoleHeight {
		return nil
	}
	_, err := t.ask("enter for the menu: ")
	return err
}

// consoleEchoOff turns echo off on in when it is a terminal, still
// echoing the newline, and returns what turns it back on; nil when in is
// not a terminal.
func consoleEchoOff(in io.Reader) (restore func()) {
	f, ok := in.(*os.File)
	if !ok {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	var old *unix.Termios
	_ = rc.Control(func(fd uintptr) {
		tio, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		if err != nil {
			return // not a terminal
		}
		quiet := *tio
		quiet.Lflag &^= unix.ECHO
		quiet.Lflag |= unix.ECHONL
		if unix.IoctlSetTermios(int(fd), unix.TCSETS, &quiet) == nil {
			old = tio
		}
	})
	if old == nil {
		return nil
	}
	return func() {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.IoctlSetTermios(int(fd), unix.TCSETS, old)
		})
	}
}

// consoleSession is one Run: the menu and its actions. Actions print what
// Recovery says went wrong and return only the terminal's errors.
type consoleSession struct {
	c   *Console
	t   *consoleTerm
	id  Identity
	now func() time.Time
}

func (s *consoleSession) run() error {
	if s.c.Passphrase != nil {
		if err := s.unlock(); err != nil {
			return err
		}
	}
	draw := true
	for {
		if draw {
			if err := s.menu(); err != nil {
				return err
			}
		}
		choice, err := s.t.ask("choice: ")
		if err != nil {
			return err
		}
		draw = true
		switch strings.ToLower(choice) {
		case "", "9", "r":
		case "1":
			err = s.status()
		case "2":
			err = s.interfaces()
		case "3":
			err = s.rollback()
		case "4":
			err = s.resetDefault()
		case "5":
			err = s.addKey()
		case "6":
			err = s.power(Reboot)
		case "7":
			err = s.power(PowerOff)
		case "8":
			err = s.factoryReset()
		case "c":
			err = s.confirmCommit()
		default:
			draw = false
			err = s.t.page("unknown choice; type 1 to 9")
		}
		if err != nil {
			return err
		}
	}
}

// unlock asks for the passphrase until it is right.
func (s *consoleSession) unlock() error {
	st := s.c.Monitor.Status()
	if err := s.t.page("sluice recovery console - " + consoleHost(st.Hostname)); err != nil {
		return err
	}
	for wrong := 0; ; {
		p, err := s.t.askSecret("recovery passphrase: ")
		if err != nil {
			return err
		}
		if p == "" {
			continue
		}
		if s.c.Passphrase(p) {
			return nil
		}
		wrong++
		if err := s.t.page("wrong passphrase"); err != nil {
			return err
		}
		if wrong >= consoleTries {
			if err := s.t.page(fmt.Sprintf("%d wrong passphrases; wait %s", wrong, consoleDelay)); err != nil {
				return err
			}
			s.sleep(consoleDelay)
			if err := s.t.ctx.Err(); err != nil {
				return err
			}
		}
	}
}

func (s *consoleSession) sleep(d time.Duration) {
	if s.c.Sleep != nil {
		s.c.Sleep(s.t.ctx, d)
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-s.t.ctx.Done():
	}
}

// header is the menu's first lines: the box, the policy in force and the
// commit waiting for confirmation, if any.
func (s *consoleSession) header(st Status) []string {
	h := []string{"sluice recovery console - " + consoleHost(st.Hostname) +
		" - policy " + consoleVersion(st.Policy)}
	if st.Pending != nil {
		h = append(h, "pending: "+s.pending(*st.Pending))
	}
	return h
}

func (s *consoleSession) pending(p Pending) string {
	v := consoleVersion(p.Version)
	left := p.Deadline.Sub(s.now())
	if left <= 0 {
		return fmt.Sprintf("%s, going back to v%d now", v, p.Previous)
	}
	return fmt.Sprintf("%s, back to v%d in %s unless confirmed", v, p.Previous, consoleDuration(left))
}

func (s *consoleSession) menu() error {
	st := s.c.Monitor.Status()
	lines := append(s.header(st),
		"",
		" 1  status and last errors",
		" 2  interfaces",
		" 3  roll back the policy",
		" 4  reset to the built-in default policy",
		" 5  add an SSH key",
		" 6  reboot",
		" 7  power off",
		" 8  factory reset",
		" 9  redraw (also r or enter)",
	)
	if st.Pending != nil && s.c.Confirm != nil {
		lines = append(lines, " c  confirm the pending commit")
	}
	n := len(lines) + 1 // and the prompt
	if s.t.used > 0 && s.t.used+1+n <= consoleHeight {
		lines = append([]string{""}, lines...) // apart from what is shown above
	} else if err := s.t.fit(n); err != nil {
		return err
	}
	return s.t.page(lines...)
}

// status is choice 1: the engine, the policy and the alerts, newest first.
func (s *consoleSession) status() error {
	st := s.c.Monitor.Status()
	uptime := "unknown"
	if !st.Started.IsZero() {
		uptime = consoleDuration(s.now().Sub(st.Started)) + " (since " + consoleTime(st.Started) + ")"
	}
	lines := []string{
		"status of " + consoleHost(st.Hostname),
		"engine   " + st.Engine,
		"uptime   " + uptime,
		"policy   " + consoleVersion(st.Policy) + ", " + consoleTime(st.Policy.When),
	}
	if st.Policy.Why != "" {
		lines = append(lines, consoleWrap("         why: ", st.Policy.Why)...)
	}
	if st.Pending != nil {
		lines = append(lines, "pending  "+s.pending(*st.Pending))
	} else {
		lines = append(lines, "pending  none")
	}
	if len(st.Alerts) == 0 {
		lines = append(lines, "alerts   none")
	} else {
		lines = append(lines, fmt.Sprintf("alerts   %d, newest first:", len(st.Alerts)))
		for i := len(st.Alerts) - 1; i >= 0; i-- {
			lines = append(lines, consoleWrap("  - ", st.Alerts[i])...)
		}
	}
	return s.t.page(lines...)
}

// interfaces is choice 2.
func (s *consoleSession) interfaces() error {
	ifs := s.c.Monitor.Status().Interfaces
	if len(ifs) == 0 {
		return s.t.page("no interfaces")
	}
	const row = "%-9s %-9s %-5s %-12s %s"
	lines := []string{fmt.Sprintf(row, "name", "device", "state", "rx", "tx")}
	for _, ifc := range ifs {
		state := "down"
		if ifc.Up {
			state = "up"
		}
		lines = append(lines, fmt.Sprintf(row, ifc.Name, ifc.Device, state,
			consoleBytes(ifc.RxBytes), consoleBytes(ifc.TxBytes)))
		addrs := make([]string, len(ifc.Addrs))
		for i, a := range ifc.Addrs {
			addrs[i] = a.String()
		}
		if len(addrs) == 0 {
			addrs = []string{"no addresses"}
		}
		lines = append(lines, consoleWrap("          ", strings.Join(addrs, " "))...)
	}
	return s.t.page(lines...)
}

// rollback is choice 3: pick a version of the history, confirm, apply.
func (s *consoleSession) rollback() error {
	vs := s.c.Recovery.Versions()
	if len(vs) == 0 {
		return s.t.page("no policy history to roll back to")
	}
	cur := s.c.Monitor.Status().Policy.N
	lines := []string{"policy history, newest first (* in force)"}
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		mark := " "
		if v.N == cur {
			mark = "*"
		}
		who := v.Who
		if who == "" {
			who = "-"
		}
		lines = append(lines, fmt.Sprintf("%s v%-4d %-20s %-10s %s", mark, v.N, consoleTime(v.When), who, v.Why))
	}
	if err := s.t.page(lines...); err != nil {
		return err
	}
	a, err := s.t.ask("version to roll back to (empty cancels): ")
	if err != nil || a == "" {
		return s.cancelled(err)
	}
	known := false
	n, err := strconv.Atoi(strings.TrimPrefix(strings.ToLower(a), "v"))
	for _, v := range vs {
		known = known || (err == nil && v.N == n)
	}
	switch {
	case !known:
		return s.t.page("no version " + a + " in the history")
	case n == cur:
		return s.t.page(fmt.Sprintf("v%d is already in force", n))
	}
	ok, err := s.confirm(fmt.Sprintf("replace v%d with v%d? (y/n): ", cur, n))
	if err != nil || !ok {
		return s.cancelled(err)
	}
	if err := s.c.Recovery.Rollback(s.id, n); err != nil {
		return s.fail(err)
	}
	return s.t.page(fmt.Sprintf("rolled back: v%d is in force", n))
}

// resetDefault is choice 4.
func (s *consoleSession) resetDefault() error {
	cur := s.c.Monitor.Status().Policy.N
	ok, err := s.confirm(fmt.Sprintf("replace v%d with the built-in default policy? (y/n): ", cur))
	if err != nil || !ok {
		return s.cancelled(err)
	}
	if err := s.c.Recovery.ResetDefault(s.id); err != nil {
		return s.fail(err)
	}
	return s.t.page("the built-in default policy is in force")
}

// confirmCommit is choice c: keep the commit that waits for confirmation.
func (s *consoleSession) confirmCommit() error {
	st := s.c.Monitor.Status()
	if s.c.Confirm == nil || st.Pending == nil {
		return s.t.page("no commit is waiting for confirmation")
	}
	if err := s.c.Confirm(s.id); err != nil {
		return s.fail(err)
	}
	return s.t.page("confirmed " + consoleVersion(st.Pending.Version))
}

// addKey is choice 5.
func (s *consoleSession) addKey() error {
	err := s.t.page(
		"paste one authorized_keys line, such as",
		"  ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... alice@laptop",
		"and prefix it with role=viewer for a key that may only look.",
	)
	if err != nil {
		return err
	}
	line, err := s.t.ask("key (empty cancels): ")
	if err != nil || line == "" {
		return s.cancelled(err)
	}
	if err := s.c.Recovery.AddKey(s.id, line); err != nil {
		return s.fail(err)
	}
	return s.t.page("key added")
}

// power is choices 6 and 7.
func (s *consoleSession) power(p Power) error {
	what, doing := "reboot", "rebooting"
	if p == PowerOff {
		what, doing = "power off", "powering off"
	}
	ok, err := s.confirm(what + " now? (y/n): ")
	if err != nil || !ok {
		return s.cancelled(err)
	}
	if err := s.c.Recovery.Power(s.id, p); err != nil {
		return s.fail(err)
	}
	return s.t.page(doing)
}

// factoryReset is choice 8; only the exact word goes on.
func (s *consoleSession) factoryReset() error {
	err := s.t.page(
		"factory reset erases the policy history, the SSH keys, the audit log",
		"and the host key, then applies the built-in default policy.",
	)
	if err != nil {
		return err
	}
	a, err := s.t.ask("type " + consoleFactoryWord + " to go on, anything else cancels: ")
	if err != nil || a != consoleFactoryWord {
		return s.cancelled(err)
	}
	if err := s.c.Recovery.FactoryReset(s.id); err != nil {
		return s.fail(err)
	}
	return s.t.page("factory reset done; the built-in default policy is in force")
}

// confirm asks a yes/no question; anything but y or yes is no.
func (s *consoleSession) confirm(question string) (bool, error) {
	a, err := s.t.ask(question)
	a = strings.ToLower(a)
	return a == "y" || a == "yes", err
}

// cancelled says so, unless the terminal failed (err).
func (s *consoleSession) cancelled(err error) error {
	if err != nil {
		return err
	}
	return s.t.page("cancelled")
}

// fail shows an error from Recovery.
func (s *consoleSession) fail(err error) error {
	return s.t.page(consoleWrap("error: ", err.Error())...)
}

func consoleHost(name string) string {
	if name == "" {
		return "(no hostname)"
	}
	return name
}

// consoleVersion names a version, such as "v7 by alice".
func consoleVersion(v Version) string {
	if v.Who == "" {
		return "v" + strconv.Itoa(v.N)
	}
	return "v" + strconv.Itoa(v.N) + " by " + v.Who
}

func consoleTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// consoleDuration is d to the second, days counted, such as "3d4h12m" or
// "4m12s".
func consoleDuration(d time.Duration) string {
	d = d.Round(time.Second)
	const day = 24 * time.Hour
	if d < day {
		return d.String()
	}
	return fmt.Sprintf("%dd%dh%dm", d/day, d%day/time.Hour, d%time.Hour/time.Minute)
}

// consoleBytes is n in binary units, such as "1.5 GiB".
func consoleBytes(n uint64) string { return binaryBytes(n, " ") }

// consoleASCII replaces what a dumb terminal cannot show, or would obey,
// with '?', and a tab with a space.
func consoleASCII(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == '\t':
			b.WriteByte(' ')
		case r >= ' ' && r <= '~':
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}

// consoleClip is s made ASCII and cut to the width.
func consoleClip(s string) string {
	s = consoleASCII(s)
	if len(s) > consoleWidth {
		s = s[:consoleWidth-3] + "..."
	}
	return s
}

// consoleWrap breaks text at spaces into lines of the width, the first
// starting with first and the others indented as far; a word longer than
// a line is cut.
func consoleWrap(first, text string) []string {
	indent := strings.Repeat(" ", len(first))
	room := consoleWidth - len(first)
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		w = consoleASCII(w)
		for len(w) > room {
			if line != "" {
				lines = append(lines, line)
				line = ""
			}
			lines = append(lines, w[:room])
			w = w[room:]
		}
		switch {
		case line == "":
			line = w
		case len(line)+1+len(w) <= room:
			line += " " + w
		default:
			lines = append(lines, line)
			line = w
		}
	}
	if line != "" || len(lines) == 0 {
		lines = append(lines, line)
	}
	for i := range lines {
		if i == 0 {
			lines[i] = first + lines[i]
		} else {
			lines[i] = indent + lines[i]
		}
	}
	return lines
}
