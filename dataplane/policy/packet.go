package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParsePacket reads a packet written as
//
//	PROTO SRC[:PORT] -> DST[:PORT] in IFACE [STATE] [flags=FLAGS]
//
// for example "tcp 192.168.1.10:40000 -> 93.184.216.34:443 in lan new" or
// "icmpv6/packet-too-big [2001:db8::1] -> [fd00:53:1::10] in wan". PROTO is
// tcp, udp, icmp or icmpv6, optionally with an ICMP type (icmp/echo-request,
// the default, or icmp/3). IPv6 addresses with a port are bracketed. IFACE is
// an interface name from the policy. STATE is new, established, related or
// invalid; by default it is what Linux's conntrack gives a lone packet of
// that kind (FirstState): new for a TCP SYN, UDP and ICMP requests, invalid
// for an ICMP error or a TCP segment that is not a bare SYN. FLAGS are TCP
// flag letters F S R P A U; by default a TCP packet is a SYN, or an ACK when
// the state given is not new.
func (p *Program) ParsePacket(text string) (Packet, error) {
	var pk Packet
	f := strings.Fields(text)
	if len(f) < 5 || f[2] != "->" || f[4] != "in" || len(f) < 6 {
		return pk, fmt.Errorf("packet %q: want PROTO SRC[:PORT] -> DST[:PORT] in IFACE [STATE] [flags=FLAGS]", text)
	}
	protoS, typeS, hasType := strings.Cut(strings.ToLower(f[0]), "/")
	switch protoS {
	case "tcp":
		pk.Proto = ProtoTCP
	case "udp":
		pk.Proto = ProtoUDP
	case "icmp":
		pk.Proto, pk.ICMPType = ProtoICMP, 8
	case "icmpv6":
		pk.Proto, pk.ICMPType = ProtoICMPv6, 128
	default:
		return pk, fmt.Errorf("packet %q: protocol %q: want tcp, udp, icmp or icmpv6", text, f[0])
	}
	if hasType {
		if pk.Proto != ProtoICMP && pk.Proto != ProtoICMPv6 {
			return pk, fmt.Errorf("packet %q: only icmp and icmpv6 take a type", text)
		}
		if t, ok := icmpTypeNames[pk.Proto][typeS]; ok {
			pk.ICMPType = uint8(t)
		} else if n, err := strconv.ParseUint(typeS, 10, 8); err == nil {
			pk.ICMPType = uint8(n)
		} else {
			return pk, fmt.Errorf("packet %q: ICMP type %q: want 0-255 or a name such as echo-request", text, typeS)
		}
	}
	ports := pk.Proto == ProtoTCP || pk.Proto == ProtoUDP
	var err error
	if pk.Src, pk.SrcPort, err = parseEndpoint(f[1], ports); err != nil {
		return pk, fmt.Errorf("packet %q: source: %w", text, err)
	}
	if pk.Dst, pk.DstPort, err = parseEndpoint(f[3], ports); err != nil {
		return pk, fmt.Errorf("packet %q: destination: %w", text, err)
	}
	if pk.Src.Is4In6() || pk.Dst.Is4In6() {
		return pk, fmt.Errorf("packet %q: write IPv4 addresses as IPv4, not IPv4-mapped IPv6", text)
	}
	if pk.Src.Is4() != pk.Dst.Is4() {
		return pk, fmt.Errorf("packet %q: source and destination are of different address families", text)
	}
	if pk.Proto == ProtoICMP && !pk.Src.Is4() || pk.Proto == ProtoICMPv6 && pk.Src.Is4() {
		return pk, fmt.Errorf("packet %q: use icmp with IPv4 and icmpv6 with IPv6", text)
	}
	in, ok := p.Interface(f[5])
	if !ok {
		names := make([]string, len(p.Interfaces))
		for i, ifc := range p.Interfaces {
			names[i] = ifc.Name
		}
		return pk, fmt.Errorf("packet %q: interface %q is not in the policy (it has %s)", text, f[5], strings.Join(names, ", "))
	}
	pk.In = in
	if ports && (pk.SrcPort == 0 || pk.DstPort == 0) {
		return pk, fmt.Errorf("packet %q: %s needs a port 1-65535 on both ends, as ADDR:PORT or [IPv6]:PORT", text, protoS)
	}
	flagsSet, stateSet := false, false
	for _, tok := range f[6:] {
		if fl, ok := strings.CutPrefix(tok, "flags="); ok {
			if pk.Proto != ProtoTCP {
				return pk, fmt.Errorf("packet %q: flags apply to tcp only", text)
			}
			if flagsSet {
				return pk, fmt.Errorf("packet %q: flags given twice", text)
			}
			for _, c := range strings.ToUpper(fl) {
				bit := strings.IndexRune("FSRPAU", c)
				if bit < 0 {
					return pk, fmt.Errorf("packet %q: TCP flag %q: want letters of FSRPAU", text, c)
				}
				pk.TCPFlags |= 1 << bit
			}
			flagsSet = true
			continue
		}
		st, ok := ParseCTState(tok)
		if !ok {
			return pk, fmt.Errorf("packet %q: %q: want a state (new, established, related, invalid) or flags=FLAGS", text, tok)
		}
		if stateSet {
			return pk, fmt.Errorf("packet %q: more than one state", text)
		}
		pk.State, stateSet = st, true
	}
	if pk.Proto == ProtoTCP && !flagsSet {
		pk.TCPFlags = TCPAck
		if pk.State == StateNew {
			pk.TCPFlags = TCPSyn
		}
	}
	if !stateSet {
		// What the kernel would call a lone packet of this kind: an ICMP
		// error quoting no flow, or a TCP segment without a bare SYN, is
		// invalid.
		pk.State = FirstState(&pk)
	}
	return pk, nil
}

func parseEndpoint(s string, wantPort bool) (netip.Addr, uint16, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if !wantPort {
			return netip.Addr{}, 0, fmt.Errorf("%q: this protocol has no ports", s)
		}
		if ap.Addr().Zone() != "" {
			return netip.Addr{}, 0, fmt.Errorf("%q: remove the zone", s)
		}
		return ap.Addr(), ap.Port(), nil
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, 0, fmt.Errorf("%q is not an address or ADDR:PORT ([IPv6]:PORT)", s)
	}
	return a, 0, nil
}
