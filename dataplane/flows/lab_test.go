package flows

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/internal/lab"
	"github.com/sluicefw/sluice/internal/labtest"
)

// router is a lab whose router runs a policy.
type router struct{ *labtest.Lab }

// labRouter brings up a lab with the lab policy applied on its router.
func labRouter(t *testing.T) *router { return &router{labtest.New(t)} }

// apply puts prog's ruleset on the router.
func (r *router) apply(t *testing.T, prog *policy.Program) { r.Apply(t, prog) }

// sysctl runs sysctl with args in namespace ns and returns its output.
func (r *router) sysctl(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := r.Command(ns, append([]string{"sysctl"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("sysctl %s in %s: %v: %s", strings.Join(args, " "), ns, err, out)
	}
	return strings.TrimSpace(string(out))
}

// dialFlows connects to the router's conntrack table.
func (r *router) dialFlows(t *testing.T) *Conn {
	t.Helper()
	c, err := Dial(r.NSFd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echoServer listens on addr in namespace ns until the test ends; it
// greets each connection with one byte, then echoes what it reads.
func echoServer(t *testing.T, ns, addr string) {
	t.Helper()
	ln, err := lab.Listen(ns, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				if _, err := c.Write([]byte("h")); err == nil {
					_, _ = io.Copy(c, c) // ends when the test closes c
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
}

// dial connects from namespace ns to addr, waits for the greeting (so the
// handshake has crossed the router) and keeps the connection open until the
// test ends. It returns the connection and its original tuple.
func dial(t *testing.T, ns, addr string) (net.Conn, netip.AddrPort, netip.AddrPort) {
	t.Helper()
	var c net.Conn
	if err := lab.Do(ns, func() (err error) {
		c, err = (&net.Dialer{Timeout: 3 * time.Second}).Dial("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	greeting := make([]byte, 1)
	if _, err := io.ReadFull(c, greeting); err != nil {
		t.Fatalf("greeting from %s: %v", addr, err)
	}
	c.SetReadDeadline(time.Time{})
	src := c.LocalAddr().(*net.TCPAddr).AddrPort()
	dst := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	return c, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
}

// echoes reports whether c still carries data both ways within d.
func echoes(c net.Conn, d time.Duration) bool {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("ping")); err != nil {
		return false
	}
	buf := make([]byte, 4)
	_, err := io.ReadFull(c, buf)
	return err == nil && string(buf) == "ping"
}

func find(flows []Flow, src, dst netip.AddrPort) (Flow, bool) {
	for _, f := range flows {
		if f.Src == src && f.Dst == dst {
			return f, true
		}
	}
	return Flow{}, false
}

// seen is what the kernel test checks of a listed flow: its tuples and
// status, without the masquerade's choice of port.
type seen struct {
	Proto              uint8
	Src, Dst, ReplySrc netip.AddrPort
	ReplyDst           netip.Addr
	State              string
	SeenReply, SrcNAT  bool
}

func seenOf(f Flow) seen {
	return seen{f.Proto, f.Src, f.Dst, f.ReplySrc, f.ReplyDst.Addr(), f.State, f.SeenReply, f.SrcNAT}
}

// TestLabListRevoke opens real connections from lan1 through the lab
// router, lists them with their masqueraded reply tuples and counters,
// then applies a policy without plain-HTTP egress and revokes: the port-80
// flows are deleted and their connections go dead, the port-443 flow stays
// and still carries data.
func TestLabListRevoke(t *testing.T) {
	r := labRouter(t)
	// Counters only count for flows created while accounting is on.
	r.sysctl(t, r.Router, "-qw", "net.netfilter.nf_conntrack_acct=1")
	echoServer(t, r.Internet, "93.184.216.34:80")
	echoServer(t, r.Internet, "93.184.216.34:443")
	echoServer(t, r.Internet, "[2606:4700::1]:80")
	c80, src80, dst80 := dial(t, r.LAN1, "93.184.216.34:80")
	c443, src443, dst443 := dial(t, r.LAN1, "93.184.216.34:443")
	_, src6, dst6 := dial(t, r.LAN1, "[2606:4700::1]:80")
	conn := r.dialFlows(t)

	listed, err := conn.List()
	if err != nil {
		t.Fatal(err)
	}
	box := netip.MustParseAddr(lab.RouterWAN4)
	tests := []struct {
		name     string
		src, dst netip.AddrPort
		want     seen
	}{
		{"v4 port 80, masqueraded", src80, dst80, seen{policy.ProtoTCP, src80, dst80, dst80, box, "ESTABLISHED", true, true}},
		{"v4 port 443, masqueraded", src443, dst443, seen{policy.ProtoTCP, src443, dst443, dst443, box, "ESTABLISHED", true, true}},
		{"v6 port 80, not translated", src6, dst6, seen{policy.ProtoTCP, src6, dst6, dst6, src6.Addr(), "ESTABLISHED", true, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, ok := find(listed, tc.src, tc.dst)
			if !ok {
				t.Fatalf("no flow %s -> %s among %d listed: %v", tc.src, tc.dst, len(listed), listed)
			}
			if diff := cmp.Diff(tc.want, seenOf(f), equateAddrs); diff != "" {
				t.Errorf("flow %s (-want +got):\n%s", f, diff)
			}
			if f.ReplyDst.Port() == 0 || f.Timeout <= 0 || f.ID == 0 {
				t.Errorf("flow %s: reply port %d, timeout %v, id %d; want all non-zero", f, f.ReplyDst.Port(), f.Timeout, f.ID)
			}
			if f.Packets[0] < 2 || f.Packets[1] < 2 || f.Bytes[0] == 0 || f.Bytes[1] == 0 {
				t.Errorf("flow %s: packets %v bytes %v, want both directions counted (nf_conntrack_acct=1)", f, f.Packets, f.Bytes)
			}
		})
	}

	prog443 := compile(t, "lab-443.yaml", webOnly443(t))
	r.apply(t, prog443)
	revoked, err := Revoke(conn, prog443, policy.Options{})
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	var got []string
	for _, f := range revoked {
		got = append(got, f.Src.String()+" -> "+f.Dst.String())
	}
	slices.Sort(got)
	want := []string{src80.String() + " -> " + dst80.String(), src6.String() + " -> " + dst6.String()}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Revoke deleted (-want +got):\n%s", diff)
	}

	after, err := conn.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range [][2]netip.AddrPort{{src80, dst80}, {src6, dst6}} {
		if f, ok := find(after, gone[0], gone[1]); ok {
			t.Errorf("revoked flow still listed: %s", f)
		}
	}
	if _, ok := find(after, src443, dst443); !ok {
		t.Errorf("the port-443 flow %s -> %s is gone; listed: %v", src443, dst443, after)
	}
	if !echoes(c443, 3*time.Second) {
		t.Errorf("the port-443 connection no longer carries data")
	}
	// The next packet of a revoked connection is a new flow without SYN.
	if echoes(c80, time.Second) {
		t.Errorf("the revoked port-80 connection still carries data")
	}
	if again, err := Revoke(conn, prog443, policy.Options{}); err != nil || len(again) != 0 {
		t.Errorf("second Revoke = %v, %v; want nothing to delete", again, err)
	}
}

// TestLabFollowDelete follows the router's table while lan1 opens a
// connection (a new event for its tuple), deletes that flow (a destroy
// event; gone from the list; a second delete is fs.ErrNotExist), and ends
// when its context does.
func TestLabFollowDelete(t *testing.T) {
	r := labRouter(t)
	events2 := r.sysctl(t, r.Router, "-n", "net.netfilter.nf_conntrack_events") == "2"
	echoServer(t, r.Internet, "93.184.216.34:443")
	// A flow made before anyone follows the table.
	_, earlySrc, earlyDst := dial(t, r.LAN1, "93.184.216.34:443")
	conn := r.dialFlows(t)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	events := make(chan Event, 1024) // the test reads them all; Dropped stays 0
	done := make(chan error, 1)
	go func() { done <- conn.Follow(ctx, events) }()

	// wait returns the first event of type typ for src -> dst within d.
	wait := func(typ EventType, src, dst netip.AddrPort, d time.Duration) (Event, bool) {
		timer := time.NewTimer(d)
		defer timer.Stop()
		for {
			select {
			case ev := <-events:
				if ev.Type == typ && ev.Flow.Src == src && ev.Flow.Dst == dst {
					return ev, true
				}
			case <-timer.C:
				return Event{}, false
			}
		}
	}

	// Follow subscribes in the background; until it has, a connection
	// yields no event. Connect until one does.
	var created Event
	var src, dst netip.AddrPort
	for attempt := 1; ; attempt++ {
		var ok bool
		_, src, dst = dial(t, r.LAN1, "93.184.216.34:443")
		if created, ok = wait(EventNew, src, dst, 500*time.Millisecond); ok {
			t.Logf("new event on connection %d: %s", attempt, created.Flow)
			break
		}
		if attempt == 10 {
			t.Fatalf("no new event for any of %d connections", attempt)
		}
	}
	if created.Flow.Proto != policy.ProtoTCP || created.Flow.ReplyDst.Addr() != netip.MustParseAddr(lab.RouterWAN4) {
		t.Errorf("new event's flow = %+v, want tcp masqueraded to %s", created.Flow, lab.RouterWAN4)
	}

	listed, err := conn.List()
	if err != nil {
		t.Fatal(err)
	}
	f, ok := find(listed, src, dst)
	if !ok {
		t.Fatalf("no flow %s -> %s listed", src, dst)
	}
	if err := conn.Delete(f); err != nil {
		t.Fatalf("Delete(%s): %v", f, err)
	}
	if ev, ok := wait(EventDestroy, src, dst, 3*time.Second); !ok {
		t.Errorf("no destroy event for %s within 3s", f)
	} else if ev.Flow.ID != f.ID {
		t.Errorf("destroy event for flow id %d, want %d", ev.Flow.ID, f.ID)
	}
	listed, err = conn.List()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := find(listed, src, dst); ok {
		t.Errorf("deleted flow %s still listed", f)
	}
	if err := conn.Delete(f); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second Delete(%s) = %v, want fs.ErrNotExist", f, err)
	}

	// At nf_conntrack_events=2 (the default) the kernel reports only flows
	// created while someone listened, as Follow documents: deleting the
	// early flow is silent.
	early, ok := find(listed, earlySrc, earlyDst)
	if !ok {
		t.Fatalf("no early flow %s -> %s listed", earlySrc, earlyDst)
	}
	if err := conn.Delete(early); err != nil {
		t.Fatalf("Delete(%s): %v", early, err)
	}
	ev, ok := wait(EventDestroy, earlySrc, earlyDst, 500*time.Millisecond)
	switch {
	case ok && events2:
		t.Errorf("nf_conntrack_events=2, yet a destroy event for a flow made before Follow started: %+v", ev)
	case !ok && !events2:
		t.Errorf("nf_conntrack_events is not 2, yet no destroy event for the early flow %s", early)
	}

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Follow returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not return within 5s of its context ending")
	}
}
