package conntrack

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// benchClock is a lock-free fake clock for benchmarks.
type benchClock struct {
	base time.Time
	ns   atomic.Int64
}

func (c *benchClock) Now() time.Time          { return c.base.Add(time.Duration(c.ns.Load())) }
func (c *benchClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// flowPacket fills p with the client->server packet of flow i: client
// 10.a.b.c:port to server 192.0.2.x:443, distinct for i < 2^32.
func flowPacket(p *Packet, i uint32, flags uint8) {
	*p = Packet{Family: IPv4, Proto: ProtoTCP, SrcPort: uint16(1024 + i%50000), DstPort: 443,
		TCPFlags: flags, Seq: 1001, Ack: 5001, Window: 65535, Length: 52}
	j := i / 50000
	p.Src = [16]byte{10, byte(j >> 8), byte(j), 1}
	p.Dst = [16]byte{192, 0, 2, byte(i % 7)}
}

func replyPacket(p *Packet, i uint32, flags uint8) {
	flowPacket(p, i, flags)
	p.Src, p.Dst = p.Dst, p.Src
	p.SrcPort, p.DstPort = p.DstPort, p.SrcPort
	p.Seq, p.Ack = 5000, 1001
}

// establish opens n TCP flows with a full handshake.
func establish(tb testing.TB, t *Table, n int) {
	var p Packet
	for i := range uint32(n) {
		flowPacket(&p, i, FlagSYN)
		p.Seq = 1000
		if r := t.Track(&p); r.State != StateNew {
			tb.Fatalf("flow %d syn: %v %v", i, r.State, r.Reason)
		}
		replyPacket(&p, i, FlagSYN|FlagACK)
		t.Track(&p)
		flowPacket(&p, i, FlagACK)
		if r := t.Track(&p); r.TCP != TCPEstablished {
			tb.Fatalf("flow %d ack: %v %v", i, r.TCP, r.Reason)
		}
	}
}

// BenchmarkTrackEstablished: lookup and update of an established TCP flow,
// flows visited in random order, against a plain map[Tuple]Entry doing a
// lookup and a counter update of the same flows.
func BenchmarkTrackEstablished(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		order := rand.New(rand.NewPCG(1, 2)).Perm(n)
		b.Run(fmt.Sprintf("table/flows=%d", n), func(b *testing.B) {
			t, pkts := establishedTable(b, n, order)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				k := i % n
				if r := t.Track(&pkts[k]); r.State != StateEstablished {
					b.Fatalf("state %v %v", r.State, r.Reason)
				}
			}
		})
		b.Run(fmt.Sprintf("batch/flows=%d", n), func(b *testing.B) {
			t, pkts := establishedTable(b, n, order)
			out := make([]Result, benchBurst)
			b.ReportAllocs()
			b.ResetTimer()
			// b.N counts packets, taken benchBurst at a time.
			for i := 0; i < b.N; {
				k := i % n
				m := min(benchBurst, b.N-i, n-k)
				t.TrackBatch(pkts[k:k+m], out[:m])
				for _, r := range out[:m] {
					if r.State != StateEstablished {
						b.Fatalf("state %v %v", r.State, r.Reason)
					}
				}
				i += m
			}
		})
		b.Run(fmt.Sprintf("map-baseline/flows=%d", n), func(b *testing.B) {
			m := make(map[Tuple]Entry)
			var p Packet
			now := time.Unix(1e9, 0)
			for i := range uint32(n) {
				flowPacket(&p, i, FlagACK)
				m[p.Tuple()] = Entry{Tuple: p.Tuple(), First: now}
			}
			pkts := ring(order)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				k := i % n
				tu := pkts[k].Tuple()
				e, ok := m[tu]
				if !ok {
					b.Fatal("missing")
				}
				e.Packets[0]++
				e.Bytes[0] += uint64(pkts[k].Length)
				e.Last = now
				m[tu] = e
			}
		})
	}
}

// establishedTable returns a table holding n established flows, and one
// packet of each, in the given order.
func establishedTable(b *testing.B, n int, order []int) (*Table, []Packet) {
	clk := &benchClock{base: time.Unix(1e9, 0)}
	t, err := New(Config{Max: n + n/4, Clock: clk.Now, Seed: 42})
	if err != nil {
		b.Fatal(err)
	}
	establish(b, t, n)
	return t, ring(order)
}

// benchBurst is the packets per TrackBatch call in benchmarks: a receive
// burst of a NIC ring or recvmmsg.
const benchBurst = 64

// ring returns one prebuilt packet per flow, in the given random order, so
// the timed loop measures Track (or the map) and not packet building.
func ring(order []int) []Packet {
	pkts := make([]Packet, len(order))
	for j, f := range order {
		flowPacket(&pkts[j], uint32(f), FlagACK)
	}
	return pkts
}

// BenchmarkTrackEstablishedParallel is the 1M case with every CPU tracking.
func BenchmarkTrackEstablishedParallel(b *testing.B) {
	const n = 1_000_000
	clk := &benchClock{base: time.Unix(1e9, 0)}
	t, err := New(Config{Max: n + n/4, Clock: clk.Now, Seed: 42})
	if err != nil {
		b.Fatal(err)
	}
	establish(b, t, n)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 3))
		var p Packet
		for pb.Next() {
			flowPacket(&p, uint32(r.IntN(n)), FlagACK)
			t.Track(&p)
		}
	})
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemory reports bytes per flow with 1,000,000 established flows
// live, and the time of a forced GC with them live, for the table and for
// the map baseline.
func BenchmarkMemory(b *testing.B) {
	const n = 1_000_000
	b.Run("table", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			before := heapInUse()
			clk := &benchClock{base: time.Unix(1e9, 0)}
			t, err := New(Config{Max: n, Clock: clk.Now, Seed: 42})
			if err != nil {
				b.Fatal(err)
			}
			establish(b, t, n)
			after := heapInUse()
			start := time.Now()
			runtime.GC()
			gc := time.Since(start)
			b.ReportMetric(float64(after-before)/n, "bytes/flow")
			b.ReportMetric(float64(gc.Nanoseconds()), "gc-ns")
			runtime.KeepAlive(t)
		}
	})
	b.Run("map-baseline", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			before := heapInUse()
			m := make(map[Tuple]Entry)
			var p Packet
			now := time.Unix(1e9, 0)
			for i := range uint32(n) {
				flowPacket(&p, i, FlagACK)
				m[p.Tuple()] = Entry{Tuple: p.Tuple(), First: now}
			}
			after := heapInUse()
			start := time.Now()
			runtime.GC()
			gc := time.Since(start)
			b.ReportMetric(float64(after-before)/n, "bytes/flow")
			b.ReportMetric(float64(gc.Nanoseconds()), "gc-ns")
			runtime.KeepAlive(m)
		}
	})
}

// BenchmarkChurn inserts a new UDP flow per op while old ones expire (UDP
// timeout 10 ms of fake time, 1 µs per op: about 10,000 flows live); the
// amortised reaper and early drop of expired entries keep up.
func BenchmarkChurn(b *testing.B) {
	clk := &benchClock{base: time.Unix(1e9, 0)}
	t, err := New(Config{Max: 20_000, Clock: clk.Now, Seed: 42, Timeouts: Timeouts{UDP: 10 * time.Millisecond}})
	if err != nil {
		b.Fatal(err)
	}
	var p Packet
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		flowPacket(&p, uint32(i), 0)
		p.Proto = ProtoUDP
		if r := t.Track(&p); r.State != StateNew {
			b.Fatalf("op %d: %v %v (len %d)", i, r.State, r.Reason, t.Len())
		}
		clk.Advance(time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	b.ReportMetric(float64(t.Len()), "live")
}
