package conntrack

import "math/bits"

// batchGroup is how many packets TrackBatch takes through its phases
// together: enough independent misses to fill the core's miss buffers, few
// enough that their loads fit its out-of-order window and that a group
// holds few locks. Measured at a million flows (batch benchmark, 2-core
// VM): 4 about 170 ns a packet, 8 about 145, 16 and 32 about 130.
const batchGroup = 16

// TrackBatch tracks ps[i] as Track would and writes its answer to out[i],
// for every i in order: the results and the table afterwards are those of
// calling Track on each packet in turn, packets of one flow or one shard
// within the batch included. out must be at least as long as ps. The clock
// is read once per call: every packet of a batch is tracked at that time.
// It allocates nothing for packets of existing flows.
//
// It is faster than Track on a table larger than the CPU's caches: it
// takes the packets in groups, and for a group it loads every packet's
// index word, then every packet's entry, before tracking any of them, so
// the group's cache and TLB misses overlap instead of following one
// another. It holds the shard locks of one group at once (see Table).
func (t *Table) TrackBatch(ps []Packet, out []Result) {
	if len(out) < len(ps) {
		panic("conntrack: TrackBatch: out is shorter than ps") // the caller's bug, not bad input
	}
	if len(ps) == 0 {
		return // no packet, no clock reading
	}
	now := t.now()
	for len(ps) > 0 {
		n := min(len(ps), batchGroup)
		t.trackGroup(ps[:n], out[:n], now)
		ps, out = ps[n:], out[n:]
	}
}

// pending is one packet of a group between TrackBatch's phases.
type pending struct {
	k   flowKey
	h   uint64
	s   *shard // nil for a packet invalid on its own
	rev bool
	op  op
	why Reason
}

// trackGroup is TrackBatch for at most batchGroup packets, in four phases:
// keys and hashes, with no lock held; then, holding the group's shard
// locks, a load of each packet's index word at its home position; a walk of
// each probe to the first word with the packet's tag and a load of both
// cache lines of the entry it names; and the packets tracked in order. The
// loads of one phase do not depend on each other, so their misses overlap,
// and the last phase finds its lines in the cache.
func (t *Table) trackGroup(ps []Packet, out []Result, now int64) {
	var arr [batchGroup]pending
	g, out := arr[:len(ps)], out[:len(ps)]
	var locks uint64 // bit i: the group holds t.shards[i].mu
	for i := range ps {
		q := &g[i]
		q.op, q.rev, q.why = prepare(&ps[i], &q.k)
		if q.op == opInvalid {
			continue
		}
		q.h = q.k.hash(t.seed)
		si := t.shardIndex(q.h)
		q.s = &t.shards[si]
		locks |= 1 << si
	}
	// Lock order: increasing shard index (Table).
	for m := locks; m != 0; m &= m - 1 {
		t.shards[bits.TrailingZeros64(m)].mu.Lock()
	}
	var warm uint64
	for i := range g {
		if q := &g[i]; q.s != nil {
			warm += uint64(q.s.idx[uint32(q.h)&uint32(len(q.s.idx)-1)])
		}
	}
	for i := range g {
		if q := &g[i]; q.s != nil {
			warm += q.s.touch(q.h)
		}
	}
	for i := range ps {
		q := &g[i]
		res := &out[i]
		if q.op == opInvalid {
			*res = Result{State: StateInvalid, Reason: q.why}
			continue
		}
		t.apply(res, q.op, q.s, &ps[i], &q.k, q.h, q.rev, now)
	}
	if locks != 0 {
		// The touching loads must be used, or the compiler drops them.
		t.shards[bits.TrailingZeros64(locks)].warm = warm
	}
	for m := locks; m != 0; m &= m - 1 {
		t.shards[bits.TrailingZeros64(m)].mu.Unlock()
	}
	for i := range out {
		if out[i].State == StateInvalid {
			t.invalid[out[i].Reason].Add(1)
		}
	}
}

// touch reads the entry the index names for hash h, both of its cache
// lines, following the probe to the first word with h's tag, and returns
// what it read: a load for TrackBatch to overlap with others. Caller holds
// s.mu.
func (s *shard) touch(h uint64) uint64 {
	mask := uint32(len(s.idx) - 1)
	tag := tagOf(h)
	for i := uint32(h) & mask; ; i = (i + 1) & mask {
		v := s.idx[i]
		if v == 0 {
			return 0
		}
		if v>>slotBits == tag {
			e := s.at(v&(1<<slotBits-1) - 1)
			return e.key[0] ^ e.bytes[0]
		}
	}
}
