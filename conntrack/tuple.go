package conntrack

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Address families of a Tuple and a Packet.
const (
	IPv4 uint8 = 4
	IPv6 uint8 = 6
)

// IP protocol numbers the table tracks.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// Tuple is the packed, pointer-free key of one direction of a flow: 40 bytes,
// comparable with ==, usable as a map key. IPv4 addresses fill the first four
// bytes of Src and Dst; the rest stay zero. For ICMP and ICMPv6 echo both
// ports hold the echo identifier.
//
// The zero Tuple is not a valid flow (Family 0).
type Tuple struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Proto            uint8
	Family           uint8
	Zone             uint16 // zone or interface id; flows in different zones never meet
}

// Reverse returns the tuple of the other direction.
func (t Tuple) Reverse() Tuple {
	t.Src, t.Dst = t.Dst, t.Src
	t.SrcPort, t.DstPort = t.DstPort, t.SrcPort
	return t
}

// SrcAddr returns the source address as a netip.Addr (not for the packet path).
func (t Tuple) SrcAddr() netip.Addr { return addr(t.Family, &t.Src) }

// DstAddr returns the destination address as a netip.Addr (not for the packet path).
func (t Tuple) DstAddr() netip.Addr { return addr(t.Family, &t.Dst) }

func addr(family uint8, a *[16]byte) netip.Addr {
	if family == IPv4 {
		return netip.AddrFrom4([4]byte(a[:4]))
	}
	return netip.AddrFrom16(*a)
}

// flowKey is the canonical form of a flow's Tuple packed into five
// little-endian words, the layout of Tuple itself: Src, Dst, then the ports,
// protocol, family and zone in the fifth word. The canonical form puts the
// lower (address, port) endpoint first, so both directions of a flow have
// one key and find the one entry with one probe. Comparing and hashing five
// words costs a few instructions.
type flowKey [5]uint64

// set makes k the key of the flow one packet direction belongs to and
// reports whether that direction had to be reversed to get it.
func (k *flowKey) set(src, dst *[16]byte, sport, dport uint16, proto, family uint8, zone uint16) (rev bool) {
	s0, s1 := binary.LittleEndian.Uint64(src[:8]), binary.LittleEndian.Uint64(src[8:])
	d0, d1 := binary.LittleEndian.Uint64(dst[:8]), binary.LittleEndian.Uint64(dst[8:])
	// The endpoint order is that of the addresses read big-endian.
	if bs, bd := bits.ReverseBytes64(s0), bits.ReverseBytes64(d0); bs != bd {
		rev = bs > bd
	} else if bs, bd := bits.ReverseBytes64(s1), bits.ReverseBytes64(d1); bs != bd {
		rev = bs > bd
	} else {
		rev = sport > dport
	}
	if rev {
		s0, s1, d0, d1 = d0, d1, s0, s1
		sport, dport = dport, sport
	}
	k[0], k[1], k[2], k[3] = s0, s1, d0, d1
	k[4] = uint64(sport) | uint64(dport)<<16 | uint64(proto)<<32 | uint64(family)<<40 | uint64(zone)<<48
	return rev
}

// key returns t's flow key and whether t had to be reversed to get it.
func (t *Tuple) key() (k flowKey, rev bool) {
	rev = k.set(&t.Src, &t.Dst, t.SrcPort, t.DstPort, t.Proto, t.Family, t.Zone)
	return k, rev
}

// tuple unpacks the key (not for the packet path).
func (k *flowKey) tuple() Tuple {
	var t Tuple
	binary.LittleEndian.PutUint64(t.Src[:8], k[0])
	binary.LittleEndian.PutUint64(t.Src[8:], k[1])
	binary.LittleEndian.PutUint64(t.Dst[:8], k[2])
	binary.LittleEndian.PutUint64(t.Dst[8:], k[3])
	t.SrcPort, t.DstPort = uint16(k[4]), uint16(k[4]>>16)
	t.Proto, t.Family, t.Zone = uint8(k[4]>>32), uint8(k[4]>>40), uint16(k[4]>>48)
	return t
}

// equal compares two keys word by word, without branches.
func (k *flowKey) equal(o *flowKey) bool {
	return (k[0]^o[0])|(k[1]^o[1])|(k[2]^o[2])|(k[3]^o[3])|(k[4]^o[4]) == 0
}

// hash mixes the key with the table's seed: two 64x64->128-bit multiply-folds
// side by side over the addresses, and one joining them with the ports,
// protocol, family and zone. The seed keeps remote hosts from choosing
// colliding flows.
func (k *flowKey) hash(seed uint64) uint64 {
	const m1, m2, m3 = 0xa0761d6478bd642f, 0xe7037ed1a0b428db, 0x8ebc6af09c88c6e3
	x := mix(k[0]^seed^m1, k[2]^m2)
	y := mix(k[1]^seed^m3, k[3]^m1)
	return mix(x^k[4]^m2, y^seed)
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}
