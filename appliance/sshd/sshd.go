// Package sshd serves sluice's management over SSH: public-key logins, the
// interactive console on a terminal, and one-shot commands such as
// `ssh box status`.
//
// It exists so that keeping strangers out, limiting how many try and how
// many stay, and auditing each of them are done once, here; the daemon only
// says which keys may log in and what a session runs.
package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/sluicefw/sluice/tui"
)

const (
	// authTimeout bounds a connection from its first byte to a verified
	// key, so that a client that stalls cannot hold a connection open.
	authTimeout = 30 * time.Second
	// idleTimeout closes a connection that neither sent nor received
	// anything for that long. The console redraws itself while open, so
	// only abandoned sessions reach it.
	idleTimeout = 15 * time.Minute
	// maxAuthTries is how many failed authentication requests one
	// connection may make before it is disconnected.
	maxAuthTries = 6
	// maxLoggingIn is how many connections may be authenticating at once,
	// from all addresses together; more are closed at once, so that a
	// flood of handshakes neither exhausts the box nor outlasts the
	// failed-login limit, which counts only finished attempts.
	maxLoggingIn = 32

	defaultMaxSessions = 8
	defaultFailLimit   = 5
	defaultFailWindow  = time.Minute
)

// defaultUsage is what a session with neither a terminal nor a command
// reads when Config.Usage is empty.
const defaultUsage = `usage: ssh -t HOST                 the interactive console
       ssh HOST COMMAND [ARG...]   run one command
`

// Config says who may log in and what a session runs. Authorize is
// required, and so is HostKeyPEM; the other fields have defaults.
//
// The functions are called concurrently, from the goroutines of different
// connections and sessions.
type Config struct {
	// HostKeyPEM is the host's private key, in PEM (such as OpenSSH's
	// "BEGIN OPENSSH PRIVATE KEY"). The caller generates and keeps it, so
	// that clients see the same host key across restarts.
	HostKeyPEM []byte

	// Authorize returns the name and role of an authorized key, and false
	// for any other key. The server fills in Remote and Local.
	//
	// It is asked again for every key a client offers, so removing a key
	// takes effect at the next login.
	Authorize func(key gossh.PublicKey) (tui.Identity, bool)

	// Audit records an event. who is Identity.String() of a session, or
	// the client's address, such as "192.0.2.7:51234", before a key is
	// verified. action is one of "login", "logout", "login-failed" and
	// "refused" (too many failed logins from the address, too many
	// connections logging in at once, too many sessions, or a command line
	// that does not split into words). Nil discards the events.
	Audit func(who, action, detail string)

	// MaxSessions is how many sessions may be open at once; one more is
	// refused with a one-line message and exit status 1. Zero means 8.
	MaxSessions int

	// FailLimit is how many failed logins a client address may have
	// within FailWindow. After that, its connections are closed before
	// the SSH handshake until FailWindow has passed since the last
	// failure counted. Zero means 5, and FailWindow zero one minute.
	//
	// A failed login is a connection that tried to authenticate and
	// closed without a verified key, however many keys it offered. IPv6
	// clients are counted per /64.
	FailLimit  int
	FailWindow time.Duration

	// Now is the clock for the failed-login limit and session durations.
	// Nil means time.Now.
	Now func() time.Time

	// Program returns the model of an interactive session, one with a
	// terminal and no command. r renders for the client's terminal; width
	// and height are its size at login, and the model then receives a
	// tea.WindowSizeMsg at start and on every resize. Nil makes such a
	// session print Usage instead.
	Program func(id tui.Identity, r *lipgloss.Renderer, width, height int) tea.Model

	// Command runs a session's command, such as ["status"] for
	// `ssh box status`, and returns the exit status the client sees. ctx
	// ends when the client disconnects. stdout and stderr may be written
	// concurrently with each other; stdin ends when the client sends EOF.
	// Nil refuses every command with exit status 1.
	Command func(ctx context.Context, id tui.Identity, args []string, stdin io.Reader, stdout, stderr io.Writer) int

	// Usage is printed, with exit status 1, to a session that has neither
	// a terminal nor a command, such as `ssh -T box`. Empty means a short
	// generic text.
	Usage string
}

// Server is sluice's SSH server. Serve and Close may be called from any
// goroutine; a Server serves any number of listeners until Close. No lock
// of its own is held while it calls Config's functions.
type Server struct {
	cfg    Config
	ssh    *ssh.Server
	limits *limiter

	mu           sync.Mutex
	sessions     int  // open sessions
	loggingIn    int  // connections accepted and not yet authenticated or closed
	maxLoggingIn int  // maxLoggingIn, lowered by tests
	busyReported bool // a refusal for loggingIn was audited since it was last below maxLoggingIn
	closed       bool
	listeners    map[net.Listener]struct{}
}

// New checks cfg, fills in its defaults and returns a Server ready to
// Serve.
func New(cfg Config) (*Server, error) {
	if len(cfg.HostKeyPEM) == 0 {
		return nil, errors.New("ssh server: no host key")
	}
	signer, err := gossh.ParsePrivateKey(cfg.HostKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("ssh server: parse host key (%d bytes of PEM): %w", len(cfg.HostKeyPEM), err)
	}
	if cfg.Authorize == nil {
		return nil, errors.New("ssh server: no Authorize function")
	}
	if cfg.MaxSessions < 0 || cfg.FailLimit < 0 || cfg.FailWindow < 0 {
		return nil, fmt.Errorf("ssh server: negative limit (MaxSessions %d, FailLimit %d, FailWindow %s)",
			cfg.MaxSessions, cfg.FailLimit, cfg.FailWindow)
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = defaultMaxSessions
	}
	if cfg.FailLimit == 0 {
		cfg.FailLimit = defaultFailLimit
	}
	if cfg.FailWindow == 0 {
		cfg.FailWindow = defaultFailWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Audit == nil {
		cfg.Audit = func(who, action, detail string) {}
	}
	if cfg.Usage == "" {
		cfg.Usage = defaultUsage
	}

	s := &Server{
		cfg:          cfg,
		limits:       newLimiter(cfg.FailLimit, cfg.FailWindow),
		maxLoggingIn: maxLoggingIn,
		listeners:    make(map[net.Listener]struct{}),
	}
	s.ssh = &ssh.Server{
		Version:              "sluice",
		HostSigners:          []ssh.Signer{signer},
		Handler:              s.handle,
		PublicKeyHandler:     s.publicKey,
		ConnCallback:         s.accept,
		ServerConfigCallback: s.serverConfig,
		IdleTimeout:          idleTimeout,
		// Sessions only: no port forwarding, no subsystems (sftp), and
		// nothing registered in the library's package-level defaults.
		ChannelHandlers:   map[string]ssh.ChannelHandler{"session": ssh.DefaultSessionHandler},
		RequestHandlers:   map[string]ssh.RequestHandler{},
		SubsystemHandlers: map[string]ssh.SubsystemHandler{},
	}
	return s, nil
}

// Serve accepts connections on ln until Close, and then returns nil. It
// closes ln when it returns.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return fmt.Errorf("ssh serve %s: server closed", ln.Addr())
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()

	err := s.ssh.Serve(ln)

	s.mu.Lock()
	delete(s.listeners, ln)
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil // stopped by Close, as documented
	}
	return fmt.Errorf("ssh serve %s: %w", ln.Addr(), err)
}

// Close stops every Serve and closes every connection. Sessions see their
// context end; Close does not wait for them to return.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var first error
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && first == nil && !errors.Is(err, net.ErrClosed) {
			first = fmt.Errorf("ssh close listener %s: %w", ln.Addr(), err)
		}
	}
	s.mu.Unlock()
	if err := s.ssh.Close(); err != nil && first == nil && !errors.Is(err, net.ErrClosed) {
		first = fmt.Errorf("ssh close: %w", err)
	}
	return first
}

// accept runs first for every TCP connection: it refuses an address with
// too many failed logins, and any connection while too many others are
// logging in; otherwise it wraps the connection to follow its
// authentication.
func (s *Server) accept(ctx ssh.Context, nc net.Conn) net.Conn {
	remote := addrPort(nc.RemoteAddr())
	if refused, report := s.limits.refused(remote.Addr(), s.cfg.Now()); refused {
		if report {
			s.auditRefusedAddr(remote)
		}
		return nil // the library closes nc
	}
	if ok, report := s.startLogin(); !ok {
		if report {
			s.cfg.Audit(remote.String(), "refused",
				fmt.Sprintf("%d connections are logging in already; new ones are closed until fewer are", s.maxLoggingIn))
		}
		return nil // the library closes nc
	}
	c := newConn(nc, s, remote, time.Now().Add(authTimeout))
	ctx.SetValue(connKey{}, c)
	return c
}

// serverConfig adds to the library's per-connection configuration what it
// does not expose: the authentication log and the moment a key is verified.
func (s *Server) serverConfig(ctx ssh.Context) *gossh.ServerConfig {
	c := connOf(ctx)
	return &gossh.ServerConfig{
		MaxAuthTries: maxAuthTries,
		AuthLogCallback: func(md gossh.ConnMetadata, method string, err error) {
			if c != nil {
				c.attempted(md.User())
			}
		},
		VerifiedPublicKeyCallback: func(md gossh.ConnMetadata, key gossh.PublicKey, perms *gossh.Permissions, algo string) (*gossh.Permissions, error) {
			if c == nil {
				return nil, errors.New("connection not accepted by sluice")
			}
			if err := c.verified(key); err != nil {
				return nil, err
			}
			return perms, nil
		},
	}
}

// publicKey says whether a key the client offers may log in. The client has
// not yet proven it holds the key: serverConfig's VerifiedPublicKeyCallback
// learns when it has.
func (s *Server) publicKey(ctx ssh.Context, key ssh.PublicKey) bool {
	c := connOf(ctx)
	if c == nil {
		return false
	}
	// Another connection from the same address may have used up the limit
	// since this one was accepted.
	if refused, report := s.limits.refused(c.remote.Addr(), s.cfg.Now()); refused {
		c.refuse()
		if report {
			s.auditRefusedAddr(c.remote)
		}
		return false
	}
	id, ok := s.cfg.Authorize(key)
	c.offered(key, id, ok)
	return ok
}

// loginFailed counts and audits a connection that closed without a
// verified key.
func (s *Server) loginFailed(remote netip.AddrPort, user string, keys []string) {
	detail := "no public key offered"
	if len(keys) > 0 {
		detail = "unknown key " + strings.Join(keys, ", unknown key ")
	}
	if user != "" {
		detail += fmt.Sprintf(", user %q", user)
	}
	if s.limits.fail(remote.Addr(), s.cfg.Now()) {
		detail += fmt.Sprintf("; %d failed logins within %s, refusing the address for %s",
			s.cfg.FailLimit, s.cfg.FailWindow, s.cfg.FailWindow)
	}
	s.cfg.Audit(remote.String(), "login-failed", detail)
}

func (s *Server) auditRefusedAddr(remote netip.AddrPort) {
	s.cfg.Audit(remote.String(), "refused",
		fmt.Sprintf("%d failed logins within %s; connections from the address are refused for %s",
			s.cfg.FailLimit, s.cfg.FailWindow, s.cfg.FailWindow))
}

// startLogin counts a connection that starts logging in, unless too many
// are; report is true for the first refusal since there were fewer.
func (s *Server) startLogin() (ok, report bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loggingIn >= s.maxLoggingIn {
		report = !s.busyReported
		s.busyReported = true
		return false, report
	}
	s.loggingIn++
	return true, false
}

// endLogin counts a connection that authenticated or closed.
func (s *Server) endLogin() {
	s.mu.Lock()
	s.loggingIn--
	if s.loggingIn < s.maxLoggingIn {
		s.busyReported = false
	}
	s.mu.Unlock()
}

// openSession counts a new session unless MaxSessions are open already.
func (s *Server) openSession() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions >= s.cfg.MaxSessions {
		return false
	}
	s.sessions++
	return true
}

func (s *Server) closeSession() {
	s.mu.Lock()
	s.sessions--
	s.mu.Unlock()
}
