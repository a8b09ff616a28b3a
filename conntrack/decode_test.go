package conntrack

import (
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// serialize builds a packet with gopacket (tests only).
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func samplePackets(t testing.TB) map[string][]byte {
	v4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2)}
	syn := &layers.TCP{SrcPort: 40000, DstPort: 80, Seq: 100, SYN: true, Window: 64240,
		Options: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 180}},
			{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		}}
	syn.SetNetworkLayerForChecksum(v4)
	v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: net.ParseIP("2001:db8::1"), DstIP: net.ParseIP("2001:db8::2")}
	udp := &layers.UDP{SrcPort: 5353, DstPort: 53}
	udp.SetNetworkLayerForChecksum(v6)
	v4u := *v4
	v4u.Protocol = layers.IPProtocolUDP
	udp4 := &layers.UDP{SrcPort: 1000, DstPort: 2000}
	udp4.SetNetworkLayerForChecksum(&v4u)
	quoted := serialize(t, &v4u, udp4, gopacket.Payload([]byte("abcdefgh")))
	v4i := *v4
	v4i.Protocol = layers.IPProtocolICMPv4
	v4i.SrcIP, v4i.DstIP = v4.DstIP, v4.SrcIP
	return map[string][]byte{
		"tcp4 syn":      serialize(t, v4, syn, gopacket.Payload(nil)),
		"udp6":          serialize(t, v6, udp, gopacket.Payload([]byte("hello"))),
		"icmp4 echo":    serialize(t, &v4i, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 77, Seq: 1}, gopacket.Payload([]byte("ping"))),
		"icmp4 unreach": serialize(t, &v4i, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, gopacket.Payload(quoted[:28])),
	}
}

func TestDecode(t *testing.T) {
	pk := samplePackets(t)
	_, a := ip("10.0.0.1")
	_, b := ip("10.0.0.2")
	_, a6 := ip("2001:db8::1")
	_, b6 := ip("2001:db8::2")
	want := map[string]Packet{
		"tcp4 syn": {Family: IPv4, Proto: ProtoTCP, Src: a, Dst: b, SrcPort: 40000, DstPort: 80, Length: 52,
			TCPFlags: FlagSYN, Seq: 100, Window: 64240, HasWScale: true, WScale: 7, SACKPerm: true},
		"udp6":       {Family: IPv6, Proto: ProtoUDP, Src: a6, Dst: b6, SrcPort: 5353, DstPort: 53, Length: 53, PayloadLen: 5},
		"icmp4 echo": {Family: IPv4, Proto: ProtoICMP, Src: b, Dst: a, Length: 32, PayloadLen: 4, ICMPType: 8, ICMPID: 77},
		"icmp4 unreach": {Family: IPv4, Proto: ProtoICMP, Src: b, Dst: a, Length: 56, PayloadLen: 28, ICMPType: 3, ICMPCode: 3,
			Quoted:    Tuple{Family: IPv4, Proto: ProtoUDP, Src: a, Dst: b, SrcPort: 1000, DstPort: 2000},
			HasQuoted: true},
	}
	for name, raw := range pk {
		var got Packet
		if r := got.Decode(raw); r != ReasonNone {
			t.Errorf("%s: Decode = %v", name, r)
			continue
		}
		if diff := cmp.Diff(want[name], got); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", name, diff)
		}
	}
}

// TestTruncated feeds every prefix of valid packets, and some corruptions:
// each gives Invalid with a reason from Track, and nothing panics.
func TestTruncated(t *testing.T) {
	tb, _ := newTable(t, 100)
	for name, raw := range samplePackets(t) {
		for n := range len(raw) {
			var p Packet
			r := p.Decode(raw[:n])
			if r == ReasonNone {
				t.Errorf("%s cut to %d bytes: Decode = none, want a reason", name, n)
				continue
			}
			if got := tb.Track(&p); got.State != StateInvalid || got.Reason != r {
				t.Errorf("%s cut to %d bytes: Track = %v (%v), want invalid (%v)", name, n, got.State, got.Reason, r)
			}
		}
	}
	corrupt := map[string]func([]byte){
		"ihl 4":         func(b []byte) { b[0] = 0x44 },
		"version 5":     func(b []byte) { b[0] = 0x55 },
		"fragment":      func(b []byte) { b[6] = 0x20 },
		"tcp doff 4":    func(b []byte) { b[20+12] = 0x40 },
		"tcp doff long": func(b []byte) { b[20+12] = 0xf0 },
		"total long":    func(b []byte) { b[2] = 0xff },
	}
	for name, f := range corrupt {
		raw := append([]byte(nil), samplePackets(t)["tcp4 syn"]...)
		f(raw)
		var p Packet
		r := p.Decode(raw)
		if r == ReasonNone {
			t.Errorf("%s: Decode = none, want a reason", name)
		}
		if got := tb.Track(&p); got.State != StateInvalid {
			t.Errorf("%s: Track = %v, want invalid", name, got.State)
		}
	}
	if got := tb.Stats().Invalid[ReasonTruncated]; got == 0 {
		t.Error("truncated packets not counted")
	}
}
