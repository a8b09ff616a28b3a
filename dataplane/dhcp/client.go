// Package dhcp keeps a DHCPv4 lease on the uplink: it acquires an address
// and a default route from the provider's server, renews them, and removes
// them when the lease is lost.
//
// An uplink whose policy says `addresses: [dhcp]` gets its IPv4 address
// here. The firewall learns the address from the interface (see
// netconf.Learned), so this package only talks to the server and the
// kernel: it installs the lease with the kernel's own lifetimes, so that an
// address nobody renews goes away even if sluice does not run.
package dhcp

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// Client keeps a lease on one device. Set the fields, then call Run once;
// the fields must not change while Run runs. Drops may be called at any
// time, from any goroutine. A Client must not be copied after first use.
type Client struct {
	Device   string                           // e.g. "eth0"
	Hostname string                           // sent as option 12 when set
	Logf     func(format string, args ...any) // nil: silent
	Now      func() time.Time                 // nil: time.Now

	// Retransmit is how long the client first waits for a reply before
	// sending again; each retry doubles the wait, up to 16 times it, and
	// every wait varies by a quarter of it either way (RFC 2131 4.1: 4 s,
	// 8 s, ... 64 s, ±1 s). Zero: 4 s.
	Retransmit time.Duration

	// Rand gives transaction IDs and the jitter of retransmissions.
	// nil: crypto/rand.
	Rand io.Reader

	drops [numVerdicts]atomic.Uint64
}

// Drops returns how many server messages the client has ignored as
// malformed or not its own, by reason.
func (c *Client) Drops() map[string]uint64 {
	m := map[string]uint64{}
	for v := accepted + 1; v < numVerdicts; v++ {
		if n := c.drops[v].Load(); n > 0 {
			m[v.String()] = n
		}
	}
	return m
}

func (c *Client) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf("dhcp %s: "+format, append([]any{c.Device}, args...)...)
	}
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) retransmit() time.Duration {
	if c.Retransmit > 0 {
		return c.Retransmit
	}
	return 4 * time.Second
}

// random returns 8 random bytes as a number.
func (c *Client) random() uint64 {
	r := c.Rand
	if r == nil {
		r = rand.Reader
	}
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return uint64(c.now().UnixNano()) // an exhausted test source: still varies
	}
	return binary.BigEndian.Uint64(b[:])
}

// backoff is the wait after the try-th transmission (from 0): the base
// doubled per try up to 16 times it, with jitter of a quarter of the base.
func (c *Client) backoff(try int) time.Duration {
	base := c.retransmit()
	d := base << min(try, 4)
	q := base / 4
	if q > 0 {
		d += time.Duration(c.random()%uint64(2*q+1)) - q
	}
	return d
}

// Well-known ports and the limited broadcast address.
const (
	serverPort = 67
	clientPort = 68
)

var broadcastDst = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), serverPort)

// lease is an acknowledged lease and when it started: when the REQUEST
// that got it was first sent, so that the client never holds an address
// longer than the server lent it.
type lease struct {
	reply
	start time.Time
}

func (l lease) renewAt() time.Time  { return l.start.Add(l.t1) }
func (l lease) rebindAt() time.Time { return l.start.Add(l.t2) }
func (l lease) expiry() time.Time   { return l.start.Add(l.lease) }

func (l lease) String() string {
	router := "none"
	if l.router.IsValid() {
		router = l.router.String()
	}
	d := "infinite"
	if l.lease != forever {
		d = l.lease.String()
	}
	return fmt.Sprintf("%s router %s server %s lease %s", l.addr, router, l.server, d)
}

// Run keeps a lease on the device until ctx ends (RFC 2131): it discovers a
// server, requests the first offer, and on the ACK puts the address, with
// the subnet mask's prefix length, on the device with valid and preferred
// lifetimes of the lease time, and a default route via the router option
// (proto dhcp, main table) in place of any default route of the same
// metric. At T1 it renews with the server by unicast, from T2 it rebinds
// by broadcast, and when the lease expires or a server refuses it (NAK) it
// removes the address and the route and starts over. A renewal that
// brings another address or router replaces the old ones.
//
// When ctx ends Run returns nil and leaves the lease in place: the router
// keeps working, and the kernel removes the address when its lifetime
// ends. It returns an error only when it cannot start: no such device, a
// device without an Ethernet address, or a socket it cannot open. Errors
// changing the kernel are logged, and the next renewal tries again.
//
// Run opens its sockets on the calling thread, so they belong to that
// thread's network namespace; to keep a lease in another namespace, call
// Run on a thread locked into it.
func (c *Client) Run(ctx context.Context) error {
	ifc, err := net.InterfaceByName(c.Device)
	if err != nil {
		return fmt.Errorf("dhcp on %s: %w", c.Device, err)
	}
	if len(ifc.HardwareAddr) != 6 {
		return fmt.Errorf("dhcp on %s: hardware address %q is not Ethernet's", c.Device, ifc.HardwareAddr)
	}
	conn, err := listen(ctx, c.Device, clientPort)
	if err != nil {
		return fmt.Errorf("dhcp on %s: %w", c.Device, err)
	}
	raw, err := openRawSender(ifc.Index)
	if err != nil {
		conn.Close()
		return fmt.Errorf("dhcp on %s: %w", c.Device, err)
	}
	defer raw.Close()
	k, err := dialKernel(ifc.Index)
	if err != nil {
		conn.Close()
		return fmt.Errorf("dhcp on %s: %w", c.Device, err)
	}
	s := &session{c: c, conn: conn, raw: raw, k: k, mac: ifc.HardwareAddr, in: make(chan []byte, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.read()
	}()
	defer func() {
		conn.Close()
		<-done
		k.Close()
	}()

	var held *lease
	for {
		if held == nil {
			l, ok := s.acquire(ctx)
			if !ok {
				return nil // ctx ended while acquiring: nothing is held
			}
			s.install(l, nil)
			c.logf("acquired %s", l)
			held = &l
			continue
		}
		l, how := s.extend(ctx, *held)
		switch how {
		case ended:
			return nil // leave the lease in place: its kernel lifetime bounds it
		case lostExpired, lostNAK:
			s.remove(*held)
			c.logf("lost %s: %s", *held, how)
			held = nil
		default:
			s.install(l, held)
			c.logf("%s %s", how, l)
			held = &l
		}
	}
}

// session is one Run's sockets. Only Run's goroutine uses it, except that
// read feeds in.
type session struct {
	c    *Client
	conn *net.UDPConn // receives everything; sends once an address is held
	raw  *rawSender   // sends before then
	k    *kernel
	mac  net.HardwareAddr
	in   chan []byte // datagrams to port 68 on the device
}

// read passes datagrams to s.in until the socket is closed, dropping them
// while nobody takes them.
func (s *session) read() {
	buf := make([]byte, 64<<10)
	for {
		n, _, err := s.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// An unconnected UDP socket reports no ICMP errors, so this is
			// rare and passing; pause so that it cannot spin.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		select {
		case s.in <- append([]byte(nil), buf[:n]...):
		default: // nobody waits for a reply now
		}
	}
}

// acquire discovers a server and requests its offer until one is
// acknowledged; ok is false only when ctx ended.
func (s *session) acquire(ctx context.Context) (l lease, ok bool) {
	for {
		xid := uint32(s.c.random())
		discover := request{typ: msgDiscover, xid: xid, mac: s.mac, hostname: s.c.Hostname, broadcast: true}
		offer, _, ok := s.exchange(ctx, discover, broadcastDst, time.Time{}, s.c.backoff, func(r reply) bool {
			return r.typ == msgOffer
		})
		if !ok {
			return lease{}, false // no deadline: only ctx ends it
		}
		req := request{
			typ: msgRequest, xid: xid, mac: s.mac, hostname: s.c.Hostname, broadcast: true,
			requested: offer.addr.Addr(), server: offer.server,
		}
		// Give up on the offer once the backoff has reached its longest.
		var giveUp time.Duration
		for try := range 5 {
			giveUp += s.c.retransmit() << try
		}
		ack, start, ok := s.exchange(ctx, req, broadcastDst, s.c.now().Add(giveUp), s.c.backoff, func(r reply) bool {
			return (r.typ == msgAck || r.typ == msgNak) && r.server == offer.server
		})
		switch {
		case ctx.Err() != nil:
			return lease{}, false
		case !ok:
			s.c.logf("no answer from %s to the request for %s; discovering again", offer.server, offer.addr)
		case ack.typ == msgNak:
			s.c.logf("%s refused %s (NAK); discovering again", offer.server, offer.addr)
			if !s.sleep(ctx, s.c.now().Add(s.c.backoff(0))) {
				return lease{}, false
			}
		default:
			return lease{reply: ack, start: start}, true
		}
	}
}

// outcome is how extend ended.
type outcome uint8

const (
	ended       outcome = iota // ctx ended
	renewed                    // the server acknowledged a unicast renewal
	rebound                    // a server acknowledged a broadcast rebinding
	lostExpired                // no server acknowledged before expiry
	lostNAK                    // a server refused the lease
)

func (o outcome) String() string {
	return [...]string{"ended", "renewed", "rebound", "expired", "refused (NAK)"}[o]
}

// extend waits for T1, then renews the lease by unicast to its server until
// T2, then rebinds by broadcast until it expires.
func (s *session) extend(ctx context.Context, l lease) (lease, outcome) {
	if !s.sleep(ctx, l.renewAt()) {
		return lease{}, ended
	}
	want := func(r reply) bool { return r.typ == msgAck || r.typ == msgNak }
	how := renewed
	q := request{typ: msgRequest, xid: uint32(s.c.random()), mac: s.mac, hostname: s.c.Hostname, ciaddr: l.addr.Addr()}
	r, start, ok := s.exchange(ctx, q, netip.AddrPortFrom(l.server, serverPort), l.rebindAt(), s.halfUntil(l.rebindAt()), want)
	if !ok && ctx.Err() == nil {
		how = rebound
		q.xid = uint32(s.c.random())
		r, start, ok = s.exchange(ctx, q, broadcastDst, l.expiry(), s.halfUntil(l.expiry()), want)
	}
	switch {
	case ctx.Err() != nil:
		return lease{}, ended
	case !ok:
		return lease{}, lostExpired
	case r.typ == msgNak:
		return lease{}, lostNAK
	}
	return lease{reply: r, start: start}, how
}

// halfUntil is the retransmission wait while renewing or rebinding: half
// the time left until t (RFC 2131 4.4.5), but no less than the longest
// backoff (64 s by default; the RFC's 60 s).
func (s *session) halfUntil(t time.Time) func(int) time.Duration {
	return func(int) time.Duration {
		return max(t.Sub(s.c.now())/2, s.c.retransmit()<<4)
	}
}

// exchange sends q to dst until a reply that want takes arrives, and
// returns it with the time q was first sent. After each transmission it
// waits wait(try), but not past deadline (zero: none). ok is false when
// the deadline passed or ctx ended first.
func (s *session) exchange(ctx context.Context, q request, dst netip.AddrPort, deadline time.Time, wait func(try int) time.Duration, want func(reply) bool) (r reply, first time.Time, ok bool) {
	b, err := q.encode()
	if err != nil {
		// Never for the messages the client builds; were it to happen, the
		// exchange fails as if unanswered, not at once, so nothing spins.
		s.c.logf("encode message %d: %v", q.typ, err)
		if deadline.IsZero() {
			deadline = s.c.now().Add(forever)
		}
		s.sleep(ctx, deadline)
		return reply{}, time.Time{}, false
	}
	for drained := false; !drained; {
		select {
		case <-s.in: // stale: from before this exchange
		default:
			drained = true
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop() // armed per transmission below
	defer timer.Stop()
	for try := 0; ; try++ {
		now := s.c.now()
		if !deadline.IsZero() && !now.Before(deadline) {
			return reply{}, time.Time{}, false
		}
		if try == 0 {
			first = now
		}
		if err := s.send(b, dst, q.ciaddr.IsValid()); err != nil {
			s.c.logf("%v", err)
		}
		d := wait(try)
		if !deadline.IsZero() {
			d = min(d, deadline.Sub(now))
		}
		timer.Reset(d)
	receive:
		for {
			select {
			case <-ctx.Done():
				return reply{}, time.Time{}, false
			case <-timer.C:
				break receive
			case pkt := <-s.in:
				r, v := parseReply(pkt, q.xid, s.mac)
				if v != accepted {
					s.c.drops[v].Add(1)
					continue
				}
				if want(r) {
					return r, first, true
				}
			}
		}
	}
}

// send sends a message to dst: through the UDP socket when the client
// holds an address, else as a broadcast from 0.0.0.0.
func (s *session) send(b []byte, dst netip.AddrPort, held bool) error {
	if !held {
		return s.raw.send(b)
	}
	if _, err := s.conn.WriteToUDPAddrPort(b, dst); err != nil {
		return fmt.Errorf("send to %s: %w", dst, err)
	}
	return nil
}

// sleep waits until t; it is false when ctx ended first.
func (s *session) sleep(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(t.Sub(s.c.now()))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// install puts l's address and route in place, removing those of prev
// (the lease it extends) that l does not keep. The old ones go first: the
// kernel drops the addresses of a subnet with its primary one.
func (s *session) install(l lease, prev *lease) {
	if prev != nil {
		if prev.router.IsValid() && prev.router != l.router {
			if err := s.k.deleteRoute(prev.router); err != nil {
				s.c.logf("%v", err)
			}
		}
		if prev.addr != l.addr {
			if err := s.k.deleteAddress(prev.addr); err != nil {
				s.c.logf("%v", err)
			}
		}
	}
	left := l.lease
	if left != forever {
		left = l.expiry().Sub(s.c.now())
	}
	if err := s.k.setAddress(l.addr, left); err != nil {
		s.c.logf("%v", err)
	}
	if l.router.IsValid() {
		if err := s.k.setRoute(l.router); err != nil {
			s.c.logf("%v", err)
		}
	}
}

// remove takes l's route and address off the device.
func (s *session) remove(l lease) {
	if l.router.IsValid() {
		if err := s.k.deleteRoute(l.router); err != nil {
			s.c.logf("%v", err)
		}
	}
	if err := s.k.deleteAddress(l.addr); err != nil {
		s.c.logf("%v", err)
	}
}
