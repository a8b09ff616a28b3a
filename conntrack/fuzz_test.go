package conntrack

import (
	"testing"
	"time"
)

// FuzzDecode: arbitrary bytes never panic Decode or Track, and a rejected
// packet is Invalid with the same reason.
func FuzzDecode(f *testing.F) {
	for _, raw := range samplePackets(f) {
		f.Add(raw)
	}
	tb, _ := newTable(f, 64)
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		r := p.Decode(b)
		got := tb.Track(&p)
		if r != ReasonNone && (got.State != StateInvalid || got.Reason != r) {
			t.Fatalf("Decode = %v but Track = %v (%v)", r, got.State, got.Reason)
		}
		if tb.Len() > 64 {
			t.Fatalf("Len %d > Max", tb.Len())
		}
	})
}

// FuzzTrack drives a small table with random packet sequences among a few
// hosts and checks the invariants: Len never exceeds Max, every entry is
// found from both directions, Range and Len agree, and nothing is left once
// the clock passes every timeout and the table is reaped. TrackBatch, fed
// the packets between clock steps as batches, must answer and leave the
// table exactly as Track did.
func FuzzTrack(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 0, 0, 0, 0, 1, 1, 0, 0x12, 0, 0, 0, 0})
	f.Add([]byte("the quick brown fox jumps over the lazy dog, twice over"))
	f.Add([]byte("\x00\x01\x02\x03\x00\x02\x00\x80\x01\x00\x03\x02\x00\x12\x03\x81\x00\x01\x02\x03\x00\x10\x01\x82" +
		"\x02\x02\x00\x00\x01\x00\x00\x83\x03\x04\x01\x01\x03\x00\x00\x84\x04\x03\x00\x00\x02\x00\x00\x85"))
	f.Fuzz(fuzzTrack)
}

// fuzzPackets turns each 8 bytes of b into a packet and the clock step
// after it.
func fuzzPackets(b []byte) (ps []*Packet, steps []time.Duration) {
	hosts := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1", "2001:db8::2"}
	for len(b) >= 8 {
		op := b[:8]
		b = b[8:]
		src, dst := hosts[int(op[0]%5)], hosts[int(op[1]%5)]
		if (op[0]%5 < 3) != (op[1]%5 < 3) {
			dst = hosts[(int(op[0]%5)+1)%5] // keep one family
			if (op[0]%5 < 3) != ((op[0]%5+1)%5 < 3) {
				dst = src
			}
		}
		sp, dp := uint16(op[2]%3), uint16(op[3]%3)
		var p *Packet
		switch op[4] % 4 {
		case 0:
			p = tcpPkt(src, sp, dst, dp, op[5], uint32(op[6])*50, uint32(op[7])*50, uint32(op[7]%4)*10)
		case 1:
			p = udpPkt(src, sp, dst, dp)
		case 2:
			p = icmpPkt(src, dst, []uint8{8, 0, 128, 129}[op[5]%4], uint16(op[6]%3))
			if p.Family == IPv4 {
				p.ICMPType = []uint8{8, 0, 13}[op[5]%3]
			}
		default:
			p = icmpPkt(src, dst, 3, 0)
			if p.Family == IPv6 {
				p.ICMPType = 1
			}
			q := udpPkt(dst, dp, src, sp)
			p.Quoted, p.HasQuoted = q.Tuple(), op[5]&1 == 0
		}
		// Half the packets leave the clock alone: those runs are batches.
		step := time.Duration(op[7]%16) * time.Second
		if op[7]&0x80 != 0 {
			step = 0
		}
		ps, steps = append(ps, p), append(steps, step)
	}
	return ps, steps
}

func fuzzTrack(t *testing.T, b []byte) {
	const max = 8
	ps, steps := fuzzPackets(b)
	tb, clk := newTable(t, max)
	for i, p := range ps {
		tb.Track(p)
		clk.Advance(steps[i])
		if n := tb.Len(); n > max || n < 0 {
			t.Fatalf("Len = %d, Max %d", n, max)
		}
	}
	n := 0
	tb.Range(func(e Entry) bool {
		n++
		for _, tu := range []Tuple{e.Tuple, e.Tuple.Reverse()} {
			got, ok := tb.Get(tu)
			if !ok || got.Tuple != e.Tuple {
				t.Fatalf("entry %+v not found from %+v", e.Tuple, tu)
			}
		}
		return true
	})
	if n != tb.Len() {
		t.Fatalf("Range saw %d entries, Len %d", n, tb.Len())
	}
	clk.Advance(432001 * time.Second)
	tb.Reap(1 << 16)
	if tb.Len() != 0 {
		t.Fatalf("Len after every timeout = %d, want 0", tb.Len())
	}

	// The same packets in batches: a batch is a run the clock does not
	// step within.
	var bursts []burst
	cur := burst{}
	for i, p := range ps {
		cur.pkts = append(cur.pkts, p)
		if steps[i] != 0 {
			bursts = append(bursts, cur)
			cur = burst{advance: steps[i]}
		}
	}
	bursts = append(bursts, cur)
	checkBatch(t, max, bursts)
}
