package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/sluicefw/sluice/internal/lab"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// testServer is a DHCP server on eth0 of its namespace: it offers and
// acknowledges one address to whoever asks, and records what it is sent.
type testServer struct {
	conn *net.UDPConn
	id   netip.Addr // its own address, the server identifier

	mu     sync.Mutex
	offer  serverMsg // the lease it gives (typ, xid, mac filled per reply)
	silent bool      // records but does not answer
	nak    bool      // refuses every REQUEST
	junk   bool      // sends a malformed and a foreign reply before each
	seen   []seenMsg
}

// seenMsg is a client message as the server received it.
type seenMsg struct {
	typ       byte
	src       netip.AddrPort
	ciaddr    netip.Addr
	broadcast bool
	hostname  string
	clientID  []byte
}

func startServer(t *testing.T, ns *netnstest.NS, id netip.Addr, offer serverMsg) *testServer {
	t.Helper()
	s := &testServer{id: id, offer: offer}
	err := lab.Do(ns.Name, func() (err error) {
		s.conn, err = listen(context.Background(), "eth0", serverPort)
		return err
	})
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.serve(t)
	}()
	t.Cleanup(func() {
		s.conn.Close()
		<-done
	})
	return s
}

func (s *testServer) serve(t *testing.T) {
	buf := make([]byte, 1500)
	for {
		n, src, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed at the end of the test
		}
		var d layers.DHCPv4
		if err := d.DecodeFromBytes(buf[:n], gopacket.NilDecodeFeedback); err != nil {
			t.Errorf("server: client sent a malformed message: %v", err)
			continue
		}
		m := seenMsg{src: src, broadcast: d.Flags&0x8000 != 0}
		m.ciaddr, _ = netip.AddrFromSlice(d.ClientIP.To4())
		for _, o := range d.Options {
			switch o.Type {
			case layers.DHCPOptMessageType:
				m.typ = o.Data[0]
			case layers.DHCPOptHostname:
				m.hostname = string(o.Data)
			case layers.DHCPOptClientID:
				m.clientID = o.Data
			}
		}
		s.mu.Lock()
		s.seen = append(s.seen, m)
		r := s.offer
		silent, nak, junk := s.silent, s.nak, s.junk
		s.mu.Unlock()
		if silent {
			continue
		}
		switch {
		case m.typ == msgDiscover:
			r.typ = msgOffer
		case m.typ == msgRequest && nak:
			r = serverMsg{typ: msgNak, server: s.id}
		case m.typ == msgRequest:
			r.typ = msgAck
		default:
			continue
		}
		r.xid, r.mac, r.server = d.Xid, d.ClientHWAddr, s.id
		// RFC 2131 4.1: to a client with an address, unicast; else
		// broadcast, which is what the client's broadcast flag asks.
		dst := netip.AddrPortFrom(broadcastDst.Addr(), clientPort)
		if m.ciaddr.IsGlobalUnicast() && r.typ == msgAck {
			dst = netip.AddrPortFrom(m.ciaddr, clientPort)
		}
		good := r.encode(t)
		pkts := [][]byte{good}
		if junk {
			foreign := r
			foreign.xid++
			pkts = [][]byte{good[:100], foreign.encode(t), good}
		}
		for _, p := range pkts {
			if _, err := s.conn.WriteToUDPAddrPort(p, dst); err != nil {
				t.Errorf("server: send to %s: %v", dst, err)
			}
		}
	}
}

func (s *testServer) set(f func(s *testServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *testServer) messages() []seenMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenMsg(nil), s.seen...)
}

// link makes a server and a client namespace joined by a veth pair, eth0 on
// both ends, the server's with 81.0.0.1/24.
func link(t *testing.T) (srv, cli *netnstest.NS) {
	t.Helper()
	srv, cli = netnstest.New(t), netnstest.New(t)
	srv.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", cli.Name)
	srv.Run(t, "ip", "address", "add", "81.0.0.1/24", "dev", "eth0")
	srv.Run(t, "ip", "link", "set", "eth0", "up")
	cli.Run(t, "ip", "link", "set", "eth0", "up")
	return srv, cli
}

// logs collects a client's log lines.
type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logs) has(substr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, substr) {
			return true
		}
	}
	return false
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// start runs c in namespace ns; stop ends it and returns Run's error.
func start(t *testing.T, ns *netnstest.NS, c *Client) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- lab.Do(ns.Name, func() error { return c.Run(ctx) }) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(5 * time.Second):
				err = errors.New("Run did not return within 5s of ctx ending")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// waitFor polls cond every 50ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var validLft = regexp.MustCompile(`valid_lft (\S+)`)

// address returns the client's eth0 IPv4 address line (one line per
// address, in -o form) and the valid_lft of the address with prefix pfx,
// -1 if it is not there, -2 if forever.
func address(t *testing.T, ns *netnstest.NS, pfx string) (out string, lft int) {
	t.Helper()
	out = ns.Run(t, "ip", "-4", "-o", "address", "show", "dev", "eth0")
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, " inet "+pfx+" ") {
			continue
		}
		m := validLft.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("no valid_lft in %q", line)
		}
		if m[1] == "forever" {
			return out, -2
		}
		n, err := strconv.Atoi(strings.TrimSuffix(m[1], "sec"))
		if err != nil {
			t.Fatalf("valid_lft in %q: %v", line, err)
		}
		return out, n
	}
	return out, -1
}

func defaultRoute(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	return strings.Join(strings.Fields(ns.Run(t, "ip", "-4", "route", "show", "default")), " ")
}

func testOffer(lease, t1, t2 uint32) serverMsg {
	return serverMsg{
		yiaddr: netip.MustParseAddr("81.0.0.50"), mask: []byte{255, 255, 255, 0},
		router: netip.MustParseAddr("81.0.0.1"), lease: lease, t1: t1, t2: t2,
	}
}

const serverID = "81.0.0.1"

// The client acquires a lease: the address with the mask's prefix and a
// finite lifetime, and the default route proto dhcp. It asks from 0.0.0.0
// even when another interface has an address. Ending Run leaves the lease
// in place.
func TestAcquire(t *testing.T) {
	srv, cli := link(t)
	cli.Run(t, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
	cli.Run(t, "ip", "address", "add", "192.168.1.1/24", "dev", "lan0")
	cli.Run(t, "ip", "link", "set", "lan0", "up")
	s := startServer(t, srv, netip.MustParseAddr(serverID), testOffer(3600, 0, 0))
	s.set(func(s *testServer) { s.junk = true })
	var l logs
	c := &Client{Device: "eth0", Hostname: "sluice-test", Logf: l.logf, Retransmit: 200 * time.Millisecond}
	stop := start(t, cli, c)

	waitFor(t, 5*time.Second, "no lease on eth0", func() bool {
		_, lft := address(t, cli, "81.0.0.50/24")
		return lft != -1
	})
	out, lft := address(t, cli, "81.0.0.50/24")
	if lft < 3590 || lft > 3600 {
		t.Errorf("valid_lft = %d, want about 3600 (finite):\n%s", lft, out)
	}
	waitFor(t, 2*time.Second, "no default route", func() bool { return defaultRoute(t, cli) != "" })
	if got, want := defaultRoute(t, cli), "default via 81.0.0.1 dev eth0 proto dhcp"; got != want {
		t.Errorf("ip route show default = %q, want %q", got, want)
	}
	if want := "dhcp eth0: acquired 81.0.0.50/24 router 81.0.0.1 server 81.0.0.1 lease 1h0m0s"; !l.has(want) {
		t.Errorf("log lacks %q:\n%s", want, &l)
	}

	msgs := s.messages()
	if len(msgs) < 2 || msgs[0].typ != msgDiscover || msgs[1].typ != msgRequest {
		t.Fatalf("server saw %+v, want a DISCOVER then a REQUEST", msgs)
	}
	mac, err := net.ParseMAC(strings.Fields(cli.Run(t, "cat", "/sys/class/net/eth0/address"))[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs[:2] {
		if want := netip.MustParseAddrPort("0.0.0.0:68"); m.src != want {
			t.Errorf("message %d came from %v, want %v", m.typ, m.src, want)
		}
		if !m.broadcast || m.hostname != "sluice-test" || string(m.clientID) != string(append([]byte{1}, mac...)) {
			t.Errorf("message %d: broadcast %v hostname %q client id %x; want broadcast, sluice-test, 01%x", m.typ, m.broadcast, m.hostname, m.clientID, []byte(mac))
		}
	}

	// The OFFER and the ACK each came after a truncated and a foreign
	// reply (more, were a retransmission answered too).
	drops := c.Drops()
	for reason, n := range drops {
		drops[reason] = min(n, 2)
	}
	if diff := cmp.Diff(map[string]uint64{"short": 2, "wrong xid": 2}, drops); diff != "" {
		t.Errorf("Drops, at most 2 each (-want +got):\n%s", diff)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, lft := address(t, cli, "81.0.0.50/24"); lft < 0 {
		t.Errorf("the address went with Run; want it kept")
	}
	if got := defaultRoute(t, cli); got == "" {
		t.Errorf("the default route went with Run; want it kept")
	}
}

// A short lease is renewed by unicast at T1, which refreshes the kernel's
// lifetime; when the server stops answering, the address and the route go
// at expiry.
func TestRenewAndExpire(t *testing.T) {
	srv, cli := link(t)
	s := startServer(t, srv, netip.MustParseAddr(serverID), testOffer(6, 2, 4))
	var l logs
	c := &Client{Device: "eth0", Logf: l.logf, Retransmit: 200 * time.Millisecond}
	start(t, cli, c)

	waitFor(t, 5*time.Second, "no lease on eth0", func() bool {
		_, lft := address(t, cli, "81.0.0.50/24")
		return lft != -1
	})
	leased := netip.MustParseAddr("81.0.0.50")
	renewal := func() bool {
		for _, m := range s.messages() {
			if m.typ == msgRequest && m.ciaddr == leased && m.src.Addr() == leased {
				return true
			}
		}
		return false
	}
	waitFor(t, 4*time.Second, "no renewal REQUEST from 81.0.0.50", renewal)
	// Unrenewed, 2s into the lease, 4s would be left.
	waitFor(t, 2*time.Second, "valid_lft not refreshed to 5s or more", func() bool {
		_, lft := address(t, cli, "81.0.0.50/24")
		return lft >= 5
	})
	waitFor(t, 2*time.Second, "no renewal logged", func() bool { return l.has("renewed 81.0.0.50/24") })

	s.set(func(s *testServer) { s.silent = true })
	before := len(s.messages())
	waitFor(t, 9*time.Second, "the address outlived the lease", func() bool {
		_, lft := address(t, cli, "81.0.0.50/24")
		return lft == -1
	})
	// Unanswered, the client renews at T1 and rebinds at T2.
	var asked int
	for _, m := range s.messages()[before:] {
		if m.typ == msgRequest && m.ciaddr == leased {
			asked++
		}
	}
	if asked < 2 {
		t.Errorf("the silent server saw %d REQUESTs for the lease, want a renewal and a rebinding", asked)
	}
	if got := defaultRoute(t, cli); got != "" {
		t.Errorf("ip route show default = %q after expiry, want none", got)
	}
	waitFor(t, 2*time.Second, "no loss logged", func() bool { return l.has("lost 81.0.0.50/24") })
	if !l.has("expired") {
		t.Errorf("log does not say the lease expired:\n%s", &l)
	}
}

// A renewal that brings another address and router replaces the old ones;
// a NAK removes the lease, and the client discovers again.
func TestChangeAndNAK(t *testing.T) {
	srv, cli := link(t)
	s := startServer(t, srv, netip.MustParseAddr(serverID), testOffer(60, 1, 50))
	var l logs
	c := &Client{Device: "eth0", Logf: l.logf, Retransmit: 200 * time.Millisecond}
	start(t, cli, c)

	waitFor(t, 5*time.Second, "no lease on eth0", func() bool {
		_, lft := address(t, cli, "81.0.0.50/24")
		return lft != -1
	})
	s.set(func(s *testServer) {
		s.offer.yiaddr = netip.MustParseAddr("81.0.0.51")
		s.offer.router = netip.MustParseAddr("81.0.0.254")
	})
	waitFor(t, 4*time.Second, "the new address did not replace the old", func() bool {
		_, oldLft := address(t, cli, "81.0.0.50/24")
		_, newLft := address(t, cli, "81.0.0.51/24")
		return oldLft == -1 && newLft > 0
	})
	if got, want := defaultRoute(t, cli), "default via 81.0.0.254 dev eth0 proto dhcp"; got != want {
		t.Errorf("ip route show default = %q, want %q", got, want)
	}

	s.set(func(s *testServer) { s.nak = true })
	waitFor(t, 4*time.Second, "a NAK did not remove the lease", func() bool {
		_, lft := address(t, cli, "81.0.0.51/24")
		return lft == -1
	})
	if !l.has("lost 81.0.0.51/24 router 81.0.0.254") || !l.has("refused (NAK)") {
		t.Errorf("log does not tell of the NAK:\n%s", &l)
	}
	s.set(func(s *testServer) { s.nak = false })
	waitFor(t, 4*time.Second, "no new lease after the NAK", func() bool {
		_, lft := address(t, cli, "81.0.0.51/24")
		return lft > 0
	})
}

// Run fails at once for a device that does not exist.
func TestNoDevice(t *testing.T) {
	ns := netnstest.New(t)
	c := &Client{Device: "nosuch0"}
	err := lab.Do(ns.Name, func() error { return c.Run(context.Background()) })
	if err == nil || !strings.Contains(err.Error(), "dhcp on nosuch0") {
		t.Errorf("Run = %v, want an error naming the device", err)
	}
}
