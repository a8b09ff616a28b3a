package sshd

import (
	"net/netip"
	"sync"
	"time"
)

// sweepAt is how many client networks the limiter holds before a failure
// also forgets those whose failures and refusal have all expired.
const sweepAt = 1024

// limiter counts failed logins per client network: an IPv4 address, or an
// IPv6 /64, which one client usually holds whole. When a network reaches
// limit failures within window, it is refused for window; then its count
// starts again from zero. Its methods may be called concurrently.
type limiter struct {
	limit  int
	window time.Duration

	mu   sync.Mutex
	nets map[netip.Prefix]*record
}

// record is one client network's recent failures.
type record struct {
	fails    []time.Time // within window of the last failure, oldest first; fewer than limit
	until    time.Time   // refused before this
	reported bool        // a refusal since until was set has been reported
}

func newLimiter(limit int, window time.Duration) *limiter {
	return &limiter{limit: limit, window: window, nets: make(map[netip.Prefix]*record)}
}

// clientNet returns the network a client address is counted in; the zero
// Prefix for the zero Addr.
func clientNet(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64) // the zero Prefix for an invalid address
	return p
}

// fail counts one failed login from a at now, and returns true when it
// starts a refusal. Failures while a is refused are not counted.
func (l *limiter) fail(a netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.nets) >= sweepAt {
		l.sweep(now)
	}
	key := clientNet(a)
	r := l.nets[key]
	if r == nil {
		r = &record{}
		l.nets[key] = r
	}
	if now.Before(r.until) {
		return false
	}
	kept := r.fails[:0]
	for _, t := range r.fails {
		if now.Sub(t) < l.window {
			kept = append(kept, t)
		}
	}
	r.fails = append(kept, now)
	if len(r.fails) < l.limit {
		return false
	}
	r.fails = r.fails[:0]
	r.until = now.Add(l.window)
	r.reported = false
	return true
}

// refused says whether a is refused at now, and whether this is the first
// refusal since it began, which the caller reports.
func (l *limiter) refused(a netip.Addr, now time.Time) (refused, report bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.nets[clientNet(a)]
	if r == nil || !now.Before(r.until) {
		return false, false
	}
	report = !r.reported
	r.reported = true
	return true, report
}

// sweep forgets the networks with nothing left to remember at now.
// l.mu is held.
func (l *limiter) sweep(now time.Time) {
	for key, r := range l.nets {
		if now.Before(r.until) {
			continue
		}
		if n := len(r.fails); n > 0 && now.Sub(r.fails[n-1]) < l.window {
			continue
		}
		delete(l.nets, key)
	}
}
