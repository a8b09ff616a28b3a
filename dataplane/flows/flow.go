package flows

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/ti-mo/conntrack"
)

// Flow is one connection the kernel tracks, as the TUI and `sluice flows
// --json` show it. It is a plain value: a snapshot taken when it was listed
// or reported, never updated afterwards.
//
// Src and Dst are the original direction, as the connection's first packet
// carried them; ReplySrc and ReplyDst are what the answers carry, so a
// masqueraded flow's ReplyDst is the box's uplink address and a port
// forward's ReplySrc is the inside host. Ports are 0 for protocols without
// them (ICMP keeps its identity in the ICMP fields).
type Flow struct {
	ID       uint32         `json:"id"` // the kernel's ID of the entry
	Proto    uint8          `json:"proto"`
	Src      netip.AddrPort `json:"src"`
	Dst      netip.AddrPort `json:"dst"`
	ReplySrc netip.AddrPort `json:"reply_src"`
	ReplyDst netip.AddrPort `json:"reply_dst"`

	// ICMPType, ICMPCode and ICMPID are the original direction's ICMP or
	// ICMPv6 request (8 or 128 for a ping); zero for other protocols.
	ICMPType uint8  `json:"icmp_type,omitempty"`
	ICMPCode uint8  `json:"icmp_code,omitempty"`
	ICMPID   uint16 `json:"icmp_id,omitempty"`

	// State is the TCP state in conntrack(8)'s words, such as
	// "ESTABLISHED" or "TIME_WAIT"; empty for other protocols.
	State     string `json:"state,omitempty"`
	Assured   bool   `json:"assured"`    // kept when the table is full
	SeenReply bool   `json:"seen_reply"` // traffic has been seen both ways
	SrcNAT    bool   `json:"snat"`       // the source is rewritten (masquerade)
	DstNAT    bool   `json:"dnat"`       // the destination is rewritten (port forward)

	// Timeout is how long the kernel keeps the entry without another packet.
	Timeout time.Duration `json:"timeout"`

	// Start is when the flow's first packet was seen. The kernel records it
	// only while net.netfilter.nf_conntrack_timestamp is 1 (sluice run sets
	// it), and only for entries created meanwhile; otherwise it is zero.
	Start time.Time `json:"start,omitzero"`

	// Packets and Bytes count the original [0] and reply [1] directions.
	// The kernel counts only while the namespace's
	// net.netfilter.nf_conntrack_acct is 1 (it is 0 by default), and only
	// for entries created meanwhile; otherwise they are zero.
	Packets [2]uint64 `json:"packets"`
	Bytes   [2]uint64 `json:"bytes"`

	Mark uint32 `json:"mark,omitempty"`
	Zone uint16 `json:"zone,omitempty"`
}

// String writes f's original direction the way policy.ParsePacket reads a
// packet, such as "tcp 192.168.1.10:40000 -> 93.184.216.34:443" or
// "icmp 192.168.1.10 -> 8.8.8.8 id 7".
func (f Flow) String() string { return string(f.AppendTo(nil)) }

// AppendTo appends f.String() to b; it does not allocate when b has room.
func (f *Flow) AppendTo(b []byte) []byte {
	if name, ok := policy.ProtoName(f.Proto); ok {
		b = append(b, name...)
	} else {
		b = append(b, "proto "...)
		b = strconv.AppendInt(b, int64(f.Proto), 10)
	}
	b = append(b, ' ')
	if f.Src.Port() == 0 && f.Dst.Port() == 0 {
		b = f.Src.Addr().AppendTo(b)
		b = append(b, " -> "...)
		b = f.Dst.Addr().AppendTo(b)
		if f.Proto == policy.ProtoICMP || f.Proto == policy.ProtoICMPv6 {
			b = append(b, " id "...)
			b = strconv.AppendInt(b, int64(f.ICMPID), 10)
		}
		return b
	}
	b = f.Src.AppendTo(b)
	b = append(b, " -> "...)
	return f.Dst.AppendTo(b)
}

// tcpStates are the names of the kernel's enum tcp_conntrack, as
// conntrack(8) prints them.
var tcpStates = [...]string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

func tcpState(s uint8) string {
	if int(s) < len(tcpStates) {
		return tcpStates[s]
	}
	return "STATE_" + strconv.Itoa(int(s))
}

// fromKernel converts a flow as ti-mo/conntrack decoded it.
func fromKernel(k *conntrack.Flow) Flow {
	o, r := &k.TupleOrig, &k.TupleReply
	f := Flow{
		ID:        k.ID,
		Proto:     o.Proto.Protocol,
		Src:       netip.AddrPortFrom(o.IP.SourceAddress, o.Proto.SourcePort),
		Dst:       netip.AddrPortFrom(o.IP.DestinationAddress, o.Proto.DestinationPort),
		ReplySrc:  netip.AddrPortFrom(r.IP.SourceAddress, r.Proto.SourcePort),
		ReplyDst:  netip.AddrPortFrom(r.IP.DestinationAddress, r.Proto.DestinationPort),
		Assured:   k.Status.Assured(),
		SeenReply: k.Status.SeenReply(),
		SrcNAT:    k.Status.SrcNAT(),
		DstNAT:    k.Status.DstNAT(),
		Timeout:   time.Duration(k.Timeout) * time.Second,
		Packets:   [2]uint64{k.CountersOrig.Packets, k.CountersReply.Packets},
		Bytes:     [2]uint64{k.CountersOrig.Bytes, k.CountersReply.Bytes},
		Mark:      k.Mark,
		Zone:      k.Zone,
	}
	if !k.Timestamp.Start.IsZero() && k.Timestamp.Start.Unix() > 0 {
		f.Start = k.Timestamp.Start
	}
	if o.Proto.ICMPv4 || o.Proto.ICMPv6 {
		f.ICMPType, f.ICMPCode, f.ICMPID = o.Proto.ICMPType, o.Proto.ICMPCode, o.Proto.ICMPID
	}
	if k.ProtoInfo.TCP != nil {
		f.State = tcpState(k.ProtoInfo.TCP.State)
	}
	return f
}

// toKernel returns what a delete request names f by: its original tuple
// and zone. The kernel looks the entry up by the original tuple alone; the
// reply tuple is filled in only because ti-mo/conntrack v0.6.0 sends an
// IPv6 request only when both tuples are IPv6.
func toKernel(f Flow) conntrack.Flow {
	proto := conntrack.ProtoTuple{
		Protocol:        f.Proto,
		SourcePort:      f.Src.Port(),
		DestinationPort: f.Dst.Port(),
		ICMPID:          f.ICMPID,
		ICMPType:        f.ICMPType,
		ICMPCode:        f.ICMPCode,
	}
	reply := proto
	reply.SourcePort, reply.DestinationPort = f.ReplySrc.Port(), f.ReplyDst.Port()
	return conntrack.Flow{
		TupleOrig:  conntrack.Tuple{IP: conntrack.IPTuple{SourceAddress: f.Src.Addr(), DestinationAddress: f.Dst.Addr()}, Proto: proto},
		TupleReply: conntrack.Tuple{IP: conntrack.IPTuple{SourceAddress: f.ReplySrc.Addr(), DestinationAddress: f.ReplyDst.Addr()}, Proto: reply},
		Zone:       f.Zone,
	}
}
