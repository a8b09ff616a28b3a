package conntrack

// TCP tracking follows Linux's nf_conntrack_proto_tcp: the same state
// transition table, the same window tracking (Guido van Rooij's "Real
// Stateful TCP Packet Filtering in IP Filter", as Linux adapted it), the same
// RST and simultaneous-open special cases. Written from the description in
// the kernel source, not translated from it.

// Indexes of a segment's flags in the transition table.
const (
	tcpSynSet = iota
	tcpSynAckSet
	tcpFinSet
	tcpAckSet
	tcpRstSet
	tcpNoneSet
)

func tcpIndex(flags uint8) uint8 {
	switch {
	case flags&FlagRST != 0:
		return tcpRstSet
	case flags&FlagSYN != 0 && flags&FlagACK != 0:
		return tcpSynAckSet
	case flags&FlagSYN != 0:
		return tcpSynSet
	case flags&FlagFIN != 0:
		return tcpFinSet
	case flags&FlagACK != 0:
		return tcpAckSet
	}
	return tcpNoneSet
}

// tcpValidFlags lists the flag combinations Linux's tcp_error accepts once
// PSH, ECE and CWR are masked off.
var tcpValidFlags = [64]bool{
	FlagSYN:                     true,
	FlagSYN | FlagURG:           true,
	FlagSYN | FlagACK:           true,
	FlagRST:                     true,
	FlagRST | FlagACK:           true,
	FlagFIN | FlagACK:           true,
	FlagFIN | FlagACK | FlagURG: true,
	FlagACK:                     true,
	FlagACK | FlagURG:           true,
}

func tcpFlagsValid(f uint8) bool {
	return tcpValidFlags[f&^(FlagPSH|FlagECE|FlagCWR)&63]
}

// Short names for the transition table, as in the kernel's comments.
const (
	sNO = TCPNone
	sSS = TCPSynSent
	sSR = TCPSynRecv
	sES = TCPEstablished
	sFW = TCPFinWait
	sCW = TCPCloseWait
	sLA = TCPLastAck
	sTW = TCPTimeWait
	sCL = TCPClose
	sS2 = TCPSynSent2
	sIV = tcpMax
	sIG = tcpIgnore
)

// tcpTransitions[dir][index][old] is the next state (Linux tcp_conntracks).
var tcpTransitions = [2][6][10]TCPState{
	{ // original
		//  sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2
		{sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2}, // syn
		{sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR}, // synack
		{sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV}, // fin
		{sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV}, // ack
		{sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL}, // rst
		{sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV}, // none
	},
	{ // reply
		{sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2}, // syn
		{sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR}, // synack
		{sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV}, // fin
		{sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG}, // ack
		{sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL}, // rst
		{sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV}, // none
	},
}

// Per-direction flags (Linux IP_CT_TCP_FLAG_*).
const (
	tcpFlagWScale     = 0x01
	tcpFlagSACKPerm   = 0x02
	tcpFlagCloseInit  = 0x04
	tcpFlagDataUnack  = 0x10
	tcpFlagMaxAckSet  = 0x20
	maxAckWindowConst = 66000
)

// tcpDir is what the table knows of one direction's sequence space (Linux
// struct ip_ct_tcp_state; its scale and flags are in tcpConn).
type tcpDir struct {
	end    uint32 // highest seq+len seen from this side
	maxend uint32 // highest right edge the other side allowed
	maxwin uint32 // largest window seen from this side (0: not initialised)
	maxack uint32 // highest ack sent by this side
}

// tcpConn is the sequence space of both directions, 36 bytes. The state,
// the last segment's index and direction and the simultaneous-open mark
// are in the entry (tcpState, tcpLast, flagSimultaneous), which keeps an
// entry at 128 bytes: two cache lines.
type tcpConn struct {
	seen  [2]tcpDir
	scale [2]uint8 // window scale by direction
	flags [2]uint8 // tcpFlag* by direction
}

// tcpLast packs the flag index and direction of the last segment that
// changed the state (Linux last_index, last_dir).
func tcpLast(idx uint8, dir Dir) uint8 { return idx | uint8(dir)<<3 }

type tcpAction uint8

const (
	tcpAccept  tcpAction = iota // state, window and timeout updated
	tcpIgnored                  // accepted, but nothing about the entry changed
	tcpInvalid                  // invalid; nothing changed
	tcpReopen                   // SYN reopening a closed flow: destroy, then create anew
	tcpKill                     // accepted RST before any reply: destroy the entry
)

func before(a, b uint32) bool { return int32(a-b) < 0 }
func after(a, b uint32) bool  { return int32(b-a) < 0 }

func segEnd(p *Packet) uint32 {
	end := p.Seq + p.PayloadLen
	if p.TCPFlags&FlagSYN != 0 {
		end++
	}
	if p.TCPFlags&FlagFIN != 0 {
		end++
	}
	return end
}

func maxAckWindow(s *tcpDir) uint32 { return max(s.maxwin, maxAckWindowConst) }

// tcpNew initialises the connection for a SYN opening a flow (Linux tcp_new).
func tcpNew(c *tcpConn, p *Packet) {
	*c = tcpConn{}
	s := &c.seen[0]
	s.end = segEnd(p)
	s.maxend = s.end
	s.maxwin = max(uint32(p.Window), 1)
	tcpOptions(c, DirOriginal, p)
}

func tcpOptions(c *tcpConn, dir Dir, p *Packet) {
	c.scale[dir] = 0
	c.flags[dir] = 0
	if p.HasWScale {
		c.scale[dir] = min(p.WScale, 14)
		c.flags[dir] |= tcpFlagWScale
	}
	if p.SACKPerm {
		c.flags[dir] |= tcpFlagSACKPerm
	}
}

func tcpInitSender(c *tcpConn, p *Packet, end, win uint32, dir Dir) {
	sender := &c.seen[dir]
	sender.end, sender.maxend = end, end
	sender.maxwin = max(win, 1)
	tcpOptions(c, dir, p)
	// RFC 1323: scaling only when both sides offered it.
	if dir == DirReply && !(c.flags[dir]&tcpFlagWScale != 0 && c.flags[1-dir]&tcpFlagWScale != 0) {
		c.scale[dir], c.scale[1-dir] = 0, 0
	}
}

// tcpInWindow checks a segment against what the table knows of both sides'
// windows and updates them (Linux tcp_in_window). SACK blocks are not read:
// the highest acknowledged byte is the ACK field.
func tcpInWindow(c *tcpConn, state TCPState, dir Dir, p *Packet) (tcpAction, Reason) {
	sender, receiver := &c.seen[dir], &c.seen[1-dir]
	syn, hasAck := p.TCPFlags&FlagSYN != 0, p.TCPFlags&FlagACK != 0
	seq, ack := p.Seq, p.Ack
	win := uint32(p.Window)
	end := segEnd(p)

	if sender.maxwin == 0 {
		if syn {
			tcpInitSender(c, p, end, win, dir)
			if !hasAck { // simultaneous open
				return tcpAccept, ReasonNone
			}
		} else {
			// Mid-connection: take what this packet says.
			sender.end = end
			sender.maxwin = max(win<<c.scale[dir], 1)
			sender.maxend = end + sender.maxwin
			if receiver.maxwin == 0 {
				receiver.end, receiver.maxend = ack, ack
			} else if ack == receiver.end+1 { // keepalive reply
				receiver.end++
			}
		}
	} else if syn && after(end, sender.end) && (state == TCPSynSent || state == TCPSynRecv) {
		// Reinitialised sender (RFC 793): start over for this direction.
		tcpInitSender(c, p, end, win, dir)
		if dir == DirReply && !hasAck {
			return tcpAccept, ReasonNone
		}
	}

	if !hasAck || (p.TCPFlags&FlagRST != 0 && ack == 0) {
		ack = receiver.end // no ACK (or a broken RST|ACK 0): pretend it acks everything
	}
	if p.TCPFlags&FlagRST != 0 && seq == 0 && state == TCPSynSent {
		seq, end = sender.end, sender.end // RST answering a SYN
	}

	if !before(seq, sender.maxend+1) {
		overshot := end - sender.maxend + 1
		ackOK := after(ack, receiver.end-maxAckWindow(sender)-1)
		inRecv := receiver.maxwin != 0 && after(end, sender.end-receiver.maxwin-1)
		if inRecv && ackOK && overshot <= receiver.maxwin && before(ack, receiver.end+1) {
			// A sender overshooting the window a little: remember the data
			// so its ACK is in bounds, let the segment pass unchanged.
			sender.end = end
			c.flags[dir] |= tcpFlagDataUnack
			return tcpIgnored, ReasonNone
		}
		return tcpInvalid, ReasonTCPSeqOverWindow
	}
	if !before(ack, receiver.end+1) {
		return tcpInvalid, ReasonTCPAckOverWindow
	}
	if receiver.maxwin != 0 && !after(end, sender.end-receiver.maxwin-1) {
		return tcpIgnored, ReasonNone // under the lower bound: old retransmission
	}
	if !after(ack, receiver.end-maxAckWindow(sender)-1) {
		return tcpIgnored, ReasonNone // overly delayed ACK
	}

	if !syn {
		win <<= c.scale[dir]
	}
	sender.maxwin = max(sender.maxwin, win)
	if after(end, sender.end) {
		sender.end = end
		c.flags[dir] |= tcpFlagDataUnack
	}
	if hasAck {
		if c.flags[dir]&tcpFlagMaxAckSet == 0 {
			sender.maxack = ack
			c.flags[dir] |= tcpFlagMaxAckSet
		} else if after(ack, sender.maxack) {
			sender.maxack = ack
		}
	}
	if receiver.maxwin != 0 && after(end, sender.maxend) {
		receiver.maxwin += end - sender.maxend
	}
	if after(ack+win, receiver.maxend-1) {
		receiver.maxend = ack + win
		if win == 0 {
			receiver.maxend++
		}
	}
	if ack == receiver.end {
		c.flags[1-dir] &^= tcpFlagDataUnack
	}
	return tcpAccept, ReasonNone
}

func tcpCanEarlyDrop(s TCPState) bool {
	switch s {
	case TCPFinWait, TCPLastAck, TCPTimeWait, TCPClose, TCPCloseWait:
		return true
	}
	return false
}

// tcpPacket moves an existing entry's TCP state for one segment (Linux
// nf_conntrack_tcp_packet). On tcpAccept it also sets e.expires.
func (t *Table) tcpPacket(e *entry, dir Dir, p *Packet, now int64) (tcpAction, Reason) {
	c := &e.tcp
	idx := tcpIndex(p.TCPFlags)
	old := e.tcpState
	ns := tcpTransitions[dir][idx][old]
	skipWindow := false

	switch ns {
	case TCPSynSent:
		if old < TCPTimeWait {
			break
		}
		if (c.flags[0]|c.flags[1])&tcpFlagCloseInit != 0 || e.tcpLast == tcpLast(tcpRstSet, dir) {
			return tcpReopen, ReasonNone
		}
		fallthrough
	case tcpIgnore:
		// Our entry may be out of sync with the endpoints: let the
		// segment through without believing it.
		e.tcpLast = tcpLast(idx, dir)
		return tcpIgnored, ReasonNone
	case tcpMax:
		return tcpInvalid, ReasonTCPTransition
	case TCPSynSent2:
		e.flags |= flagSimultaneous
	case TCPSynRecv:
		if dir == DirReply && idx == tcpAckSet && e.flags&flagSimultaneous != 0 {
			ns = TCPEstablished
		}
	case TCPClose:
		if idx != tcpRstSet {
			break
		}
		if tcpCanEarlyDrop(old) {
			skipWindow = true
			break
		}
		recv := &c.seen[1-dir]
		if c.flags[1-dir]&tcpFlagMaxAckSet != 0 && e.tcpLast&7 != tcpSynSet {
			established := old == TCPEstablished && e.flags&flagAssured != 0
			if p.Seq == 0 && !established {
				break
			}
			if before(p.Seq, recv.maxack) {
				return tcpInvalid, ReasonTCPInvalidRST
			}
			if !established || p.Seq == recv.maxack {
				break
			}
			ns = old // inexact RST: keep the state for a possible challenge ACK
		}
	}

	if !skipWindow {
		act, r := tcpInWindow(c, old, dir, p)
		if act != tcpAccept {
			return act, r
		}
	}

	e.tcpLast = tcpLast(idx, dir)
	e.tcpState = ns
	if old != ns && ns == TCPFinWait {
		c.flags[dir] |= tcpFlagCloseInit
	}
	to := &t.timeouts
	timeout := to.tcp[ns]
	switch {
	case idx == tcpRstSet:
		timeout = to.tcp[TCPClose]
	case (c.flags[0]|c.flags[1])&tcpFlagDataUnack != 0 && timeout > to.unack:
		timeout = to.unack
	}
	if e.flags&flagReplied == 0 {
		if idx == tcpRstSet {
			return tcpKill, ReasonNone
		}
		if idx == tcpSynSet && old == TCPSynSent {
			return tcpAccept, ReasonNone // a retransmitted SYN does not extend the entry
		}
		if ns == TCPEstablished && timeout > to.unack {
			timeout = to.unack
		}
	} else if e.flags&flagAssured == 0 && (old == TCPSynRecv || old == TCPEstablished) && ns == TCPEstablished {
		e.flags |= flagAssured
	}
	e.expires = now + timeout
	return tcpAccept, ReasonNone
}
