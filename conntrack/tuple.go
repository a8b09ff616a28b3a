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

// canonical reports whether t is already in the table's key order: the lower
// (address, port) endpoint first. The key of a flow is the canonical form of
// either direction, so both directions find the one entry with one probe.
func (t *Tuple) canonical() bool {
	s0, d0 := binary.BigEndian.Uint64(t.Src[:8]), binary.BigEndian.Uint64(t.Dst[:8])
	if s0 != d0 {
		return s0 < d0
	}
	s1, d1 := binary.BigEndian.Uint64(t.Src[8:]), binary.BigEndian.Uint64(t.Dst[8:])
	if s1 != d1 {
		return s1 < d1
	}
	return t.SrcPort <= t.DstPort
}

// key returns the canonical tuple and whether t had to be reversed to get it.
func (t Tuple) key() (Tuple, bool) {
	if t.canonical() {
		return t, false
	}
	return t.Reverse(), true
}

// hash mixes the 40 key bytes with the table's seed (a wyhash-style
// multiply-fold; the seed keeps remote hosts from choosing colliding flows).
func hashTuple(k *Tuple, seed uint64) uint64 {
	const m1, m2 = 0xa0761d6478bd642f, 0xe7037ed1a0b428db
	a := binary.LittleEndian.Uint64(k.Src[:8])
	b := binary.LittleEndian.Uint64(k.Src[8:])
	c := binary.LittleEndian.Uint64(k.Dst[:8])
	d := binary.LittleEndian.Uint64(k.Dst[8:])
	e := uint64(k.SrcPort) | uint64(k.DstPort)<<16 | uint64(k.Proto)<<32 | uint64(k.Family)<<40 | uint64(k.Zone)<<48
	h := mix(a^seed^m1, b^m2)
	h = mix(h^c, d^m1)
	h = mix(h^e, seed^m2)
	return mix(h, m1^40)
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}
