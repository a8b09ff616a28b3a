package sshd

import (
	"crypto/ed25519"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/muesli/termenv"
	gossh "golang.org/x/crypto/ssh"

	"github.com/sluicefw/sluice/tui"
)

func TestColorProfile(t *testing.T) {
	for _, tc := range []struct {
		name string
		term string
		env  []string
		want termenv.Profile
	}{
		{"no terminal name", "", nil, termenv.Ascii},
		{"dumb", "dumb", nil, termenv.Ascii},
		{"xterm", "xterm", nil, termenv.ANSI},
		{"256 colours", "xterm-256color", nil, termenv.ANSI256},
		{"COLORTERM truecolor", "xterm-256color", []string{"COLORTERM=truecolor"}, termenv.TrueColor},
		{"direct colour", "xterm-direct", nil, termenv.TrueColor},
		{"NO_COLOR", "xterm-256color", []string{"LANG=C", "NO_COLOR=1"}, termenv.Ascii},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := colorProfile(tc.term, tc.env); got != tc.want {
				t.Errorf("colorProfile(%q, %q) = %v, want %v", tc.term, tc.env, got, tc.want)
			}
		})
	}
}

// TestRendererIgnoresDaemonEnv checks that the daemon's own terminal
// settings never reach a session's renderer.
func TestRendererIgnoresDaemonEnv(t *testing.T) {
	t.Setenv("TERM", "xterm-256color")
	t.Setenv("COLORTERM", "truecolor")
	r := newRenderer(nil, "vt100", nil)
	if got, want := r.ColorProfile(), termenv.ANSI; got != want {
		t.Errorf("ColorProfile() = %v, want %v", got, want)
	}
	if !r.HasDarkBackground() {
		t.Error("HasDarkBackground() = false, want the dark default")
	}
}

// deadlineConn records the deadlines set on it.
type deadlineConn struct {
	net.Conn
	got []time.Time
}

func (d *deadlineConn) SetDeadline(t time.Time) error {
	d.got = append(d.got, t)
	return nil
}

func TestAuthDeadline(t *testing.T) {
	authBy := time.Date(2026, 1, 2, 3, 4, 35, 0, time.UTC)
	before := authBy.Add(-time.Second)
	after := authBy.Add(time.Hour)
	nc := &deadlineConn{}
	c := newConn(nc, nil, netip.AddrPort{}, authBy)
	c.SetDeadline(before)
	c.SetDeadline(after)
	c.SetDeadline(time.Time{})
	key, err := gossh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.verified(key); err == nil {
		t.Error("verified a key never offered")
	}
	c.offered(key, tui.Identity{Name: "alice"}, true)
	if err := c.verified(key); err != nil {
		t.Fatal(err)
	}
	if id, ok := c.identity(); !ok || id.Name != "alice" {
		t.Errorf("identity() = %+v, %v; want alice, true", id, ok)
	}
	c.SetDeadline(after)
	c.SetDeadline(time.Time{})
	want := []time.Time{authBy, before, authBy, authBy, after, {}}
	if len(nc.got) != len(want) {
		t.Fatalf("deadlines %v, want %v", nc.got, want)
	}
	for i := range want {
		if !nc.got[i].Equal(want[i]) {
			t.Errorf("deadline %d: %v, want %v", i, nc.got[i], want[i])
		}
	}
}
