package conntrack

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Timeouts are how long an entry lives after its last accepted packet, by
// state. A zero field takes the Linux default (DefaultTimeouts).
type Timeouts struct {
	TCPSynSent        time.Duration // net.netfilter.nf_conntrack_tcp_timeout_syn_sent = 120 s
	TCPSynRecv        time.Duration // net.netfilter.nf_conntrack_tcp_timeout_syn_recv = 60 s
	TCPEstablished    time.Duration // net.netfilter.nf_conntrack_tcp_timeout_established = 432000 s
	TCPFinWait        time.Duration // net.netfilter.nf_conntrack_tcp_timeout_fin_wait = 120 s
	TCPCloseWait      time.Duration // net.netfilter.nf_conntrack_tcp_timeout_close_wait = 60 s
	TCPLastAck        time.Duration // net.netfilter.nf_conntrack_tcp_timeout_last_ack = 30 s
	TCPTimeWait       time.Duration // net.netfilter.nf_conntrack_tcp_timeout_time_wait = 120 s
	TCPClose          time.Duration // net.netfilter.nf_conntrack_tcp_timeout_close = 10 s
	TCPSynSent2       time.Duration // no sysctl; Linux's tcp_timeouts[TCP_CONNTRACK_SYN_SENT2] = 120 s
	TCPUnacknowledged time.Duration // net.netfilter.nf_conntrack_tcp_timeout_unacknowledged = 300 s
	UDP               time.Duration // net.netfilter.nf_conntrack_udp_timeout = 30 s
	UDPStream         time.Duration // net.netfilter.nf_conntrack_udp_timeout_stream = 120 s
	ICMP              time.Duration // net.netfilter.nf_conntrack_icmp_timeout = 30 s
	ICMPv6            time.Duration // net.netfilter.nf_conntrack_icmpv6_timeout = 30 s
}

// DefaultTimeouts returns Linux's defaults.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCPSynSent:        120 * time.Second,
		TCPSynRecv:        60 * time.Second,
		TCPEstablished:    432000 * time.Second,
		TCPFinWait:        120 * time.Second,
		TCPCloseWait:      60 * time.Second,
		TCPLastAck:        30 * time.Second,
		TCPTimeWait:       120 * time.Second,
		TCPClose:          10 * time.Second,
		TCPSynSent2:       120 * time.Second,
		TCPUnacknowledged: 300 * time.Second,
		UDP:               30 * time.Second,
		UDPStream:         120 * time.Second,
		ICMP:              30 * time.Second,
		ICMPv6:            30 * time.Second,
	}
}

// udpStreamAfter is Linux's stream_ts: a replied UDP flow still active two
// seconds after it began is a stream (assured, udp_stream timeout).
const udpStreamAfter = int64(2 * time.Second)

type timeouts struct {
	tcp                                [10]int64 // by TCPState
	unack, udp, udpStream, icmp, icmp6 int64
	max                                int64 // longest of all: nothing lives longer after its last packet
}

func (to Timeouts) compile() timeouts {
	d := DefaultTimeouts()
	pick := func(v, def time.Duration) int64 {
		if v <= 0 {
			return int64(def)
		}
		return int64(v)
	}
	var c timeouts
	c.tcp[TCPNone] = pick(to.TCPSynSent, d.TCPSynSent)
	c.tcp[TCPSynSent] = pick(to.TCPSynSent, d.TCPSynSent)
	c.tcp[TCPSynRecv] = pick(to.TCPSynRecv, d.TCPSynRecv)
	c.tcp[TCPEstablished] = pick(to.TCPEstablished, d.TCPEstablished)
	c.tcp[TCPFinWait] = pick(to.TCPFinWait, d.TCPFinWait)
	c.tcp[TCPCloseWait] = pick(to.TCPCloseWait, d.TCPCloseWait)
	c.tcp[TCPLastAck] = pick(to.TCPLastAck, d.TCPLastAck)
	c.tcp[TCPTimeWait] = pick(to.TCPTimeWait, d.TCPTimeWait)
	c.tcp[TCPClose] = pick(to.TCPClose, d.TCPClose)
	c.tcp[TCPSynSent2] = pick(to.TCPSynSent2, d.TCPSynSent2)
	c.unack = pick(to.TCPUnacknowledged, d.TCPUnacknowledged)
	c.udp = pick(to.UDP, d.UDP)
	c.udpStream = pick(to.UDPStream, d.UDPStream)
	c.icmp = pick(to.ICMP, d.ICMP)
	c.icmp6 = pick(to.ICMPv6, d.ICMPv6)
	c.max = max(c.unack, c.udp, c.udpStream, c.icmp, c.icmp6)
	for _, v := range c.tcp {
		c.max = max(c.max, v)
	}
	return c
}

// Config configures a Table.
type Config struct {
	// Max is the most entries the table holds (Linux nf_conntrack_max).
	Max int
	// Clock returns the time of the packet being tracked; nil means time.Now.
	// Replay passes the capture's timestamps, tests a fake clock. Track
	// reads it once per packet, TrackBatch once per call: a replay batches
	// only packets of one timestamp.
	Clock func() time.Time
	// Seed keys the hash so that remote hosts cannot aim flows at one bucket.
	// Pass a random value in production, a fixed one in tests.
	Seed uint64
	// Timeouts override Linux's defaults field by field.
	Timeouts Timeouts
	// Events is the capacity of the events channel; 0 turns events off.
	Events int
}

// EventKind says what happened to an entry.
type EventKind uint8

const (
	EventNew     EventKind = iota + 1
	EventUpdate            // protocol state, replied or assured changed
	EventDestroy           // expired, deleted, evicted or closed
)

func (k EventKind) String() string {
	switch k {
	case EventNew:
		return "new"
	case EventUpdate:
		return "update"
	case EventDestroy:
		return "destroy"
	}
	return "event?"
}

// Event is one change to an entry, with a copy of the entry after it.
type Event struct {
	Kind  EventKind
	Entry Entry
}

// Entry is a copy of one table entry, for listing and events.
type Entry struct {
	Tuple   Tuple // the original direction
	TCP     TCPState
	Replied bool // seen a packet in the reply direction (Linux IPS_SEEN_REPLY)
	Assured bool // Linux IPS_ASSURED: never dropped early
	Packets [2]uint64
	Bytes   [2]uint64
	First   time.Time
	Last    time.Time
	Expires time.Time
	Verdict uint8
	Rule    uint32
	Ref     Ref
}

// Stats are the table's counters since New.
type Stats struct {
	Inserted      uint64
	Expired       uint64 // reaped or found expired
	EarlyDropped  uint64 // evicted to make room (never assured)
	Refused       uint64 // new flows refused: full of assured entries
	Deleted       uint64 // by Delete, TCP reopen, or RST before reply
	EventsDropped uint64 // the events channel was full
	Invalid       [numReasons]uint64
}

// entry flags.
const (
	flagUsed     = 0x01
	flagReversed = 0x02 // the original direction is the key's reverse
	flagReplied  = 0x04
	flagAssured  = 0x08
	// Linux's IP_CT_TCP_SIMULTANEOUS_OPEN: a SYN answered a SYN.
	flagSimultaneous = 0x10
)

// entry is one flow as stored: pointer-free, so the slabs holding a million
// of them are never scanned by the garbage collector, and 128 bytes, so an
// entry is two cache lines of a slab chunk: the lines a packet of an
// established flow reads and writes. What such a packet never needs, the
// time the flow began, is kept beside the chunk's entries (chunk.first).
type entry struct {
	key           flowKey
	last, expires int64 // nanoseconds since the Unix epoch
	gen           uint32
	rule          uint32
	bytes         [2]uint64
	pkts          [2]uint32
	tcp           tcpConn
	tcpState      TCPState
	tcpLast       uint8 // see tcpLast
	verdict       uint8
	flags         uint8
}

// chunk is a fixed part of a shard's slab: chunkSize entries and the start
// times of their flows (nanoseconds since the Unix epoch).
type chunk struct {
	e     [chunkSize]entry
	first [chunkSize]int64
}

const (
	chunkBits = 10
	chunkSize = 1 << chunkBits
	slotBits  = 24 // the index packs a slot+1 in 24 bits and an 8-bit hash tag
	maxSlots  = 1<<slotBits - 2
	reapEach  = 0 // slots examined for expiry per Track: an established packet reaps nothing, a random slot is a cache miss
	reapNew   = 4 // slots examined per Track that inserts: new flows pay for the expiry of old ones
	dropScan  = 64
)

// shard is one lock's worth of the table: an open-addressing index (linear
// probing) of uint32 words, tag<<24 | slot+1, over a slab of entries in
// fixed chunks. The cursor walks the slab for amortised expiry.
type shard struct {
	mu     sync.Mutex
	idx    []uint32
	chunks []*chunk
	free   []uint32
	nslots uint32 // slots ever handed out (high-water mark)
	count  uint32
	cursor uint32
	id     uint32
	warm   uint64   // TrackBatch stores here what its cache-warming loads read, or the compiler drops them
	_      [56]byte // keep neighbouring shards' locks off one cache line (160 bytes a shard)
}

// Table tracks flows. Create it with New.
//
// Concurrency: every method may be called from any number of goroutines.
// The table is split into shards by the flow's hash; each shard has one
// mutex guarding its index and entries, and a Track, Delete, Get or
// SetVerdict holds exactly one shard lock at a time. Range and Reap take the
// shard locks one after another, never two at once. TrackBatch alone holds
// several: the locks of the shards of one group of packets (up to
// batchGroup), taken in increasing shard index and released together before
// the next group. Lock order: increasing shard index; only TrackBatch ever
// holds two locks, and it keeps that order, so no deadlock is possible.
// Nothing reads a shard's index or entries without its lock, TrackBatch's
// loads that only warm the cache included. The entry count is one atomic
// shared by the shards; the events channel is written with non-blocking
// sends under a shard lock. Callbacks (Range) run with no lock held.
type Table struct {
	shards     []shard
	shardShift uint
	seed       uint64
	maxEntries int64
	n          atomic.Int64
	clock      func() time.Time
	epoch      time.Time
	timeouts   timeouts
	events     chan Event
	reapShard  atomic.Uint32

	inserted, expired, earlyDropped, refused, deleted, eventsDropped atomic.Uint64
	invalid                                                          [numReasons]atomic.Uint64
}

// maxShards bounds a table's shards: TrackBatch keeps the locks a group
// holds as bits of one 64-bit word.
const maxShards = 64

// New returns an empty table.
func New(cfg Config) (*Table, error) {
	if cfg.Max <= 0 {
		return nil, fmt.Errorf("conntrack new (max %d): %w", cfg.Max, errors.New("max must be positive"))
	}
	nshards := 1
	for nshards < maxShards && cfg.Max/nshards > 4096 {
		nshards *= 2
	}
	if cfg.Max/nshards > maxSlots {
		return nil, fmt.Errorf("conntrack new (max %d): %w", cfg.Max, errors.New("too many entries"))
	}
	bits := uint(0)
	for 1<<bits < nshards {
		bits++
	}
	t := &Table{
		shards:     make([]shard, nshards),
		shardShift: 64 - bits,
		seed:       cfg.Seed,
		maxEntries: int64(cfg.Max),
		clock:      cfg.Clock,
		timeouts:   cfg.Timeouts.compile(),
	}
	if t.clock == nil {
		t.clock = time.Now
	}
	// A fixed epoch, not the clock's reading at New: a replay clock reads
	// the current packet's time, which may be zero before the first packet,
	// and times since the Unix epoch fit in int64 nanoseconds until 2262.
	t.epoch = time.Unix(0, 0)
	if cfg.Events > 0 {
		t.events = make(chan Event, cfg.Events)
	}
	for i := range t.shards {
		t.shards[i].id = uint32(i)
		t.shards[i].idx = make([]uint32, 16)
	}
	return t, nil
}

// Events returns the channel of entry events, or nil when Config.Events was
// 0. A full channel drops the event and counts it (Stats.EventsDropped).
func (t *Table) Events() <-chan Event { return t.events }

// Len returns the number of entries, expired ones not yet reaped included.
func (t *Table) Len() int { return int(t.n.Load()) }

// Stats returns a copy of the counters.
func (t *Table) Stats() Stats {
	s := Stats{
		Inserted:      t.inserted.Load(),
		Expired:       t.expired.Load(),
		EarlyDropped:  t.earlyDropped.Load(),
		Refused:       t.refused.Load(),
		Deleted:       t.deleted.Load(),
		EventsDropped: t.eventsDropped.Load(),
	}
	for i := range s.Invalid {
		s.Invalid[i] = t.invalid[i].Load()
	}
	return s
}

// now reads the clock once, as nanoseconds since the Unix epoch: UnixNano
// for the years 1678 to 2262, where it equals Sub(epoch) without Sub's
// overflow check, and Sub's saturated value outside them.
func (t *Table) now() int64 {
	c := t.clock()
	if sec := c.Unix(); sec > -maxUnixSec && sec < maxUnixSec {
		return sec*1e9 + int64(c.Nanosecond())
	}
	return int64(c.Sub(t.epoch))
}

// maxUnixSec bounds the seconds whose nanoseconds fit in an int64.
const maxUnixSec = (1<<63-1)/1_000_000_000 - 1

func (t *Table) shardFor(h uint64) *shard {
	if t.shardShift == 64 {
		return &t.shards[0]
	}
	return &t.shards[h>>t.shardShift]
}

// shardIndex returns the index of the shard of hash h (shardFor's; written
// apart, as shardFor on top of it costs Track two nanoseconds).
func (t *Table) shardIndex(h uint64) uint {
	if t.shardShift == 64 {
		return 0
	}
	return uint(h >> t.shardShift)
}

func (s *shard) at(slot uint32) *entry {
	return &s.chunks[slot>>chunkBits].e[slot&(chunkSize-1)]
}

// first returns the start time of the flow in slot.
func (s *shard) first(slot uint32) *int64 {
	return &s.chunks[slot>>chunkBits].first[slot&(chunkSize-1)]
}

func tagOf(h uint64) uint32 { return uint32(h>>32) & 0xff }

// find returns the index position and slot of key k with hash h.
func (s *shard) find(k *flowKey, h uint64) (pos, slot uint32, ok bool) {
	mask := uint32(len(s.idx) - 1)
	tag := tagOf(h)
	for i := uint32(h) & mask; ; i = (i + 1) & mask {
		v := s.idx[i]
		if v == 0 {
			return 0, 0, false
		}
		if v>>slotBits == tag {
			sl := v&(1<<slotBits-1) - 1
			if s.at(sl).key.equal(k) {
				return i, sl, true
			}
		}
	}
}

func (s *shard) insertIndex(h uint64, slot uint32) {
	mask := uint32(len(s.idx) - 1)
	i := uint32(h) & mask
	for s.idx[i] != 0 {
		i = (i + 1) & mask
	}
	s.idx[i] = tagOf(h)<<slotBits | (slot + 1)
}

// deleteIndex empties position pos and shifts later members of the probe run
// back, so lookups never need tombstones.
func (s *shard) deleteIndex(pos uint32, seed uint64) {
	mask := uint32(len(s.idx) - 1)
	hole := pos
	for i := (pos + 1) & mask; ; i = (i + 1) & mask {
		v := s.idx[i]
		if v == 0 {
			break
		}
		home := uint32(s.at(v&(1<<slotBits-1)-1).key.hash(seed)) & mask
		// Move v into the hole unless its home lies cyclically in (hole, i].
		if (i-home)&mask >= (i-hole)&mask {
			s.idx[hole] = v
			hole = i
		}
	}
	s.idx[hole] = 0
}

func (s *shard) grow(seed uint64) {
	s.idx = make([]uint32, len(s.idx)*2)
	for sl := uint32(0); sl < s.nslots; sl++ {
		e := s.at(sl)
		if e.flags&flagUsed != 0 {
			s.insertIndex(e.key.hash(seed), sl)
		}
	}
}

// alloc returns a free slot, growing the slab by one chunk when needed.
func (s *shard) alloc() uint32 {
	if n := len(s.free); n > 0 {
		sl := s.free[n-1]
		s.free = s.free[:n-1]
		return sl
	}
	if s.nslots>>chunkBits >= uint32(len(s.chunks)) {
		s.chunks = append(s.chunks, new(chunk))
	}
	sl := s.nslots
	s.nslots++
	return sl
}

// remove destroys the entry in slot (index position pos) and emits its
// destroy event. Caller holds s.mu.
func (t *Table) remove(s *shard, pos, slot uint32, now int64) {
	e := s.at(slot)
	if t.events != nil {
		t.emit(EventDestroy, s, slot, e)
	}
	s.deleteIndex(pos, t.seed)
	gen := e.gen
	*e = entry{gen: gen + 1}
	s.free = append(s.free, slot)
	s.count--
	t.n.Add(-1)
}

// removeSlot is remove for a caller that knows only the slot.
func (t *Table) removeSlot(s *shard, slot uint32, now int64) {
	e := s.at(slot)
	h := e.key.hash(t.seed)
	pos, _, ok := s.find(&e.key, h)
	if !ok {
		panic("conntrack: entry missing from its index") // a broken invariant, not bad input
	}
	t.remove(s, pos, slot, now)
}

func (t *Table) emit(kind EventKind, s *shard, slot uint32, e *entry) {
	select {
	case t.events <- Event{Kind: kind, Entry: t.snapshot(s, slot, e)}:
	default:
		t.eventsDropped.Add(1)
	}
}

func (t *Table) snapshot(s *shard, slot uint32, e *entry) Entry {
	tu := e.key.tuple()
	if e.flags&flagReversed != 0 {
		tu = tu.Reverse()
	}
	return Entry{
		Tuple:   tu,
		TCP:     e.tcpState,
		Replied: e.flags&flagReplied != 0,
		Assured: e.flags&flagAssured != 0,
		Packets: [2]uint64{uint64(e.pkts[0]), uint64(e.pkts[1])},
		Bytes:   e.bytes,
		First:   t.epoch.Add(time.Duration(*s.first(slot))),
		Last:    t.epoch.Add(time.Duration(e.last)),
		Expires: t.epoch.Add(time.Duration(e.expires)),
		Verdict: e.verdict,
		Rule:    e.rule,
		Ref:     Ref{shard: s.id, slot: slot, gen: e.gen},
	}
}

// reapLocked examines up to n slots at the shard's cursor and destroys the
// expired entries among them. Caller holds s.mu.
func (t *Table) reapLocked(s *shard, n int, now int64) int {
	reaped := 0
	for ; n > 0 && s.nslots > 0; n-- {
		if s.cursor >= s.nslots {
			s.cursor = 0
		}
		sl := s.cursor
		s.cursor++
		if e := s.at(sl); e.flags&flagUsed != 0 && e.expires <= now {
			t.removeSlot(s, sl, now)
			t.expired.Add(1)
			reaped++
		}
	}
	return reaped
}

// Reap examines up to n slots, shard after shard from a rotating start, and
// destroys the expired entries among them; it returns how many it destroyed.
// Track already reaps a little on every call; Reap is for tests and for an
// idle table.
func (t *Table) Reap(n int) int {
	now := t.now()
	reaped := 0
	start := int(t.reapShard.Add(1))
	per := max(n/len(t.shards), 1)
	for i := range t.shards {
		if n <= 0 {
			break
		}
		s := &t.shards[(start+i)%len(t.shards)]
		s.mu.Lock()
		m := min(per, n, int(s.nslots))
		reaped += t.reapLocked(s, m, now)
		s.mu.Unlock()
		n -= max(m, 1)
	}
	return reaped
}

// reserve claims room for one more entry in s, dropping a not-assured entry
// of s early when the table is full. Caller holds s.mu.
func (t *Table) reserve(s *shard, now int64) bool {
	for try := 0; try < 2; try++ {
		for {
			c := t.n.Load()
			if c >= t.maxEntries {
				break
			}
			if t.n.CompareAndSwap(c, c+1) {
				return true
			}
		}
		if try == 0 && !t.earlyDrop(s, now) {
			return false
		}
	}
	return false
}

// earlyDrop scans up to dropScan slots of s from its cursor and destroys the
// best victim: an expired entry if any, else the not-assured entry seen
// longest ago. Assured entries are never dropped. Caller holds s.mu.
func (t *Table) earlyDrop(s *shard, now int64) bool {
	if s.nslots == 0 {
		return false
	}
	victim, found := uint32(0), false
	var oldest int64
	sl := s.cursor
	for i := 0; i < dropScan && i < int(s.nslots); i++ {
		if sl >= s.nslots {
			sl = 0
		}
		e := s.at(sl)
		if e.flags&flagUsed != 0 {
			if e.expires <= now {
				t.removeSlot(s, sl, now)
				t.expired.Add(1)
				return true
			}
			if e.flags&flagAssured == 0 && (!found || e.last < oldest) {
				victim, oldest, found = sl, e.last, true
			}
		}
		sl++
	}
	if !found {
		return false
	}
	t.removeSlot(s, victim, now)
	t.earlyDropped.Add(1)
	return true
}

// Delete destroys the entry of the flow t (either direction) and reports
// whether there was one.
func (t *Table) Delete(tu Tuple) bool {
	k, _ := tu.key()
	h := k.hash(t.seed)
	s := t.shardFor(h)
	now := t.now()
	s.mu.Lock()
	pos, slot, ok := s.find(&k, h)
	if ok {
		t.remove(s, pos, slot, now)
		t.deleted.Add(1)
	}
	s.mu.Unlock()
	return ok
}

// Get returns a copy of the entry of the flow t (either direction).
func (t *Table) Get(tu Tuple) (Entry, bool) {
	k, _ := tu.key()
	h := k.hash(t.seed)
	s := t.shardFor(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, slot, ok := s.find(&k, h)
	if !ok {
		return Entry{}, false
	}
	return t.snapshot(s, slot, s.at(slot)), true
}

// SetVerdict caches the policy's verdict and rule on an entry, so later
// packets of the flow can skip the policy. It reports false when the entry
// is gone.
func (t *Table) SetVerdict(r Ref, verdict uint8, rule uint32) bool {
	if int(r.shard) >= len(t.shards) {
		return false
	}
	s := &t.shards[r.shard]
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.slot >= s.nslots {
		return false
	}
	e := s.at(r.slot)
	if e.flags&flagUsed == 0 || e.gen != r.gen {
		return false
	}
	e.verdict, e.rule = verdict, rule
	return true
}

// Range calls fn with a copy of every entry, shard by shard, until fn
// returns false. Entries inserted or destroyed meanwhile may or may not be
// seen. fn runs with no lock held and may call the table.
func (t *Table) Range(fn func(Entry) bool) {
	var buf []Entry
	for i := range t.shards {
		s := &t.shards[i]
		buf = buf[:0]
		s.mu.Lock()
		for sl := uint32(0); sl < s.nslots; sl++ {
			if e := s.at(sl); e.flags&flagUsed != 0 {
				buf = append(buf, t.snapshot(s, sl, e))
			}
		}
		s.mu.Unlock()
		for _, e := range buf {
			if !fn(e) {
				return
			}
		}
	}
}

// Snapshot returns a copy of every entry.
func (t *Table) Snapshot() []Entry {
	out := make([]Entry, 0, t.Len())
	t.Range(func(e Entry) bool { out = append(out, e); return true })
	return out
}
