package conntrack

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// burst is packets that arrive together, after the clock advanced: one
// TrackBatch call, or several when the test splits it.
type burst struct {
	advance time.Duration
	pkts    []*Packet
}

// run is what a table said and did over a packet sequence.
type run struct {
	Results []Result
	Events  []Event
	Stats   Stats
	Entries []Entry
}

var cmpRun = cmp.AllowUnexported(Ref{})

func (r *run) equal(o *run) bool {
	return slices.Equal(r.Results, o.Results) && slices.Equal(r.Events, o.Events) &&
		r.Stats == o.Stats && slices.Equal(r.Entries, o.Entries)
}

// trackRun feeds the bursts to a new table of the given Max, packet by
// packet with Track when per is 0, else with TrackBatch, per packets a call.
func trackRun(t testing.TB, max int, bursts []burst, per int) run {
	t.Helper()
	clk := newFakeClock()
	n := 0
	for _, b := range bursts {
		n += len(b.pkts)
	}
	// Room for every event: a packet emits at most a destroy for an entry
	// it found expired or reopens, one for an early drop, its own new or
	// update, and reapNew destroys.
	tb, err := New(Config{Max: max, Clock: clk.Now, Seed: 0x5eed, Events: (reapNew+3)*n + 1})
	if err != nil {
		t.Fatal(err)
	}
	var r run
	var ps []Packet
	for _, b := range bursts {
		clk.Advance(b.advance)
		if per == 0 {
			for _, p := range b.pkts {
				r.Results = append(r.Results, tb.Track(p))
			}
			continue
		}
		ps = ps[:0]
		for _, p := range b.pkts {
			ps = append(ps, *p)
		}
		for len(ps) > 0 {
			n := min(per, len(ps))
			out := make([]Result, n)
			tb.TrackBatch(ps[:n], out)
			r.Results = append(r.Results, out...)
			ps = ps[n:]
		}
	}
	for len(tb.Events()) > 0 {
		r.Events = append(r.Events, <-tb.Events())
	}
	if d := tb.Stats().EventsDropped; d != 0 {
		t.Fatalf("%d events dropped: the channel is too small for the test", d)
	}
	r.Stats = tb.Stats()
	r.Entries = tb.Snapshot()
	return r
}

// checkBatch fails unless TrackBatch, in calls of several sizes, answers
// every packet, emits every event and leaves the table as Track does. It
// returns what Track did.
func checkBatch(t *testing.T, max int, bursts []burst) run {
	t.Helper()
	want := trackRun(t, max, bursts, 0)
	for _, per := range []int{1, 3, batchGroup, batchGroup + 1, 1 << 20} {
		got := trackRun(t, max, bursts, per)
		if got.equal(&want) {
			continue // cmp.Diff finds nothing either, slowly: the fuzz target runs this
		}
		if diff := cmp.Diff(want, got, cmpRun); diff != "" {
			t.Fatalf("TrackBatch, %d packets a call, against Track (-want +got)\n%s", per, diff)
		}
	}
	return want
}

func TestTrackBatchEqualsTrack(t *testing.T) {
	udpFlows := func(n int, reply bool) []*Packet {
		var ps []*Packet
		for i := range n {
			a := fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)
			p := udpPkt(a, uint16(1000+i), "10.9.9.9", 53)
			if reply {
				p = udpPkt("10.9.9.9", 53, a, uint16(1000+i))
			}
			ps = append(ps, p)
		}
		return ps
	}
	shuffle := func(ps []*Packet) []*Packet {
		ps = append([]*Packet(nil), ps...)
		rand.New(rand.NewPCG(7, 8)).Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
		return ps
	}
	udp := udpPkt("10.0.0.1", 1, "10.0.0.2", 2)
	back := udpPkt("10.0.0.2", 2, "10.0.0.1", 1)
	errFor := func(q *Packet) *Packet {
		tu := q.Tuple()
		p := icmpPkt(tu.DstAddr().String(), tu.SrcAddr().String(), 3, 0)
		p.Quoted, p.HasQuoted = q.Tuple(), true
		return p
	}
	bad := udpPkt("10.0.0.1", 1, "10.0.0.2", 2)
	bad.Bad = ReasonTruncated
	noFamily := udpPkt("10.0.0.1", 1, "10.0.0.2", 2)
	noFamily.Family = 5
	sctp := udpPkt("10.0.0.1", 1, "10.0.0.2", 2)
	sctp.Proto = 132
	icmpOn6 := icmpPkt("10.0.0.1", "10.0.0.2", 8, 1)
	icmpOn6.Proto = ProtoICMPv6
	errOtherFamily := errFor(udp)
	errOtherFamily.Quoted.Family = IPv6
	errNoQuote := icmpPkt("10.0.0.2", "10.0.0.1", 3, 0)

	var covered Stats // what the cases made Track do, summed
	states := map[State]bool{}
	for _, tc := range []struct {
		name   string
		max    int
		bursts []burst
	}{
		{"tcp handshake, data and close in one batch", 100, []burst{{0, []*Packet{
			c2s(FlagSYN, 100, 0, 0), s2c(SA, 300, 101, 0), c2s(FlagACK, 101, 301, 0),
			c2s(PA, 101, 301, 10), s2c(PA, 301, 111, 20), c2s(FA, 111, 321, 0),
			s2c(FA, 321, 112, 0), c2s(FlagACK, 112, 322, 0), c2s(FlagSYN, 9000, 0, 0),
		}}}},
		{"one flow many times, both directions", 100, []burst{{0, []*Packet{
			udp, udp, udp, back, udp, back, back, udp, udp, udp, udp, udp, udp, udp, udp, udp, udp, back,
		}}}},
		{"tcp out of window, invalid flags, RST before reply", 100, []burst{{0, []*Packet{
			c2s(FlagACK, 100, 0, 0), c2s(FlagSYN, 100, 0, 0), c2s(FlagSYN|FlagFIN, 100, 0, 0),
			s2c(SA, 300, 101, 0), c2s(FlagACK, 101, 301, 0), c2s(PA, 1<<30, 301, 10),
			s2c(PA, 301, 1<<30, 10), c2s(FlagRST, 111, 0, 0), c2s(FlagSYN, 500, 0, 0),
			c2s(FlagRST, 501, 0, 0), s2c(SA, 300, 501, 0),
			tcpPkt(cli, cport+1, srv, sport, FlagSYN, 500, 0, 0), tcpPkt(cli, cport+1, srv, sport, FlagRST, 501, 0, 0),
			tcpPkt(srv, sport, cli, cport+1, SA, 300, 501, 0),
		}}}},
		{"invalid packets and ICMP", 100, []burst{{0, []*Packet{
			bad, noFamily, sctp, icmpOn6, errFor(udp), udp, errFor(udp), errFor(back),
			errOtherFamily, errNoQuote, icmpPkt("10.0.0.2", "10.0.0.1", 0, 7),
			icmpPkt("10.0.0.1", "10.0.0.2", 8, 7), icmpPkt("10.0.0.2", "10.0.0.1", 0, 7),
			icmpPkt("10.0.0.2", "10.0.0.1", 9, 7), icmpPkt("2001:db8::1", "2001:db8::2", 128, 7),
			icmpPkt("2001:db8::2", "2001:db8::1", 129, 7), errFor(udpPkt("2001:db8::1", 5, "2001:db8::2", 6)),
		}}}},
		{"many flows over many shards", 100_000, []burst{
			{0, udpFlows(300, false)},
			{time.Second, shuffle(append(udpFlows(300, true), udpFlows(300, false)...))},
			{3 * time.Second, shuffle(udpFlows(300, true))},
		}},
		{"full table: early drop", 4, []burst{
			{0, []*Packet{udp, back}},
			{3 * time.Second, append([]*Packet{udp}, udpFlows(10, false)...)},
			{0, append(udpFlows(6, true), udpFlows(10, false)...)},
		}},
		{"full of assured flows: refusal", 4, []burst{
			{0, append(udpFlows(4, false), udpFlows(4, true)...)},
			{3 * time.Second, append(udpFlows(4, false), udp, back, udp, udpFlows(5, true)[4])},
		}},
		{"expiry between batches", 1000, []burst{
			{0, append([]*Packet{udp, back, c2s(FlagSYN, 100, 0, 0)}, udpFlows(40, false)...)},
			{31 * time.Second, append([]*Packet{errFor(udp), udp, c2s(FlagACK, 101, 301, 0)}, udpFlows(40, true)...)},
			{200 * time.Second, append([]*Packet{back, s2c(SA, 300, 101, 0)}, udpFlows(40, false)...)},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := checkBatch(t, tc.max, tc.bursts)
			covered.Expired += r.Stats.Expired
			covered.EarlyDropped += r.Stats.EarlyDropped
			covered.Refused += r.Stats.Refused
			covered.Deleted += r.Stats.Deleted
			for _, res := range r.Results {
				states[res.State] = true
			}
		})
	}
	// The cases are evidence only if they reach every path of Track.
	if covered.Expired == 0 || covered.EarlyDropped == 0 || covered.Refused == 0 || covered.Deleted == 0 || len(states) != 4 {
		t.Errorf("cases cover too little: %+v, states %v", covered, states)
	}
}

func TestTrackBatchShortOut(t *testing.T) {
	tb, _ := newTable(t, 10)
	defer func() {
		if recover() == nil {
			t.Error("TrackBatch with out shorter than ps did not panic")
		}
	}()
	tb.TrackBatch(make([]Packet, 2), make([]Result, 1))
}

func TestTrackBatchNoAllocs(t *testing.T) {
	tb, _ := newTable(t, 1000)
	ps := []Packet{*c2s(FlagSYN, 100, 0, 0), *s2c(SA, 300, 101, 0), *c2s(FlagACK, 101, 301, 0),
		*udpPkt("10.0.0.1", 1, "10.0.0.2", 2)}
	out := make([]Result, 128)
	tb.TrackBatch(ps, out)
	ps = ps[:0]
	for i := range 40 {
		ps = append(ps, *c2s(PA, 101, 301, 0), *udpPkt("10.0.0.2", 2, "10.0.0.1", 1))
		if i%8 == 0 {
			ps = append(ps, Packet{Bad: ReasonTruncated})
		}
	}
	if n := testing.AllocsPerRun(1000, func() {
		tb.TrackBatch(ps, out[:len(ps)])
	}); n != 0 {
		t.Errorf("TrackBatch of existing flows: %v allocs, want 0", n)
	}
}

// TrackBatch holds several shard locks at once while Track, Delete, Reap and
// Range run beside it: no deadlock, no race (go test -race), and the table
// stays whole.
func TestTrackBatchConcurrent(t *testing.T) {
	tb, clk := concurrentTable(t)
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			ps := make([]Packet, 0, 64)
			res := make([]Result, 64)
			for i := range 2000 {
				a := fmt.Sprintf("10.%d.%d.%d", w%3, i/250, i%250+1)
				req, rep := udpPkt(a, uint16(i), "10.200.0.1", 53), udpPkt("10.200.0.1", 53, a, uint16(i))
				if w%2 == 1 {
					tb.Track(req)
					tb.Track(rep)
				} else {
					ps = append(ps, *req, *rep)
					if len(ps) == cap(ps) {
						tb.TrackBatch(ps, res[:len(ps)])
						ps = ps[:0]
					}
				}
				if i%100 == 0 {
					clk.Advance(time.Second)
					tb.Reap(50)
					tb.Delete(req.Tuple())
					tb.Range(func(Entry) bool { return false })
				}
			}
		})
	}
	wg.Wait()
	checkWhole(t, tb)
}
