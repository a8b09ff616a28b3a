package conntrack

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestUDPAssure(t *testing.T) {
	tb, clk := newTable(t, 100)
	out := udpPkt("192.0.2.1", 5353, "198.51.100.7", 53)
	back := udpPkt("198.51.100.7", 53, "192.0.2.1", 5353)
	type want struct {
		state            State
		replied, assured bool
		timeout          time.Duration
	}
	steps := []struct {
		name    string
		pkt     *Packet
		advance time.Duration
		want    want
	}{
		{"first", out, 0, want{StateNew, false, false, 30 * time.Second}},
		{"again before any reply", out, time.Second, want{StateNew, false, false, 30 * time.Second}},
		{"reply", back, 0, want{StateEstablished, true, false, 30 * time.Second}},
		{"within two seconds", out, 500 * time.Millisecond, want{StateEstablished, true, false, 30 * time.Second}},
		{"stream", back, 2 * time.Second, want{StateEstablished, true, true, 120 * time.Second}},
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		res := tb.Track(s.pkt)
		e, ok := tb.Get(out.Tuple())
		if !ok {
			t.Fatalf("%s: entry missing", s.name)
		}
		got := want{res.State, e.Replied, e.Assured, e.Expires.Sub(e.Last)}
		if diff := cmp.Diff(s.want, got, cmp.AllowUnexported(want{})); diff != "" {
			t.Fatalf("%s: (-want +got)\n%s", s.name, diff)
		}
	}
	e, _ := tb.Get(back.Tuple())
	if got, want := e.Packets, [2]uint64{3, 2}; got != want {
		t.Errorf("Packets = %v, want %v", got, want)
	}
	if got, want := e.Tuple, out.Tuple(); got != want {
		t.Errorf("original tuple = %+v, want %+v", got, want)
	}
	// Expiry: past the stream timeout the flow is gone after reaping.
	clk.Advance(121 * time.Second)
	tb.Reap(1 << 10)
	if got := tb.Len(); got != 0 {
		t.Errorf("Len after expiry = %d, want 0", got)
	}
}

func TestICMP(t *testing.T) {
	for _, fam := range []struct {
		name, a, b                string
		req, rep, unreach, advert uint8
	}{
		{"v4", "192.0.2.1", "198.51.100.7", 8, 0, 3, 9},
		{"v6", "2001:db8::1", "2001:db8::7", 128, 129, 1, 134},
	} {
		t.Run(fam.name, func(t *testing.T) {
			tb, clk := newTable(t, 100)
			udp := udpPkt(fam.a, 1000, fam.b, 2000)
			errFor := func(q *Packet) *Packet {
				p := icmpPkt(fam.b, fam.a, fam.unreach, 0)
				p.Quoted, p.HasQuoted = q.Tuple(), true
				return p
			}
			steps := []struct {
				name string
				pkt  *Packet
				want Result
			}{
				{"reply without request", icmpPkt(fam.b, fam.a, fam.rep, 7), Result{State: StateInvalid, Reason: ReasonICMPReplyUntracked}},
				{"request", icmpPkt(fam.a, fam.b, fam.req, 7), Result{State: StateNew}},
				{"reply", icmpPkt(fam.b, fam.a, fam.rep, 7), Result{State: StateEstablished, Dir: DirReply}},
				{"not a query, same id", icmpPkt(fam.b, fam.a, fam.advert, 7), Result{State: StateInvalid, Reason: ReasonICMPNotEcho, Dir: DirReply}},
				{"reply other id", icmpPkt(fam.b, fam.a, fam.rep, 8), Result{State: StateInvalid, Reason: ReasonICMPReplyUntracked}},
				{"error quoting nothing", errFor(udp), Result{State: StateInvalid, Reason: ReasonICMPErrorUntracked}},
				{"udp", udp, Result{State: StateNew}},
				{"error quoting the udp flow", errFor(udp), Result{State: StateRelated, Dir: DirReply}},
				{"error without quote", icmpPkt(fam.b, fam.a, fam.unreach, 0), Result{State: StateInvalid, Reason: ReasonICMPErrorUntracked}},
			}
			for _, s := range steps {
				got := tb.Track(s.pkt)
				got.Ref = Ref{}
				if diff := cmp.Diff(s.want, got, cmp.AllowUnexported(Ref{})); diff != "" {
					t.Fatalf("%s: (-want +got)\n%s", s.name, diff)
				}
			}
			clk.Advance(31 * time.Second)
			if got := tb.Track(errFor(udp)); got.State != StateInvalid {
				t.Errorf("error quoting an expired flow: %v, want invalid", got.State)
			}
		})
	}
}

func TestEvictionAtMax(t *testing.T) {
	tb, clk := newTable(t, 3)
	assure := func(i int) {
		a, b := fmt.Sprintf("10.0.1.%d", i), "10.9.9.9"
		tb.Track(udpPkt(a, 1, b, 2))
		tb.Track(udpPkt(b, 2, a, 1))
		clk.Advance(3 * time.Second)
		tb.Track(udpPkt(a, 1, b, 2))
	}
	assure(1)
	clk.Advance(time.Second)
	tb.Track(udpPkt("10.0.2.1", 1, "10.9.9.9", 2)) // unreplied, older
	clk.Advance(time.Second)
	tb.Track(udpPkt("10.0.2.2", 1, "10.9.9.9", 2)) // unreplied, newer
	clk.Advance(time.Second)
	if got := tb.Track(udpPkt("10.0.3.1", 1, "10.9.9.9", 2)); got.State != StateNew {
		t.Fatalf("new flow at max: %v (%v), want new", got.State, got.Reason)
	}
	if got := tb.Len(); got != 3 {
		t.Fatalf("Len = %d, want 3", got)
	}
	if _, ok := tb.Get(udpPkt("10.0.2.1", 1, "10.9.9.9", 2).Tuple()); ok {
		t.Error("the oldest unreplied flow survived; want it dropped early")
	}
	for _, src := range []string{"10.0.1.1", "10.0.2.2", "10.0.3.1"} {
		if _, ok := tb.Get(udpPkt(src, 1, "10.9.9.9", 2).Tuple()); !ok {
			t.Errorf("flow from %s dropped; want kept", src)
		}
	}
	if got := tb.Stats().EarlyDropped; got != 1 {
		t.Errorf("EarlyDropped = %d, want 1", got)
	}
}

func TestRefuseWhenFullOfAssured(t *testing.T) {
	tb, clk := newTable(t, 4)
	for i := range 4 {
		a := fmt.Sprintf("10.0.1.%d", i)
		tb.Track(udpPkt(a, 1, "10.9.9.9", 2))
		tb.Track(udpPkt("10.9.9.9", 2, a, 1))
	}
	clk.Advance(3 * time.Second)
	for i := range 4 {
		tb.Track(udpPkt(fmt.Sprintf("10.0.1.%d", i), 1, "10.9.9.9", 2))
	}
	got := tb.Track(udpPkt("10.0.5.5", 1, "10.9.9.9", 2))
	if got.State != StateInvalid || got.Reason != ReasonTableFull {
		t.Fatalf("new flow in a table full of assured: %v (%v), want invalid (%v)", got.State, got.Reason, ReasonTableFull)
	}
	st := tb.Stats()
	if st.Refused != 1 || st.Invalid[ReasonTableFull] != 1 || st.EarlyDropped != 0 || tb.Len() != 4 {
		t.Errorf("stats %+v Len %d; want 1 refused, 0 dropped, Len 4", st, tb.Len())
	}
	// Once they expire there is room again.
	clk.Advance(121 * time.Second)
	if got := tb.Track(udpPkt("10.0.5.5", 1, "10.9.9.9", 2)); got.State != StateNew {
		t.Errorf("after expiry: %v (%v), want new", got.State, got.Reason)
	}
}

func TestExpiredEntryIsNew(t *testing.T) {
	tb, clk := newTable(t, 10)
	p := udpPkt("10.0.0.1", 1, "10.0.0.2", 2)
	tb.Track(p)
	tb.Track(udpPkt("10.0.0.2", 2, "10.0.0.1", 1))
	clk.Advance(31 * time.Second)
	if got := tb.Track(p); got.State != StateNew {
		t.Errorf("packet of an expired flow: %v, want new", got.State)
	}
	if got := tb.Stats().Expired; got != 1 {
		t.Errorf("Expired = %d, want 1", got)
	}
}

func TestVerdictCacheAndDelete(t *testing.T) {
	tb, _ := newTable(t, 10)
	p := udpPkt("10.0.0.1", 1, "10.0.0.2", 2)
	r := tb.Track(p)
	if !tb.SetVerdict(r.Ref, 1, 42) {
		t.Fatal("SetVerdict on a live entry = false")
	}
	got := tb.Track(udpPkt("10.0.0.2", 2, "10.0.0.1", 1))
	if got.Verdict != 1 || got.Rule != 42 {
		t.Errorf("reply carries verdict %d rule %d, want 1 42", got.Verdict, got.Rule)
	}
	if !tb.Delete(p.Tuple().Reverse()) {
		t.Fatal("Delete by the reply tuple = false")
	}
	if tb.SetVerdict(r.Ref, 2, 43) {
		t.Error("SetVerdict on a deleted entry = true")
	}
	tb.Track(p) // reuses the slot with a new generation
	if tb.SetVerdict(r.Ref, 2, 43) {
		t.Error("SetVerdict with a stale ref on a reused slot = true")
	}
}

func TestEvents(t *testing.T) {
	clk := newFakeClock()
	tb, err := New(Config{Max: 10, Clock: clk.Now, Events: 3})
	if err != nil {
		t.Fatal(err)
	}
	p := udpPkt("10.0.0.1", 1, "10.0.0.2", 2)
	tb.Track(p)                                    // new
	tb.Track(p)                                    // nothing changed: no event
	tb.Track(udpPkt("10.0.0.2", 2, "10.0.0.1", 1)) // update (replied)
	tb.Delete(p.Tuple())                           // destroy
	tb.Track(udpPkt("10.0.0.3", 1, "10.0.0.2", 2)) // new: channel full, dropped
	var got []EventKind
	for range 3 {
		got = append(got, (<-tb.Events()).Kind)
	}
	if diff := cmp.Diff([]EventKind{EventNew, EventUpdate, EventDestroy}, got); diff != "" {
		t.Errorf("events (-want +got)\n%s", diff)
	}
	if got := tb.Stats().EventsDropped; got != 1 {
		t.Errorf("EventsDropped = %d, want 1", got)
	}
}

func TestRangeBothDirections(t *testing.T) {
	tb, _ := newTable(t, 1000)
	want := map[Tuple]bool{}
	for i := range 200 {
		p := udpPkt(fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), uint16(1000+i), "10.9.9.9", 53)
		tb.Track(p)
		want[p.Tuple()] = true
	}
	n := 0
	tb.Range(func(e Entry) bool {
		n++
		if !want[e.Tuple] {
			t.Errorf("Range gave unknown tuple %+v", e.Tuple)
		}
		if _, ok := tb.Get(e.Tuple.Reverse()); !ok {
			t.Errorf("entry not found by its reply tuple")
		}
		return true
	})
	if n != 200 || len(tb.Snapshot()) != 200 {
		t.Errorf("Range saw %d entries, want 200", n)
	}
}

func TestNoAllocs(t *testing.T) {
	tb, _ := newTable(t, 1000)
	pkts := []*Packet{c2s(FlagSYN, 100, 0, 0), s2c(SA, 300, 101, 0), c2s(FlagACK, 101, 301, 0)}
	for _, p := range pkts {
		tb.Track(p)
	}
	data := c2s(PA, 101, 301, 0)
	u := udpPkt("10.0.0.1", 1, "10.0.0.2", 2)
	tb.Track(u)
	if n := testing.AllocsPerRun(1000, func() {
		tb.Track(data)
		tb.Track(u)
	}); n != 0 {
		t.Errorf("Track of existing flows: %v allocs, want 0", n)
	}
}

// concurrentTable is a table of at most 20,000 flows on a fake clock,
// whose events something drains.
func concurrentTable(t *testing.T) (*Table, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	tb, err := New(Config{Max: 20000, Clock: clk.Now, Seed: 1, Events: 64})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range tb.Events() {
		}
	}()
	return tb, clk
}

// checkWhole requires tb within its maximum, every entry found from its
// reply side too, and Range to see as many entries as Len counts.
func checkWhole(t *testing.T, tb *Table) {
	t.Helper()
	if tb.Len() > 20000 {
		t.Errorf("Len = %d over Max", tb.Len())
	}
	seen := 0
	tb.Range(func(e Entry) bool {
		if _, ok := tb.Get(e.Tuple.Reverse()); !ok {
			t.Errorf("entry %+v not found from the reply side", e.Tuple)
		}
		seen++
		return true
	})
	if seen != tb.Len() {
		t.Errorf("Range saw %d, Len %d", seen, tb.Len())
	}
}

func TestConcurrent(t *testing.T) {
	tb, clk := concurrentTable(t)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				a := fmt.Sprintf("10.%d.%d.%d", w, i/250, i%250+1)
				tb.Track(udpPkt(a, uint16(i), "10.200.0.1", 53))
				tb.Track(udpPkt("10.200.0.1", 53, a, uint16(i)))
				if i%100 == 0 {
					clk.Advance(time.Second)
					tb.Reap(50)
					tb.Range(func(Entry) bool { return false })
				}
			}
		}()
	}
	wg.Wait()
	checkWhole(t, tb)
}

// A clock that reads zero until the first packet (a replay clock reading
// the current packet's time) still tracks flows.
func TestReplayClockStartsAtZero(t *testing.T) {
	var now time.Time
	tb, err := New(Config{Max: 16, Clock: func() time.Time { return now }, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	if r := tb.Track(tcpPkt("10.0.0.1", 40000, "10.0.0.2", 80, FlagSYN, 100, 0, 0)); r.State != StateNew {
		t.Fatalf("SYN: %v (%v), want new", r.State, r.Reason)
	}
	now = now.Add(time.Millisecond)
	if r := tb.Track(tcpPkt("10.0.0.2", 80, "10.0.0.1", 40000, FlagSYN|FlagACK, 300, 101, 0)); r.State != StateEstablished {
		t.Errorf("SYN/ACK: %v (%v), want established: the flow must still be there", r.State, r.Reason)
	}
}
