package conntrack

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock shared by a test and its table.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTable(t testing.TB, max int) (*Table, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	tb, err := New(Config{Max: max, Clock: clk.Now, Seed: 0x5eed, Events: 0})
	if err != nil {
		t.Fatal(err)
	}
	return tb, clk
}

func ip(s string) (uint8, [16]byte) {
	a := netip.MustParseAddr(s)
	var b [16]byte
	if a.Is4() {
		v := a.As4()
		copy(b[:], v[:])
		return IPv4, b
	}
	return IPv6, a.As16()
}

func tcpPkt(src string, sport uint16, dst string, dport uint16, flags uint8, seq, ack uint32, payload uint32) *Packet {
	fam, s := ip(src)
	_, d := ip(dst)
	return &Packet{Family: fam, Proto: ProtoTCP, Src: s, Dst: d, SrcPort: sport, DstPort: dport,
		TCPFlags: flags, Seq: seq, Ack: ack, Window: 65535, PayloadLen: payload, Length: 40 + payload}
}

func udpPkt(src string, sport uint16, dst string, dport uint16) *Packet {
	fam, s := ip(src)
	_, d := ip(dst)
	return &Packet{Family: fam, Proto: ProtoUDP, Src: s, Dst: d, SrcPort: sport, DstPort: dport, PayloadLen: 10, Length: 38}
}

func icmpPkt(src, dst string, typ uint8, id uint16) *Packet {
	fam, s := ip(src)
	_, d := ip(dst)
	proto := ProtoICMP
	if fam == IPv6 {
		proto = ProtoICMPv6
	}
	return &Packet{Family: fam, Proto: proto, Src: s, Dst: d, ICMPType: typ, ICMPID: id, Length: 84}
}

// step is one packet of a scripted exchange and what Track must answer.
type step struct {
	name      string
	pkt       *Packet
	advance   time.Duration // advance the clock before the packet
	wantState State
	wantTCP   TCPState
	wantWhy   Reason
}

func runSteps(t *testing.T, tb *Table, clk *fakeClock, steps []step) {
	t.Helper()
	for _, s := range steps {
		clk.Advance(s.advance)
		got := tb.Track(s.pkt)
		if got.State != s.wantState || got.Reason != s.wantWhy || (s.pkt.Proto == ProtoTCP && got.State != StateInvalid && got.TCP != s.wantTCP) {
			t.Fatalf("%s: got (%v, %v, %v), want (%v, %v, %v)", s.name, got.State, got.TCP, got.Reason, s.wantState, s.wantTCP, s.wantWhy)
		}
	}
}
