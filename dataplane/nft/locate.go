package nft

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Refused names the rule a transaction failed on, for tying the kernel's
// complaint to the policy line it came from.
type Refused struct {
	Chain   string
	Text    string // the rule in nft syntax
	Comment string // "ID name" of the policy rule, or "" for a structural rule
	Err     error  // the kernel's answer to the rule
}

// Locate finds the first rule of rs the kernel refuses. It loads prefixes
// of the ruleset, bisecting, into a new, empty network namespace that no
// traffic can reach, and returns nil when the whole ruleset loads there (the
// failure was not in a rule: sets, or this namespace's state). It costs
// about log2(rules) transactions and is meant for after a failed Apply.
func Locate(rs *Ruleset, timeout time.Duration) (*Refused, error) {
	type result struct {
		r   *Refused
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{err: fmt.Errorf("open own netns: %w", err)}
			return
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("unshare a scratch netns: %w", err)}
			return
		}
		r, err := bisect(rs, timeout)
		if serr := unix.Setns(orig, unix.CLONE_NEWNET); serr != nil {
			// The thread stays locked and dies with this goroutine, rather
			// than serving others from the scratch namespace.
			done <- result{err: fmt.Errorf("leave the scratch netns: %w", serr)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{r, err}
	}()
	res := <-done
	return res.r, res.err
}

// bisect runs in the scratch namespace.
func bisect(rs *Ruleset, timeout time.Duration) (*Refused, error) {
	total := 0
	for _, c := range rs.chains {
		total += len(c.rules)
	}
	try := func(n int) error {
		conn, err := Dial(-1, timeout)
		if err != nil {
			return err
		}
		return Apply(conn, rs.prefix(n))
	}
	if err := try(total); err == nil {
		return nil, nil
	}
	if err := try(0); err != nil {
		return &Refused{Err: err}, nil // the sets or counters, before any rule
	}
	lo, hi := 0, total // try(lo) succeeds, try(hi) fails
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if try(mid) == nil {
			lo = mid
		} else {
			hi = mid
		}
	}
	chain, r := rs.rule(hi - 1)
	return &Refused{Chain: chain, Text: r.p.text, Comment: r.comment, Err: try(hi)}, nil
}

// prefix returns a copy of rs with only its first n rules, counted across
// chains in order; counters, sets and chains stay.
func (rs *Ruleset) prefix(n int) *Ruleset {
	out := &Ruleset{Counters: rs.Counters, sets: rs.sets}
	for _, c := range rs.chains {
		k := min(n, len(c.rules))
		out.chains = append(out.chains, &chain{name: c.name, base: c.base, rules: c.rules[:k]})
		n -= k
	}
	return out
}

// rule returns the i-th rule across chains, with its chain's name.
func (rs *Ruleset) rule(i int) (string, rule) {
	for _, c := range rs.chains {
		if i < len(c.rules) {
			return c.name, c.rules[i]
		}
		i -= len(c.rules)
	}
	return "", rule{}
}
