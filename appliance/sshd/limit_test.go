package sshd

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestLimiter(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	a := netip.MustParseAddr("192.0.2.7")
	b := netip.MustParseAddr("192.0.2.8")
	v6 := netip.MustParseAddr("2001:db8:1:2::1")
	v6same := netip.MustParseAddr("2001:db8:1:2:ffff::9") // same /64
	v6other := netip.MustParseAddr("2001:db8:1:3::1")
	mapped := netip.MustParseAddr("::ffff:192.0.2.7")

	// event is one call: a failure, or a check whether the address is refused.
	type event struct {
		Fail  bool
		Addr  netip.Addr
		At    time.Time
		Start bool // Fail: starts a refusal
		// check:
		Refused, Report bool
	}
	fail := func(addr netip.Addr, at time.Time, start bool) event {
		return event{Fail: true, Addr: addr, At: at, Start: start}
	}
	check := func(addr netip.Addr, at time.Time, refused, report bool) event {
		return event{Addr: addr, At: at, Refused: refused, Report: report}
	}

	for _, tc := range []struct {
		name   string
		events []event
	}{
		{"below the limit", []event{
			fail(a, at(0), false), fail(a, at(1), false),
			check(a, at(2), false, false),
		}},
		{"the limit refuses for the window, reported once", []event{
			fail(a, at(0), false), fail(a, at(1), false), fail(a, at(2), true),
			check(a, at(2), true, true),
			check(a, at(30), true, false),
			check(a, at(61), true, false),
			check(a, at(62), false, false),
		}},
		{"other addresses are not refused", []event{
			fail(a, at(0), false), fail(a, at(1), false), fail(a, at(2), true),
			check(b, at(3), false, false),
		}},
		{"failures older than the window are forgotten", []event{
			fail(a, at(0), false), fail(a, at(1), false), fail(a, at(60), false), fail(a, at(61), false),
			check(a, at(61), false, false),
			fail(a, at(62), true),
			check(a, at(62), true, true),
		}},
		{"failures while refused are not counted", []event{
			fail(a, at(0), false), fail(a, at(1), false), fail(a, at(2), true),
			fail(a, at(10), false), fail(a, at(20), false),
			check(a, at(62), false, false),
			fail(a, at(63), false), fail(a, at(64), false),
			check(a, at(64), false, false),
			fail(a, at(65), true),
			check(a, at(65), true, true),
		}},
		{"a new refusal is reported again", []event{
			fail(a, at(0), false), fail(a, at(1), false), fail(a, at(2), true),
			check(a, at(3), true, true),
			fail(a, at(70), false), fail(a, at(71), false), fail(a, at(72), true),
			check(a, at(73), true, true),
		}},
		{"IPv6 counts per /64", []event{
			fail(v6, at(0), false), fail(v6same, at(1), false), fail(v6, at(2), true),
			check(v6same, at(3), true, true),
			check(v6other, at(3), false, false),
		}},
		{"IPv4-mapped addresses count as IPv4", []event{
			fail(mapped, at(0), false), fail(a, at(1), false), fail(mapped, at(2), true),
			check(a, at(3), true, true),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLimiter(3, time.Minute)
			var got []event
			for _, e := range tc.events {
				g := e
				if e.Fail {
					g.Start = l.fail(e.Addr, e.At)
				} else {
					g.Refused, g.Report = l.refused(e.Addr, e.At)
				}
				got = append(got, g)
			}
			if diff := cmp.Diff(tc.events, got, cmpopts.EquateComparable(netip.Addr{}), cmp.Comparer(func(x, y time.Time) bool { return x.Equal(y) })); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLimiterSweep(t *testing.T) {
	l := newLimiter(3, time.Minute)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	old := netip.MustParseAddr("198.51.100.1")
	for range 3 {
		l.fail(old, t0) // refused until t0+1m
	}
	for i := range sweepAt {
		l.fail(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), t0.Add(time.Second))
	}
	if got := len(l.nets); got != sweepAt+1 {
		t.Fatalf("%d networks before the sweep, want %d", got, sweepAt+1)
	}
	l.fail(netip.MustParseAddr("203.0.113.1"), t0.Add(2*time.Minute))
	if got, want := len(l.nets), 1; got != want {
		t.Errorf("%d networks after the sweep, want %d", got, want)
	}
}
