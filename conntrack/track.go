package conntrack

// Track looks the packet's flow up (either direction), creates it when the
// packet may open one, runs the protocol's state machine, counts the packet
// and returns the packet's state. It never allocates for a packet of an
// existing flow and never panics; malformed input is StateInvalid with a
// reason (counted in Stats.Invalid).
func (t *Table) Track(p *Packet) Result {
	if p.Bad != ReasonNone {
		return t.invalidResult(p.Bad)
	}
	if p.Family != IPv4 && p.Family != IPv6 {
		return t.invalidResult(ReasonBadFamily)
	}
	switch p.Proto {
	case ProtoTCP:
		if !tcpFlagsValid(p.TCPFlags) {
			return t.invalidResult(ReasonTCPFlags)
		}
	case ProtoUDP:
	case ProtoICMP, ProtoICMPv6:
		if (p.Proto == ProtoICMP) != (p.Family == IPv4) {
			return t.invalidResult(ReasonUnsupported)
		}
		if isICMPError(p.Proto, p.ICMPType) {
			return t.related(p)
		}
	default:
		return t.invalidResult(ReasonUnsupported)
	}

	sport, dport := p.SrcPort, p.DstPort
	if p.Proto == ProtoICMP || p.Proto == ProtoICMPv6 {
		sport, dport = p.ICMPID, p.ICMPID
	}
	var k flowKey
	rev := k.set(&p.Src, &p.Dst, sport, dport, p.Proto, p.Family, p.Zone)
	h := k.hash(t.seed)
	s := t.shardFor(h)
	now := t.now()

	s.mu.Lock()
	var res Result
	t.trackLocked(&res, s, p, &k, h, rev, now)
	n := reapEach
	if res.State == StateNew && res.Dir == DirOriginal {
		n += reapNew // new flows pay for the expiry of old ones
	}
	if n > 0 {
		t.reapLocked(s, n, now)
	}
	s.mu.Unlock()
	if res.State == StateInvalid {
		t.invalid[res.Reason].Add(1)
	}
	return res
}

// related answers an ICMP error for Track: Related when it quotes a live
// flow. prepare reads the quote (and repeats Track's checks, off the path of
// established flows).
func (t *Table) related(p *Packet) Result {
	var k flowKey
	o, rev, why := prepare(p, &k)
	if o == opInvalid {
		return t.invalidResult(why)
	}
	h := k.hash(t.seed)
	s := t.shardFor(h)
	now := t.now()
	s.mu.Lock()
	var res Result
	t.relatedLocked(&res, s, &k, h, rev, now)
	s.mu.Unlock()
	if res.State == StateInvalid {
		t.invalid[res.Reason].Add(1)
	}
	return res
}

// op is what a packet needs from the table, decided from the packet alone.
type op uint8

const (
	opInvalid op = iota // none: the packet is Invalid for a reason of its own
	opTrack             // its flow looked up, or opened
	opRelated           // an ICMP error: the flow it quotes looked up
)

// prepare decides what p needs and, unless the packet is invalid on its
// own, sets k to the key of the flow it concerns (for an ICMP error, the
// flow it quotes) and reports whether that key is the packet's direction
// reversed. It reads nothing of the table. Track makes the same checks
// inline, a call less per packet; TestTrackBatchEqualsTrack and FuzzTrack
// hold the two to the same answers.
func prepare(p *Packet, k *flowKey) (o op, rev bool, why Reason) {
	if p.Bad != ReasonNone {
		return opInvalid, false, p.Bad
	}
	if p.Family != IPv4 && p.Family != IPv6 {
		return opInvalid, false, ReasonBadFamily
	}
	switch p.Proto {
	case ProtoTCP:
		if !tcpFlagsValid(p.TCPFlags) {
			return opInvalid, false, ReasonTCPFlags
		}
	case ProtoUDP:
	case ProtoICMP, ProtoICMPv6:
		if (p.Proto == ProtoICMP) != (p.Family == IPv4) {
			return opInvalid, false, ReasonUnsupported
		}
		if isICMPError(p.Proto, p.ICMPType) {
			if !p.HasQuoted {
				return opInvalid, false, ReasonICMPErrorUntracked
			}
			q := &p.Quoted
			if q.Family != p.Family {
				return opInvalid, false, ReasonMalformed
			}
			// The quoted packet is looked up in the error's zone.
			rev = k.set(&q.Src, &q.Dst, q.SrcPort, q.DstPort, q.Proto, q.Family, p.Zone)
			return opRelated, rev, ReasonNone
		}
	default:
		return opInvalid, false, ReasonUnsupported
	}
	sport, dport := p.SrcPort, p.DstPort
	if p.Proto == ProtoICMP || p.Proto == ProtoICMPv6 {
		sport, dport = p.ICMPID, p.ICMPID
	}
	rev = k.set(&p.Src, &p.Dst, sport, dport, p.Proto, p.Family, p.Zone)
	return opTrack, rev, ReasonNone
}

// apply does what prepare decided (opTrack or opRelated) for packet p of
// key k, hash h, in shard s, and writes the answer through res. An invalid
// answer is left for the caller to count, after the lock. Caller holds s.mu.
func (t *Table) apply(res *Result, o op, s *shard, p *Packet, k *flowKey, h uint64, rev bool, now int64) {
	if o == opRelated {
		t.relatedLocked(res, s, k, h, rev, now)
		return
	}
	t.trackLocked(res, s, p, k, h, rev, now)
	n := reapEach
	if res.State == StateNew && res.Dir == DirOriginal {
		n += reapNew // new flows pay for the expiry of old ones
	}
	if n > 0 {
		t.reapLocked(s, n, now)
	}
}

func (t *Table) invalidResult(r Reason) Result {
	t.invalid[r].Add(1)
	return Result{State: StateInvalid, Reason: r}
}

// trackLocked is Track under the shard lock. It writes the result through
// res, field by field: built whole and copied, a Result costs the packet a
// store-forwarding stall. Caller holds s.mu.
func (t *Table) trackLocked(res *Result, s *shard, p *Packet, k *flowKey, h uint64, rev bool, now int64) {
	pos, slot, ok := s.find(k, h)
	if ok && s.at(slot).expires <= now {
		t.remove(s, pos, slot, now)
		t.expired.Add(1)
		ok = false
	}
	if !ok {
		*res = t.create(s, p, k, h, rev, now)
		return
	}
	e := s.at(slot)
	dir := DirOriginal
	if rev != (e.flags&flagReversed != 0) {
		dir = DirReply
	}
	before := e.flags
	var tcpBefore TCPState
	switch p.Proto {
	case ProtoTCP:
		tcpBefore = e.tcpState
		act, r := t.tcpPacket(e, dir, p, now)
		switch act {
		case tcpInvalid:
			*res = Result{State: StateInvalid, Reason: r, Dir: dir, TCP: e.tcpState}
			return
		case tcpIgnored:
			// Accepted without refreshing or counting, but a reply is a
			// reply (Linux sets IPS_SEEN_REPLY for any accepted packet).
			if dir == DirReply && e.flags&flagReplied == 0 {
				e.flags |= flagReplied
				if t.events != nil {
					t.emit(EventUpdate, s, slot, e)
				}
			}
			t.result(res, s, slot, e, dir)
			return
		case tcpReopen:
			t.remove(s, pos, slot, now)
			t.deleted.Add(1)
			*res = t.create(s, p, k, h, rev, now)
			return
		case tcpKill:
			t.count(e, dir, p, now)
			t.result(res, s, slot, e, dir)
			res.Ref = Ref{}
			t.remove(s, pos, slot, now)
			t.deleted.Add(1)
			return
		}
	case ProtoUDP:
		if e.flags&flagReplied != 0 {
			timeout := t.timeouts.udp
			if now > *s.first(slot)+udpStreamAfter {
				timeout = t.timeouts.udpStream
				e.flags |= flagAssured
			}
			e.expires = now + timeout
		} else {
			e.expires = now + t.timeouts.udp
		}
	default: // ICMP and ICMPv6 queries
		if !icmpQuery(p.Proto, p.ICMPType) {
			*res = Result{State: StateInvalid, Reason: ReasonICMPNotEcho, Dir: dir}
			return
		}
		if p.Proto == ProtoICMP {
			e.expires = now + t.timeouts.icmp
		} else {
			e.expires = now + t.timeouts.icmp6
		}
	}
	if dir == DirReply {
		e.flags |= flagReplied
	}
	t.count(e, dir, p, now)
	// The simultaneous-open mark is TCP bookkeeping, not an update.
	if t.events != nil && ((e.flags^before)&^flagSimultaneous != 0 || e.tcpState != tcpBefore) {
		t.emit(EventUpdate, s, slot, e)
	}
	t.result(res, s, slot, e, dir)
}

func (t *Table) count(e *entry, dir Dir, p *Packet, now int64) {
	e.pkts[dir]++
	n := p.Length
	if n == 0 {
		n = p.PayloadLen
	}
	e.bytes[dir] += uint64(n)
	e.last = now
}

// result sets every field of res for a packet accepted on entry e.
func (t *Table) result(res *Result, s *shard, slot uint32, e *entry, dir Dir) {
	st := StateNew
	if dir == DirReply || e.flags&flagReplied != 0 {
		st = StateEstablished
	}
	res.State = st
	res.Reason = ReasonNone
	res.Dir = dir
	res.TCP = e.tcpState
	res.Ref = Ref{shard: s.id, slot: slot, gen: e.gen}
	res.Verdict = e.verdict
	res.Rule = e.rule
}

// create opens a flow for a packet that may open one. Caller holds s.mu.
func (t *Table) create(s *shard, p *Packet, k *flowKey, h uint64, rev bool, now int64) Result {
	var timeout int64
	var c tcpConn
	var state TCPState
	switch p.Proto {
	case ProtoTCP:
		if tcpTransitions[DirOriginal][tcpIndex(p.TCPFlags)][TCPNone] != TCPSynSent {
			return Result{State: StateInvalid, Reason: ReasonTCPNewNotSYN}
		}
		tcpNew(&c, p)
		state = TCPSynSent
		timeout = t.timeouts.tcp[TCPSynSent]
	case ProtoUDP:
		timeout = t.timeouts.udp
	case ProtoICMP:
		switch p.ICMPType {
		case 8, 13, 15, 17: // echo, timestamp, information, address mask requests
		case 0, 14, 16, 18:
			return Result{State: StateInvalid, Reason: ReasonICMPReplyUntracked}
		default:
			return Result{State: StateInvalid, Reason: ReasonICMPNotEcho}
		}
		timeout = t.timeouts.icmp
	case ProtoICMPv6:
		switch p.ICMPType {
		case 128, 139: // echo request, node information query
		case 129, 140:
			return Result{State: StateInvalid, Reason: ReasonICMPReplyUntracked}
		default:
			return Result{State: StateInvalid, Reason: ReasonICMPNotEcho}
		}
		timeout = t.timeouts.icmp6
	}
	if !t.reserve(s, now) {
		t.refused.Add(1)
		return Result{State: StateInvalid, Reason: ReasonTableFull}
	}
	if (s.count+1)*4 > uint32(len(s.idx))*3 {
		s.grow(t.seed)
	}
	slot := s.alloc()
	e := s.at(slot)
	gen := e.gen
	*e = entry{key: *k, last: now, expires: now + timeout, tcp: c, tcpState: state, tcpLast: tcpLast(tcpSynSet, DirOriginal), gen: gen, flags: flagUsed}
	*s.first(slot) = now
	if rev {
		e.flags |= flagReversed
	}
	t.count(e, DirOriginal, p, now)
	s.insertIndex(h, slot)
	s.count++
	t.inserted.Add(1)
	if t.events != nil {
		t.emit(EventNew, s, slot, e)
	}
	var res Result
	t.result(&res, s, slot, e, DirOriginal)
	return res
}

// relatedLocked answers an ICMP error quoting the flow of key k: Related
// when that flow is live, else Invalid (not counted: the caller counts it
// after the lock). Caller holds s.mu.
func (t *Table) relatedLocked(res *Result, s *shard, k *flowKey, h uint64, rev bool, now int64) {
	_, slot, ok := s.find(k, h)
	if !ok || s.at(slot).expires <= now {
		*res = Result{State: StateInvalid, Reason: ReasonICMPErrorUntracked}
		return
	}
	e := s.at(slot)
	// The error travels against the quoted packet.
	dir := DirReply
	if rev != (e.flags&flagReversed != 0) {
		dir = DirOriginal
	}
	t.result(res, s, slot, e, dir)
	res.State = StateRelated
}

// icmpQuery reports whether an ICMP or ICMPv6 type is a request or reply of
// the kinds Linux tracks (echo, timestamp, information, address mask; echo
// and node information for ICMPv6).
func icmpQuery(proto, typ uint8) bool {
	if proto == ProtoICMP {
		switch typ {
		case 0, 8, 13, 14, 15, 16, 17, 18:
			return true
		}
		return false
	}
	switch typ {
	case 128, 129, 139, 140:
		return true
	}
	return false
}
