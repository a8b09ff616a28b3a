package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/anmitsu/go-shlex"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/ssh"
	"github.com/muesli/termenv"

	"github.com/sluicefw/sluice/tui"
)

// handle runs one session: a command when the client gave one, with or
// without a terminal; the interactive console when it asked for a terminal
// and gave no command; the usage otherwise.
func (s *Server) handle(sess ssh.Session) {
	c := connOf(sess.Context())
	if c == nil {
		fmt.Fprintln(sess.Stderr(), "sluice: connection not accepted")
		_ = sess.Exit(1)
		return
	}
	id, ok := c.identity()
	if !ok {
		fmt.Fprintln(sess.Stderr(), "sluice: not logged in")
		_ = sess.Exit(1)
		return
	}
	id.Remote = addrPort(sess.RemoteAddr())
	id.Local = addrPort(sess.LocalAddr())

	if !s.openSession() {
		fmt.Fprintf(sess.Stderr(), "sluice: too many sessions (%d open); try again later\n", s.cfg.MaxSessions)
		s.cfg.Audit(id.String(), "refused", fmt.Sprintf("session limit: %d sessions open", s.cfg.MaxSessions))
		_ = sess.Exit(1)
		return
	}

	pty, winch, isPty := sess.Pty()
	args, err := shlex.Split(sess.RawCommand(), true)
	if err != nil {
		// As a shell would, run nothing of a command it cannot split.
		s.closeSession()
		fmt.Fprintf(sess.Stderr(), "sluice: command %q: %v\n", sess.RawCommand(), err)
		s.cfg.Audit(id.String(), "refused", fmt.Sprintf("command %q: %v", sess.RawCommand(), err))
		_ = sess.Exit(1)
		return
	}
	what := describe(args, pty, isPty, s.cfg.Program != nil)
	start := s.cfg.Now()
	s.cfg.Audit(id.String(), "login", what)

	code, crash := s.run(sess, id, args, pty, winch, isPty)
	if crash != nil {
		fmt.Fprintln(sess.Stderr(), "sluice: internal error")
		what += fmt.Sprintf(" (%v)", crash)
	}

	// The session no longer counts once its client could open another.
	s.closeSession()
	s.cfg.Audit(id.String(), "logout", fmt.Sprintf("%s, exit %d after %s", what, code, s.cfg.Now().Sub(start).Round(time.Second)))
	_ = sess.Exit(code)
}

// run runs what the session asked for and returns its exit status. A
// panic in the daemon's Command or Program ends the session with status 1
// and is returned as crash, instead of ending the daemon that routes.
func (s *Server) run(sess ssh.Session, id tui.Identity, args []string, pty ssh.Pty, winch <-chan ssh.Window, isPty bool) (code int, crash error) {
	defer func() {
		if r := recover(); r != nil {
			code, crash = 1, fmt.Errorf("panic: %v", r)
		}
	}()
	switch {
	case len(args) > 0:
		if isPty {
			go drain(winch) // the command has no use for resizes
		}
		return s.runCommand(sess, id, args), nil
	case isPty && s.cfg.Program != nil:
		return s.runProgram(sess, id, pty, winch)
	default:
		if isPty {
			go drain(winch)
		}
		io.WriteString(sess.Stderr(), s.cfg.Usage)
		return 1, nil
	}
}

// describe names what a session runs, for the audit log.
func describe(args []string, pty ssh.Pty, isPty, program bool) string {
	switch {
	case len(args) > 0:
		return fmt.Sprintf("command %q", strings.Join(args, " "))
	case isPty && program:
		return fmt.Sprintf("TUI on a %dx%d %s terminal", pty.Window.Width, pty.Window.Height, pty.Term)
	default:
		return "usage"
	}
}

// runCommand runs the session's command and returns its exit status.
func (s *Server) runCommand(sess ssh.Session, id tui.Identity, args []string) int {
	if s.cfg.Command == nil {
		fmt.Fprintln(sess.Stderr(), "sluice: no commands on this server")
		return 1
	}
	ctx, cancel := context.WithCancel(sess.Context())
	defer cancel()
	return s.cfg.Command(ctx, id, args, sess, sess, sess.Stderr())
}

// runProgram runs the console's model until it quits, the client sends EOF
// or disconnects, and returns the exit status. A panic in the model, which
// the program recovers from, is returned as crash.
func (s *Server) runProgram(sess ssh.Session, id tui.Identity, pty ssh.Pty, winch <-chan ssh.Window) (code int, crash error) {
	env := sess.Environ()
	r := newRenderer(sess, pty.Term, env)
	m := s.cfg.Program(id, r, pty.Window.Width, pty.Window.Height)

	ctx, cancel := context.WithCancel(sess.Context())
	defer cancel()

	var p *tea.Program
	in := &eofReader{r: sess, eof: func() { p.Quit() }}
	p = tea.NewProgram(m,
		tea.WithInput(in),
		tea.WithOutput(sess),
		tea.WithContext(ctx),
		tea.WithEnvironment(env),
		tea.WithoutSignalHandler(), // the daemon's signals are not the session's
	)

	// The first window is the one at login; the library queues it, so the
	// model receives a WindowSizeMsg at start as on a local terminal.
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case w, ok := <-winch:
				if !ok {
					p.Quit() // the client closed the session
					return
				}
				p.Send(tea.WindowSizeMsg{Width: w.Width, Height: w.Height})
			}
		}
	}()

	_, err := p.Run()
	switch {
	case err == nil:
		return 0, nil
	case errors.Is(err, tea.ErrProgramPanic):
		return 1, err
	case errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil:
		return 0, nil // the client went away; nobody reads the status
	default:
		fmt.Fprintf(sess.Stderr(), "sluice: console: %v\n", err)
		return 1, nil
	}
}

// eofReader calls eof once its reader ends, so that a console whose client
// can send no more keys stops instead of waiting for them.
type eofReader struct {
	r   io.Reader
	eof func()
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if errors.Is(err, io.EOF) && e.eof != nil {
		e.eof()
		e.eof = nil
	}
	return n, err
}

// drain discards window changes until the session ends, so that a client
// resizing its terminal never blocks the session's requests.
func drain(winch <-chan ssh.Window) {
	for range winch {
	}
}

// newRenderer returns a renderer for the client's terminal. The colour
// profile comes from the client's TERM and COLORTERM, never from the
// daemon's environment, and the background is taken to be dark rather
// than asked of the terminal, whose answer would arrive mixed with keys.
func newRenderer(w io.Writer, term string, env []string) *lipgloss.Renderer {
	p := colorProfile(term, env)
	r := lipgloss.NewRenderer(w, termenv.WithProfile(p))
	r.SetColorProfile(p)
	r.SetHasDarkBackground(true)
	return r
}

// colorProfile is the colour profile of a terminal named term with the
// environment env (as "KEY=value").
func colorProfile(term string, env []string) termenv.Profile {
	get := func(key string) (string, bool) {
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, key+"="); ok {
				return v, true
			}
		}
		return "", false
	}
	if _, ok := get("NO_COLOR"); ok {
		return termenv.Ascii
	}
	colorterm, _ := get("COLORTERM")
	switch {
	case term == "" || term == "dumb":
		return termenv.Ascii
	case colorterm == "truecolor" || colorterm == "24bit",
		strings.HasSuffix(term, "-direct"), strings.Contains(term, "truecolor"):
		return termenv.TrueColor
	case strings.Contains(term, "256color"):
		return termenv.ANSI256
	default:
		return termenv.ANSI
	}
}
