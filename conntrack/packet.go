package conntrack

import "encoding/binary"

// TCP header flags, as in the TCP header's flag byte.
const (
	FlagFIN uint8 = 0x01
	FlagSYN uint8 = 0x02
	FlagRST uint8 = 0x04
	FlagPSH uint8 = 0x08
	FlagACK uint8 = 0x10
	FlagURG uint8 = 0x20
	FlagECE uint8 = 0x40
	FlagCWR uint8 = 0x80
)

// Packet is the summary of one packet that Track needs. It is a plain value:
// fill it by hand (replay, tests) or with Decode; Track only reads it.
type Packet struct {
	Family           uint8 // IPv4 or IPv6
	Proto            uint8 // ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6
	Zone             uint16
	Src, Dst         [16]byte // IPv4 in the first four bytes
	SrcPort, DstPort uint16

	Length     uint32 // bytes counted for the flow (the IP total length)
	PayloadLen uint32 // L4 payload bytes (TCP: after the header and options)

	// TCP.
	TCPFlags  uint8
	Seq, Ack  uint32
	Window    uint16 // raw, unscaled
	HasWScale bool   // the window scale option was present (meaningful on SYN)
	WScale    uint8
	SACKPerm  bool

	// ICMP and ICMPv6.
	ICMPType, ICMPCode uint8
	ICMPID             uint16
	// Quoted is the tuple of the packet an ICMP error quotes, as that packet
	// travelled (its source is the host the error is sent to); HasQuoted
	// says the error carried one that could be read.
	Quoted    Tuple
	HasQuoted bool

	// Bad, when not ReasonNone, is why Decode rejected the packet; Track
	// then answers Invalid with this reason.
	Bad Reason
}

// Tuple returns the packet's tuple (for ICMP echo, both ports hold the id).
func (p *Packet) Tuple() Tuple {
	t := Tuple{Src: p.Src, Dst: p.Dst, SrcPort: p.SrcPort, DstPort: p.DstPort, Proto: p.Proto, Family: p.Family, Zone: p.Zone}
	if p.Proto == ProtoICMP || p.Proto == ProtoICMPv6 {
		t.SrcPort, t.DstPort = p.ICMPID, p.ICMPID
	}
	return t
}

// Decode fills p from an IPv4 or IPv6 packet starting at its IP header. It
// never allocates and never panics; malformed or truncated input returns a
// reason other than ReasonNone, and Track(p) then says Invalid with the same
// reason. The zone is left as it was: set p.Zone before or after.
func (p *Packet) Decode(b []byte) Reason {
	zone := p.Zone
	*p = Packet{Zone: zone}
	p.Quoted.Zone = zone
	if len(b) < 1 {
		return p.fail(ReasonTruncated)
	}
	proto, l4, r := p.decodeIP(b)
	if r != ReasonNone {
		return p.fail(r)
	}
	return p.decodeL4(proto, l4)
}

func (p *Packet) decodeIP(b []byte) (proto uint8, l4 []byte, r Reason) {
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return 0, nil, ReasonTruncated
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < 20 || total < ihl {
			return 0, nil, ReasonMalformed
		}
		if total > len(b) {
			return 0, nil, ReasonTruncated
		}
		if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 { // MF or offset
			return 0, nil, ReasonFragment
		}
		p.Family = IPv4
		p.Proto = b[9]
		copy(p.Src[:4], b[12:16])
		copy(p.Dst[:4], b[16:20])
		p.Length = uint32(total)
		return b[9], b[ihl:total], ReasonNone
	case 6:
		if len(b) < 40 {
			return 0, nil, ReasonTruncated
		}
		total := 40 + int(binary.BigEndian.Uint16(b[4:6]))
		if total > len(b) {
			return 0, nil, ReasonTruncated
		}
		p.Family = IPv6
		copy(p.Src[:], b[8:24])
		copy(p.Dst[:], b[24:40])
		p.Length = uint32(total)
		next, off := b[6], 40
		for {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if off+8 > total {
					return 0, nil, ReasonTruncated
				}
				next, off = b[off], off+(int(b[off+1])+1)*8
				if off > total {
					return 0, nil, ReasonTruncated
				}
				continue
			case 44:
				return 0, nil, ReasonFragment
			}
			p.Proto = next
			return next, b[off:total], ReasonNone
		}
	}
	return 0, nil, ReasonMalformed
}

func (p *Packet) decodeL4(proto uint8, b []byte) Reason {
	switch proto {
	case ProtoTCP:
		if len(b) < 20 {
			return p.fail(ReasonTruncated)
		}
		doff := int(b[12]>>4) * 4
		if doff < 20 {
			return p.fail(ReasonMalformed)
		}
		if doff > len(b) {
			return p.fail(ReasonTruncated)
		}
		p.SrcPort = binary.BigEndian.Uint16(b[0:2])
		p.DstPort = binary.BigEndian.Uint16(b[2:4])
		p.Seq = binary.BigEndian.Uint32(b[4:8])
		p.Ack = binary.BigEndian.Uint32(b[8:12])
		p.TCPFlags = b[13]
		p.Window = binary.BigEndian.Uint16(b[14:16])
		p.PayloadLen = uint32(len(b) - doff)
		p.tcpOptions(b[20:doff])
		return ReasonNone
	case ProtoUDP:
		if len(b) < 8 {
			return p.fail(ReasonTruncated)
		}
		if n := int(binary.BigEndian.Uint16(b[4:6])); n < 8 || n > len(b) {
			return p.fail(ReasonMalformed)
		}
		p.SrcPort = binary.BigEndian.Uint16(b[0:2])
		p.DstPort = binary.BigEndian.Uint16(b[2:4])
		p.PayloadLen = uint32(len(b) - 8)
		return ReasonNone
	case ProtoICMP, ProtoICMPv6:
		if (proto == ProtoICMP) != (p.Family == IPv4) {
			return p.fail(ReasonUnsupported)
		}
		if len(b) < 8 {
			return p.fail(ReasonTruncated)
		}
		p.ICMPType, p.ICMPCode = b[0], b[1]
		p.PayloadLen = uint32(len(b) - 8)
		if isICMPError(proto, p.ICMPType) {
			if r := p.decodeQuoted(b[8:]); r != ReasonNone {
				return p.fail(r)
			}
			return ReasonNone
		}
		p.ICMPID = binary.BigEndian.Uint16(b[4:6])
		return ReasonNone
	}
	return p.fail(ReasonUnsupported)
}

// fail keeps the addresses for logging but makes Track report r.
func (p *Packet) fail(r Reason) Reason {
	p.Bad = r
	return r
}

// decodeQuoted reads the IP header and first eight L4 bytes an ICMP error
// quotes (RFC 792, RFC 4443).
func (p *Packet) decodeQuoted(b []byte) Reason {
	var q Packet
	q.Zone = p.Zone
	if len(b) < 1 {
		return ReasonTruncated
	}
	var proto uint8
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return ReasonTruncated
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 {
			return ReasonMalformed
		}
		if len(b) < ihl+8 {
			return ReasonTruncated
		}
		q.Family, proto = IPv4, b[9]
		copy(q.Src[:4], b[12:16])
		copy(q.Dst[:4], b[16:20])
		l4 = b[ihl:]
	case 6:
		if len(b) < 48 {
			return ReasonTruncated
		}
		q.Family, proto = IPv6, b[6]
		copy(q.Src[:], b[8:24])
		copy(q.Dst[:], b[24:40])
		l4 = b[40:]
	default:
		return ReasonMalformed
	}
	if q.Family != p.Family {
		return ReasonMalformed
	}
	q.Proto = proto
	switch proto {
	case ProtoTCP, ProtoUDP:
		q.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		q.DstPort = binary.BigEndian.Uint16(l4[2:4])
	case ProtoICMP, ProtoICMPv6:
		if isICMPError(proto, l4[0]) {
			return ReasonICMPErrorNested
		}
		q.ICMPID = binary.BigEndian.Uint16(l4[4:6])
	default:
		return ReasonUnsupported
	}
	p.Quoted, p.HasQuoted = q.Tuple(), true
	return ReasonNone
}

func (p *Packet) tcpOptions(o []byte) {
	for len(o) > 0 {
		switch o[0] {
		case 0: // end of options
			return
		case 1: // no-op
			o = o[1:]
			continue
		}
		if len(o) < 2 || o[1] < 2 || int(o[1]) > len(o) {
			return // silly or partial option: stop, as Linux does
		}
		switch {
		case o[0] == 3 && o[1] == 3:
			p.HasWScale, p.WScale = true, min(o[2], 14)
		case o[0] == 4 && o[1] == 2:
			p.SACKPerm = true
		}
		o = o[o[1]:]
	}
}

// isICMPError reports whether an ICMP or ICMPv6 type is an error that quotes
// the packet that caused it.
func isICMPError(proto, typ uint8) bool {
	if proto == ProtoICMP {
		switch typ {
		case 3, 4, 5, 11, 12: // unreachable, source quench, redirect, time exceeded, parameter problem
			return true
		}
		return false
	}
	return typ >= 1 && typ <= 4 // unreachable, too big, time exceeded, parameter problem
}
