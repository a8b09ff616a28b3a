package sshd

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/charmbracelet/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/sluicefw/sluice/tui"
)

// conn is one client connection, followed through authentication. Until a
// key is verified, no deadline set on it reaches past authBy, so a client
// must authenticate within authTimeout of connecting. When it closes
// without a verified key after trying to authenticate, it counts as one
// failed login of its address.
//
// It counts in Server.loggingIn from accept until a key is verified or it
// closes. Its methods may be called concurrently: the handshake, the
// sessions and Server.Close each run on their own goroutine. Its lock is
// never held while it calls into the Server.
type conn struct {
	net.Conn
	srv    *Server
	remote netip.AddrPort // unmapped
	authBy time.Time      // wall clock, for the socket deadline

	mu      sync.Mutex
	user    string                  // the SSH user name the client sent; sluice goes by key
	tried   bool                    // sent at least one authentication request
	refused bool                    // refused for its address's failed logins, which are counted already
	keys    map[string]tui.Identity // authorized keys offered, by wire encoding
	unknown []string                // unknown keys offered, such as "ssh-ed25519 SHA256:..."
	authed  bool                    // a key in keys was verified
	id      tui.Identity            // who, once authed
	closed  bool
	counted bool // in srv.loggingIn: neither authed nor closed yet
}

// connKey is the ssh.Context key of a connection's *conn.
type connKey struct{}

func newConn(nc net.Conn, srv *Server, remote netip.AddrPort, authBy time.Time) *conn {
	c := &conn{Conn: nc, srv: srv, remote: remote, authBy: authBy, counted: srv != nil}
	_ = nc.SetDeadline(authBy) // a failure shows as the first read's error
	return c
}

// connOf returns the connection that accept stored in ctx, or nil.
func connOf(ctx ssh.Context) *conn {
	c, _ := ctx.Value(connKey{}).(*conn)
	return c
}

// attempted records one authentication request, of any method.
func (c *conn) attempted(user string) {
	c.mu.Lock()
	c.tried = true
	c.user = user
	c.mu.Unlock()
}

// offered records a key the client offered and whether it is authorized.
func (c *conn) offered(key gossh.PublicKey, id tui.Identity, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		if c.keys == nil {
			c.keys = make(map[string]tui.Identity)
		}
		c.keys[string(key.Marshal())] = id
		return
	}
	name := key.Type() + " " + gossh.FingerprintSHA256(key)
	for _, u := range c.unknown {
		if u == name {
			return
		}
	}
	if len(c.unknown) < maxAuthTries {
		c.unknown = append(c.unknown, name)
	}
}

// refuse marks the connection as refused for its address's failed logins.
func (c *conn) refuse() {
	c.mu.Lock()
	c.refused = true
	c.mu.Unlock()
}

// verified records that the client proved it holds key, which it offered
// before.
func (c *conn) verified(key gossh.PublicKey) error {
	c.mu.Lock()
	id, ok := c.keys[string(key.Marshal())]
	if !ok {
		c.mu.Unlock()
		return errors.New("verified key was not authorized when offered")
	}
	c.authed, c.id = true, id
	counted := c.counted
	c.counted = false
	c.mu.Unlock()

	if counted {
		c.srv.endLogin()
	}
	return nil
}

// identity returns who logged in on the connection, and false before a key
// is verified.
func (c *conn) identity() (tui.Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id, c.authed
}

func (c *conn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *conn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c *conn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.clamp(t)) }

// clamp returns t, or authBy when t is later (or none) and no key is
// verified yet.
func (c *conn) clamp(t time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.authed || (!t.IsZero() && t.Before(c.authBy)) {
		return t
	}
	return c.authBy
}

// Close closes the connection and, the first time, reports a failed login
// if the client tried to authenticate and never did.
func (c *conn) Close() error {
	c.mu.Lock()
	failed := !c.closed && c.tried && !c.authed && !c.refused
	c.closed = true
	user, unknown := c.user, c.unknown
	counted := c.counted
	c.counted = false
	c.mu.Unlock()

	err := c.Conn.Close()
	if counted {
		c.srv.endLogin()
	}
	if failed {
		c.srv.loginFailed(c.remote, user, unknown)
	}
	return err
}

// addrPort returns a's IP address, unmapped, and port; zero when a is not
// an IP address.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case nil:
		return netip.AddrPort{}
	default:
		ap, _ = netip.ParseAddrPort(a.String()) // zero when not an address
	}
	if !ap.IsValid() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
