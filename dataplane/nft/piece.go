package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// piece is one match or statement of a rule: its nft text and the netlink
// expressions that implement it. Every piece loads into register 1 and
// consumes it, so pieces compose in any order.
type piece struct {
	text  string
	exprs []expr.Any
}

func join(ps ...piece) piece {
	var out piece
	var texts []string
	for _, p := range ps {
		if p.text != "" {
			texts = append(texts, p.text)
		}
		out.exprs = append(out.exprs, p.exprs...)
	}
	out.text = strings.Join(texts, " ")
	return out
}

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// iifname matches the input interface by name.
func iifname(dev string) piece {
	return piece{fmt.Sprintf("iifname %q", dev), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(dev)},
	}}
}

// oifname matches the output interface by name.
func oifname(dev string) piece {
	return piece{fmt.Sprintf("oifname %q", dev), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(dev)},
	}}
}

// nfproto matches the address family of an inet-family packet.
func nfproto(v4 bool) piece {
	fam, name := byte(unix.NFPROTO_IPV6), "ipv6"
	if v4 {
		fam, name = unix.NFPROTO_IPV4, "ipv4"
	}
	return piece{"meta nfproto " + name, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
	}}
}

var l4names = map[uint8]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_ICMP: "icmp", unix.IPPROTO_ICMPV6: "ipv6-icmp"}

// l4proto matches the transport protocol.
func l4proto(p uint8) piece {
	return piece{"meta l4proto " + l4names[p], []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}}
}

// addrInSet matches the source or destination address against a named set;
// it implies the family. Negated, it matches addresses not in the set.
func addrInSet(v4, src, negate bool, set *set) piece {
	off, ln, fam := uint32(16), uint32(4), "ip"
	if src {
		off = 12
	}
	if !v4 {
		off, ln, fam = 24, 16, "ip6"
		if src {
			off = 8
		}
	}
	dir := "daddr"
	if src {
		dir = "saddr"
	}
	op := ""
	if negate {
		op = "!= "
	}
	return join(nfproto(v4), piece{fmt.Sprintf("%s %s %s@%s", fam, dir, op, set.name), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: ln},
		&expr.Lookup{SourceRegister: 1, SetName: set.name, SetID: set.id, Invert: negate},
	}})
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// portRange matches a transport port range (tcp/udp dport), or an ICMP type
// range, of protocol p.
func portRange(p uint8, lo, hi uint16, dst bool) piece {
	name := l4names[p]
	var load *expr.Payload
	var field string
	var from, to []byte
	switch p {
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		name = map[uint8]string{unix.IPPROTO_ICMP: "icmp", unix.IPPROTO_ICMPV6: "icmpv6"}[p]
		load = &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1}
		field, from, to = "type", []byte{byte(lo)}, []byte{byte(hi)}
	default:
		off := uint32(2)
		field = "dport"
		if !dst {
			off, field = 0, "sport"
		}
		load = &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2}
		from, to = be16(lo), be16(hi)
	}
	if lo == hi {
		return join(l4proto(p), piece{fmt.Sprintf("%s %s %d", name, field, lo), []expr.Any{
			load, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: from},
		}})
	}
	return join(l4proto(p), piece{fmt.Sprintf("%s %s %d-%d", name, field, lo, hi), []expr.Any{
		load, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: from, ToData: to},
	}})
}

// TCP flag bits.
const (
	fin = 1 << iota
	syn
	rst
	psh
	ack
	urg
)

var flagNames = []string{"fin", "syn", "rst", "psh", "ack", "urg"}

func flagText(f uint8) string {
	var names []string
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "0x0"
	}
	return strings.Join(names, " | ")
}

// udpPorts matches a UDP source and destination port.
func udpPorts(sport, dport uint16) piece {
	return join(l4proto(unix.IPPROTO_UDP), piece{fmt.Sprintf("udp sport %d udp dport %d", sport, dport), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(sport)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(dport)},
	}})
}

// tcpFlags matches tcp flags & mask == value (or != value).
func tcpFlags(mask, value uint8, negate bool) piece {
	op, cmp := "==", expr.CmpOpEq
	if negate {
		op, cmp = "!=", expr.CmpOpNeq
	}
	return join(l4proto(unix.IPPROTO_TCP), piece{fmt.Sprintf("tcp flags & (%s) %s %s", flagText(mask), op, flagText(value)), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{mask}, Xor: []byte{0}},
		&expr.Cmp{Op: cmp, Register: 1, Data: []byte{value}},
	}})
}

// Conntrack state bits, as the kernel's ct state key holds them.
const (
	ctInvalid     = 1
	ctEstablished = 2
	ctRelated     = 4
	ctNew         = 8
)

func native32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// ctState matches packets whose conntrack state is any of mask.
func ctState(mask uint32, text string) piece {
	return piece{"ct state " + text, []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(mask), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native32(0)},
	}}
}

// ctStatusDNAT matches connections whose destination was translated.
func ctStatusDNAT() piece {
	const ipsDstNAT = 1 << 5
	return piece{"ct status dnat", []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(ipsDstNAT), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native32(0)},
	}}
}

// ctOriginalDport matches the original (pre-NAT) destination port.
func ctOriginalDport(lo, hi uint16) piece {
	load := &expr.Ct{Register: 1, Key: expr.CtKeyPROTODST, Direction: 0}
	if lo == hi {
		return piece{fmt.Sprintf("ct original proto-dst %d", lo), []expr.Any{load, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(lo)}}}
	}
	return piece{fmt.Sprintf("ct original proto-dst %d-%d", lo, hi), []expr.Any{load, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: be16(lo), ToData: be16(hi)}}}
}

// rpfMissing matches packets failing the reverse-path check: no route back
// to the source through the input interface (strict) or at all (loose).
func rpfMissing(strict bool) piece {
	text := "fib saddr oif missing"
	if strict {
		text = "fib saddr . iif oif missing"
	}
	// "missing" is the presence flag, compared with 0.
	return piece{text, []expr.Any{
		&expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: strict, ResultOIF: true, FlagPRESENT: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(0)},
	}}
}

// Route types, as fib reports them.
const (
	rtnLocal     = 2
	rtnBroadcast = 3
	rtnMulticast = 5
)

// daddrType matches packets whose destination has the given route type.
func daddrType(t uint32) piece {
	name := map[uint32]string{rtnLocal: "local", rtnBroadcast: "broadcast", rtnMulticast: "multicast"}[t]
	return piece{"fib daddr type " + name, []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(t)},
	}}
}

// counter counts into the named counter of a policy rule.
func counter(name string) piece {
	return piece{fmt.Sprintf("counter name %q", name), []expr.Any{&expr.Objref{Type: 1, Name: name}}}
}

func verdict(kind expr.VerdictKind, chain string) piece {
	switch kind {
	case expr.VerdictAccept:
		return piece{"accept", []expr.Any{&expr.Verdict{Kind: kind}}}
	case expr.VerdictDrop:
		return piece{"drop", []expr.Any{&expr.Verdict{Kind: kind}}}
	case expr.VerdictReturn:
		return piece{"return", []expr.Any{&expr.Verdict{Kind: kind}}}
	case expr.VerdictJump:
		return piece{"jump " + chain, []expr.Any{&expr.Verdict{Kind: kind, Chain: chain}}}
	}
	panic(fmt.Sprintf("nft: verdict %v not built", kind))
}

// dnat translates the destination to addr (and port, when not 0).
func dnat(to netip.AddrPort) piece {
	fam, famText := uint32(unix.NFPROTO_IPV4), "ip"
	if !to.Addr().Is4() {
		fam, famText = unix.NFPROTO_IPV6, "ip6"
	}
	exprs := []expr.Any{&expr.Immediate{Register: 1, Data: to.Addr().AsSlice()}}
	n := &expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: 1, Specified: true}
	target := to.Addr().String()
	if !to.Addr().Is4() {
		target = "[" + target + "]"
	}
	if to.Port() != 0 {
		exprs = append(exprs, &expr.Immediate{Register: 2, Data: be16(to.Port())})
		n.RegProtoMin = 2
		target = fmt.Sprintf("%s:%d", target, to.Port())
	}
	return piece{fmt.Sprintf("dnat %s to %s", famText, target), append(exprs, n)}
}

func masquerade() piece {
	return piece{"masquerade", []expr.Any{&expr.Masq{}}}
}

// markSet sets the packet mark: drops carry their rule's number this way to
// the drop log.
func markSet(v uint32) piece {
	return piece{fmt.Sprintf("meta mark set 0x%08x", v), []expr.Any{
		&expr.Immediate{Register: 1, Data: native32(v)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}}
}

// limitOver matches packets beyond n per unit (after a burst of n).
func limitOver(n uint32, per time.Duration) piece {
	unit, name := limitUnit(per)
	return piece{fmt.Sprintf("limit rate over %d/%s burst %d packets", n, name, n), []expr.Any{
		&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(n), Unit: unit, Burst: n, Over: true},
	}}
}

func limitUnit(per time.Duration) (expr.LimitTime, string) {
	switch per {
	case time.Minute:
		return expr.LimitTimeMinute, "minute"
	case time.Hour:
		return expr.LimitTimeHour, "hour"
	}
	return expr.LimitTimeSecond, "second"
}

// limitRate matches while packets stay under n per unit (with a burst of
// five), and not beyond.
func limitRate(n uint32, per time.Duration) piece {
	unit, name := expr.LimitTimeSecond, "second"
	switch per {
	case time.Minute:
		unit, name = expr.LimitTimeMinute, "minute"
	case time.Hour:
		unit, name = expr.LimitTimeHour, "hour"
	}
	return piece{fmt.Sprintf("limit rate %d/%s burst 5 packets", n, name), []expr.Any{
		&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(n), Unit: unit, Burst: 5},
	}}
}

// logGroup sends the packet to an NFLOG group with a prefix.
func logGroup(group uint16, prefix string) piece {
	return piece{fmt.Sprintf("log prefix %q group %d", prefix, group), []expr.Any{
		&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: group, Data: []byte(prefix)},
	}}
}

// addrProtoPortInSet matches destination address, transport protocol and
// destination port together against a concatenated set: one lookup for a
// whole allowlist entry.
func addrProtoPortInSet(v4 bool, set *set) piece {
	off, ln, fam, protoReg, portReg := uint32(16), uint32(4), "ip", uint32(9), uint32(10)
	if !v4 {
		off, ln, fam, protoReg, portReg = 24, 16, "ip6", 12, 13
	}
	return join(nfproto(v4), piece{fmt.Sprintf("%s daddr . meta l4proto . th dport @%s", fam, set.name), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: ln},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoReg},
		&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: set.name, SetID: set.id},
	}})
}
