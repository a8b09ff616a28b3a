package conntrack

// State is what the table says about one packet: the ctstate of nftables.
type State uint8

const (
	// StateInvalid: the packet belongs to no flow the table can accept; the
	// Result's Reason says why.
	StateInvalid State = iota
	// StateNew: the packet opened a flow, or is in the original direction of
	// a flow that has seen no reply yet (Linux: IP_CT_NEW).
	StateNew
	// StateEstablished: the flow has seen packets in both directions, or
	// this is a reply (Linux: IP_CT_ESTABLISHED, IP_CT_ESTABLISHED_REPLY).
	StateEstablished
	// StateRelated: an ICMP error quoting a tracked flow (Linux: IP_CT_RELATED).
	StateRelated
)

var stateNames = [...]string{"invalid", "new", "established", "related"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "state?"
}

// Reason is a constant reason for an Invalid state, a refused flow or a
// destroyed entry.
type Reason uint8

const (
	ReasonNone Reason = iota
	ReasonTruncated
	ReasonMalformed
	ReasonFragment
	ReasonUnsupported
	ReasonBadFamily
	ReasonTCPFlags
	ReasonTCPNewNotSYN
	ReasonTCPTransition
	ReasonTCPSeqOverWindow
	ReasonTCPAckOverWindow
	ReasonTCPInvalidRST
	ReasonICMPNotEcho
	ReasonICMPReplyUntracked
	ReasonICMPErrorUntracked
	ReasonICMPErrorNested
	ReasonTableFull
	numReasons
)

var reasonNames = [...]string{
	ReasonNone:               "none",
	ReasonTruncated:          "truncated header",
	ReasonMalformed:          "malformed header",
	ReasonFragment:           "fragment",
	ReasonUnsupported:        "unsupported protocol",
	ReasonBadFamily:          "bad address family",
	ReasonTCPFlags:           "invalid tcp flag combination",
	ReasonTCPNewNotSYN:       "tcp new flow without syn",
	ReasonTCPTransition:      "tcp invalid state transition",
	ReasonTCPSeqOverWindow:   "tcp seq over the receiver's window",
	ReasonTCPAckOverWindow:   "tcp ack over data not seen yet",
	ReasonTCPInvalidRST:      "tcp rst out of window",
	ReasonICMPNotEcho:        "icmp type opens no flow",
	ReasonICMPReplyUntracked: "icmp echo reply without request",
	ReasonICMPErrorUntracked: "icmp error quotes no tracked flow",
	ReasonICMPErrorNested:    "icmp error quotes an icmp error",
	ReasonTableFull:          "table full of assured flows",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "reason?"
}

// TCPState is the per-entry TCP state, numbered as Linux's enum
// tcp_conntrack (and ctnetlink's CTA_PROTOINFO_TCP_STATE).
type TCPState uint8

const (
	TCPNone TCPState = iota
	TCPSynSent
	TCPSynRecv
	TCPEstablished
	TCPFinWait
	TCPCloseWait
	TCPLastAck
	TCPTimeWait
	TCPClose
	TCPSynSent2
	tcpMax    // sIV: invalid transition
	tcpIgnore // sIG: ignored packet
)

var tcpNames = [...]string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

func (s TCPState) String() string {
	if int(s) < len(tcpNames) {
		return tcpNames[s]
	}
	return "TCP?"
}

// Dir is the direction of a packet in its flow.
type Dir uint8

const (
	DirOriginal Dir = 0 // as the flow's first packet
	DirReply    Dir = 1
)

// Ref names one entry for SetVerdict. It stays valid until the entry is
// destroyed; a Ref to a destroyed entry is detected (generation) and ignored.
type Ref struct {
	shard, slot, gen uint32
}

// Result is Track's answer. It is a value; nothing in it points into the table.
type Result struct {
	State  State
	Reason Reason // why, when State is StateInvalid
	Dir    Dir
	TCP    TCPState // the entry's TCP state after this packet
	Ref    Ref      // the entry (zero when none)
	// Verdict and Rule are the values cached by SetVerdict (zero until set):
	// an established packet whose entry has a verdict skips the policy.
	Verdict uint8
	Rule    uint32
}
