package conntrack

import (
	"testing"
	"time"
)

const (
	cli   = "10.0.0.1"
	srv   = "10.0.0.2"
	cport = 40000
	sport = 80
)

func c2s(flags uint8, seq, ack, n uint32) *Packet {
	return tcpPkt(cli, cport, srv, sport, flags, seq, ack, n)
}
func s2c(flags uint8, seq, ack, n uint32) *Packet {
	return tcpPkt(srv, sport, cli, cport, flags, seq, ack, n)
}

const (
	SA = FlagSYN | FlagACK
	FA = FlagFIN | FlagACK
	PA = FlagPSH | FlagACK
	RA = FlagRST | FlagACK
)

// handshake is a three-way handshake and 10 bytes one way, 20 the other:
// the client's next seq is 111, the server's 321.
func handshake() []step {
	return []step{
		{name: "syn", pkt: c2s(FlagSYN, 100, 0, 0), wantState: StateNew, wantTCP: TCPSynSent},
		{name: "syn-ack", pkt: s2c(SA, 300, 101, 0), wantState: StateEstablished, wantTCP: TCPSynRecv},
		{name: "ack", pkt: c2s(FlagACK, 101, 301, 0), wantState: StateEstablished, wantTCP: TCPEstablished},
		{name: "data c2s", pkt: c2s(PA, 101, 301, 10), wantState: StateEstablished, wantTCP: TCPEstablished},
		{name: "data s2c", pkt: s2c(PA, 301, 111, 20), wantState: StateEstablished, wantTCP: TCPEstablished},
		{name: "ack s2c data", pkt: c2s(FlagACK, 111, 321, 0), wantState: StateEstablished, wantTCP: TCPEstablished},
	}
}

func TestTCP(t *testing.T) {
	tests := []struct {
		name    string
		steps   []step
		wantLen int
	}{
		{name: "handshake", steps: handshake(), wantLen: 1},
		{name: "teardown", wantLen: 1, steps: append(handshake(),
			step{name: "fin c2s", pkt: c2s(FA, 111, 321, 0), wantState: StateEstablished, wantTCP: TCPFinWait},
			step{name: "ack fin", pkt: s2c(FlagACK, 321, 112, 0), wantState: StateEstablished, wantTCP: TCPCloseWait},
			step{name: "fin s2c", pkt: s2c(FA, 321, 112, 0), wantState: StateEstablished, wantTCP: TCPLastAck},
			step{name: "last ack", pkt: c2s(FlagACK, 112, 322, 0), wantState: StateEstablished, wantTCP: TCPTimeWait},
			step{name: "reopen from time_wait", pkt: c2s(FlagSYN, 5000, 0, 0), wantState: StateNew, wantTCP: TCPSynSent},
		)},
		{name: "half-close", wantLen: 1, steps: append(handshake(),
			step{name: "fin c2s", pkt: c2s(FA, 111, 321, 0), wantState: StateEstablished, wantTCP: TCPFinWait},
			step{name: "ack fin", pkt: s2c(FlagACK, 321, 112, 0), wantState: StateEstablished, wantTCP: TCPCloseWait},
			step{name: "server still sends", pkt: s2c(PA, 321, 112, 50), wantState: StateEstablished, wantTCP: TCPCloseWait},
			step{name: "client acks", pkt: c2s(FlagACK, 112, 371, 0), wantState: StateEstablished, wantTCP: TCPCloseWait},
			step{name: "fin s2c", pkt: s2c(FA, 371, 112, 0), wantState: StateEstablished, wantTCP: TCPLastAck},
			step{name: "last ack", pkt: c2s(FlagACK, 112, 372, 0), wantState: StateEstablished, wantTCP: TCPTimeWait},
		)},
		{name: "reset", wantLen: 1, steps: append(handshake(),
			step{name: "rst behind the peer's ack", pkt: s2c(FlagRST, 200, 0, 0), wantState: StateInvalid, wantWhy: ReasonTCPInvalidRST},
			step{name: "rst at the peer's ack", pkt: s2c(FlagRST, 321, 0, 0), wantState: StateEstablished, wantTCP: TCPClose},
		)},
		{name: "refused", wantLen: 0, steps: []step{
			{name: "syn", pkt: c2s(FlagSYN, 100, 0, 0), wantState: StateNew, wantTCP: TCPSynSent},
			{name: "rst-ack", pkt: s2c(RA, 0, 101, 0), wantState: StateEstablished, wantTCP: TCPClose},
		}},
		{name: "simultaneous open", wantLen: 1, steps: []step{
			{name: "syn a", pkt: c2s(FlagSYN, 100, 0, 0), wantState: StateNew, wantTCP: TCPSynSent},
			{name: "syn b", pkt: s2c(FlagSYN, 300, 0, 0), wantState: StateEstablished, wantTCP: TCPSynSent2},
			{name: "syn-ack a", pkt: c2s(SA, 100, 301, 0), wantState: StateEstablished, wantTCP: TCPSynRecv},
			{name: "syn-ack b ignored", pkt: s2c(SA, 300, 101, 0), wantState: StateEstablished, wantTCP: TCPSynRecv},
			{name: "ack a", pkt: c2s(FlagACK, 101, 301, 0), wantState: StateEstablished, wantTCP: TCPEstablished},
		}},
		{name: "out of window", wantLen: 1, steps: append(handshake(),
			step{name: "seq past the window", pkt: c2s(PA, 111+200000, 321, 10), wantState: StateInvalid, wantWhy: ReasonTCPSeqOverWindow},
			step{name: "ack of unseen data", pkt: c2s(FlagACK, 111, 321+100000, 0), wantState: StateInvalid, wantWhy: ReasonTCPAckOverWindow},
			step{name: "still fine", pkt: c2s(PA, 111, 321, 5), wantState: StateEstablished, wantTCP: TCPEstablished},
		)},
		{name: "invalid flags and transitions", wantLen: 1, steps: []step{
			{name: "syn-fin", pkt: c2s(FlagSYN|FlagFIN, 100, 0, 0), wantState: StateInvalid, wantWhy: ReasonTCPFlags},
			{name: "no flags", pkt: c2s(0, 100, 0, 0), wantState: StateInvalid, wantWhy: ReasonTCPFlags},
			{name: "new without syn", pkt: c2s(FlagACK, 100, 5, 0), wantState: StateInvalid, wantWhy: ReasonTCPNewNotSYN},
			{name: "syn", pkt: c2s(FlagSYN, 100, 0, 0), wantState: StateNew, wantTCP: TCPSynSent},
			{name: "ack before syn-ack", pkt: c2s(FlagACK, 101, 301, 0), wantState: StateInvalid, wantWhy: ReasonTCPTransition},
			{name: "fin before syn-ack", pkt: c2s(FA, 101, 301, 0), wantState: StateInvalid, wantWhy: ReasonTCPTransition},
			{name: "syn-ack from client", pkt: c2s(SA, 100, 301, 0), wantState: StateInvalid, wantWhy: ReasonTCPTransition},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, clk := newTable(t, 100)
			runSteps(t, tb, clk, tt.steps)
			if got := tb.Len(); got != tt.wantLen {
				t.Errorf("Len() = %d, want %d", got, tt.wantLen)
			}
		})
	}
}

func TestTCPTimeouts(t *testing.T) {
	tb, clk := newTable(t, 100)
	runSteps(t, tb, clk, handshake())
	k := c2s(FlagACK, 0, 0, 0).Tuple()
	e, ok := tb.Get(k)
	if !ok || !e.Assured || !e.Replied {
		t.Fatalf("after handshake: %+v, %v; want assured and replied", e, ok)
	}
	// Everything sent has been acknowledged: the full established timeout.
	if got, want := e.Expires.Sub(e.Last), 432000*time.Second; got != want {
		t.Errorf("established timeout = %v, want %v", got, want)
	}
	runSteps(t, tb, clk, []step{
		{name: "fin c2s", pkt: c2s(FA, 111, 321, 0), wantState: StateEstablished, wantTCP: TCPFinWait},
	})
	e, _ = tb.Get(k)
	if got, want := e.Expires.Sub(e.Last), 120*time.Second; got != want {
		t.Errorf("fin_wait timeout = %v, want %v", got, want)
	}
	clk.Advance(121 * time.Second)
	if n := tb.Reap(1000); n != 1 || tb.Len() != 0 {
		t.Errorf("Reap after fin_wait timeout: reaped %d, Len %d; want 1, 0", n, tb.Len())
	}
}

// TestTCPWindowScale: with window scaling negotiated by both sides, a
// segment 200,000 bytes ahead fits the receiver's scaled window; without
// it the same segment overshoots the window by more than a window (Linux
// lets a smaller overshoot pass as ignored).
func TestTCPWindowScale(t *testing.T) {
	for _, tt := range []struct {
		name   string
		scale  bool
		want   State
		reason Reason
	}{
		{"scaled", true, StateEstablished, ReasonNone},
		{"unscaled", false, StateInvalid, ReasonTCPSeqOverWindow},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb, clk := newTable(t, 10)
			syn, synack := c2s(FlagSYN, 100, 0, 0), s2c(SA, 300, 101, 0)
			syn.HasWScale, syn.WScale = tt.scale, 7
			synack.HasWScale, synack.WScale = tt.scale, 7
			win := s2c(FlagACK, 301, 101, 0)
			win.Window = 2000 // 256,000 bytes when scaled by 2^7
			runSteps(t, tb, clk, []step{
				{name: "syn", pkt: syn, wantState: StateNew, wantTCP: TCPSynSent},
				{name: "syn-ack", pkt: synack, wantState: StateEstablished, wantTCP: TCPSynRecv},
				{name: "ack", pkt: c2s(FlagACK, 101, 301, 0), wantState: StateEstablished, wantTCP: TCPEstablished},
				{name: "window update", pkt: win, wantState: StateEstablished, wantTCP: TCPEstablished},
				{name: "far segment", pkt: c2s(PA, 101+200000, 301, 10), wantState: tt.want, wantTCP: TCPEstablished, wantWhy: tt.reason},
			})
		})
	}
}

// TestTCPIgnoredSegment: segments Linux ignores (a late SYN/ACK, a SYN in
// ESTABLISHED) are accepted but change and count nothing.
func TestTCPIgnoredSegment(t *testing.T) {
	tb, clk := newTable(t, 10)
	runSteps(t, tb, clk, append(handshake(),
		step{name: "late syn-ack", pkt: s2c(SA, 300, 101, 0), wantState: StateEstablished, wantTCP: TCPEstablished},
		step{name: "syn in established", pkt: c2s(FlagSYN, 9999, 0, 0), wantState: StateEstablished, wantTCP: TCPEstablished},
	))
	e, _ := tb.Get(c2s(0, 0, 0, 0).Tuple())
	if got, want := e.Packets, [2]uint64{4, 2}; got != want {
		t.Errorf("Packets = %v, want %v (ignored segments are not counted)", got, want)
	}
}
