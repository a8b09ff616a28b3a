package droplog

import (
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"golang.org/x/sys/unix"
)

// nflogMessage builds one NFLOG packet message as the kernel sends it: a
// netlink header, the nfgenmsg header and the attributes.
func nflogMessage(family uint8, mark, ifindex uint32, payload []byte) []byte {
	attr := func(typ uint16, v []byte) []byte {
		b := make([]byte, 4, 4+len(v)+3)
		binary.NativeEndian.PutUint16(b[0:2], uint16(4+len(v)))
		binary.NativeEndian.PutUint16(b[2:4], typ)
		b = append(b, v...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	body := []byte{family, 0, 0, 5}
	body = append(body, attr(nfulaMark, be32(mark))...)
	body = append(body, attr(nfulaIfindexIn, be32(ifindex))...)
	body = append(body, attr(nfulaPayload, payload)...)
	hdr := make([]byte, unix.NLMSG_HDRLEN)
	binary.NativeEndian.PutUint32(hdr[0:4], uint32(len(hdr)+len(body)))
	binary.NativeEndian.PutUint16(hdr[4:6], unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket)
	return append(hdr, body...)
}

func ipPacket(t testing.TB, src, dst string, l4 gopacket.SerializableLayer) []byte {
	t.Helper()
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	var ip gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	proto := layers.IPProtocolTCP
	switch l4.(type) {
	case *layers.UDP:
		proto = layers.IPProtocolUDP
	case *layers.ICMPv4:
		proto = layers.IPProtocolICMPv4
	case *layers.ICMPv6:
		proto = layers.IPProtocolICMPv6
	}
	if s.Is4() {
		v := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
		ip, nl = v, v
	} else {
		v := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
		ip, nl = v, v
	}
	switch l := l4.(type) {
	case *layers.TCP:
		l.SetNetworkLayerForChecksum(nl)
	case *layers.UDP:
		l.SetNetworkLayerForChecksum(nl)
	case *layers.ICMPv6:
		l.SetNetworkLayerForChecksum(nl)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, l4, gopacket.Payload("x")); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name   string
		family uint8
		pkt    []byte
		want   Record
	}{
		{"tcp syn v4", unix.NFPROTO_IPV4, ipPacket(t, "192.168.1.10", "1.1.1.1", &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true}),
			Record{Rule: 7, InIndex: 3, Proto: 6, Src: netip.MustParseAddr("192.168.1.10"), Dst: netip.MustParseAddr("1.1.1.1"), SrcPort: 40000, DstPort: 80, TCPFlags: 2}},
		{"udp v6", unix.NFPROTO_IPV6, ipPacket(t, "fd00:53:1::10", "2606:4700::1", &layers.UDP{SrcPort: 5353, DstPort: 53}),
			Record{Rule: 7, InIndex: 3, Proto: 17, Src: netip.MustParseAddr("fd00:53:1::10"), Dst: netip.MustParseAddr("2606:4700::1"), SrcPort: 5353, DstPort: 53}},
		{"icmp v4", unix.NFPROTO_IPV4, ipPacket(t, "10.1.2.3", "81.0.0.2", &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}),
			Record{Rule: 7, InIndex: 3, Proto: 1, Src: netip.MustParseAddr("10.1.2.3"), Dst: netip.MustParseAddr("81.0.0.2"), ICMPType: 8}},
		{"icmpv6 packet too big", unix.NFPROTO_IPV6, ipPacket(t, "2001:db8::1", "fd00:53:1::10", &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)}),
			Record{Rule: 7, InIndex: 3, Proto: 58, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("fd00:53:1::10"), ICMPType: 2}},
		{"tls on 443 is not decoded past tcp", unix.NFPROTO_IPV4, ipPacket(t, "192.168.1.10", "1.1.1.1", &layers.TCP{SrcPort: 40000, DstPort: 443, ACK: true, PSH: true}),
			Record{Rule: 7, InIndex: 3, Proto: 6, Src: netip.MustParseAddr("192.168.1.10"), Dst: netip.MustParseAddr("1.1.1.1"), SrcPort: 40000, DstPort: 443, TCPFlags: 0x18}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ring := NewRing(4)
			l := &Listener{ring: ring, dec: newDecoder()}
			var rec Record
			msg := nflogMessage(tc.family, 7, 3, tc.pkt)
			l.handle(msg, &rec)
			got, total := ring.Snapshot()
			if total != 1 {
				t.Fatalf("records added = %d, want 1", total)
			}
			tc.want.Length = uint16(len(tc.pkt))
			if diff := cmp.Diff(tc.want, got[0], cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Time" }, cmp.Ignore())); diff != "" {
				t.Errorf("record (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRingKeepsTheLatest(t *testing.T) {
	r := NewRing(3)
	for i := range 5 {
		r.add(&Record{Rule: uint32(i)})
	}
	got, total := r.Snapshot()
	var rules []uint32
	for _, rec := range got {
		rules = append(rules, rec.Rule)
	}
	if diff := cmp.Diff([]uint32{2, 3, 4}, rules); diff != "" || total != 5 {
		t.Errorf("after 5 records in a ring of 3: rules (-want +got) %s, total %d want 5", diff, total)
	}
}

func TestHandleNoAllocs(t *testing.T) {
	l := &Listener{ring: NewRing(16), dec: newDecoder()}
	msgs := [][]byte{
		nflogMessage(unix.NFPROTO_IPV4, 1, 2, ipPacket(t, "192.168.1.10", "1.1.1.1", &layers.TCP{SrcPort: 1, DstPort: 443, SYN: true})),
		nflogMessage(unix.NFPROTO_IPV6, 1, 2, ipPacket(t, "fd00::1", "2606:4700::1", &layers.UDP{SrcPort: 1, DstPort: 53})),
	}
	var rec Record
	allocs := testing.AllocsPerRun(1000, func() {
		for _, m := range msgs {
			l.handle(m, &rec)
		}
	})
	if allocs != 0 {
		t.Errorf("handle allocates %.1f times per run, want 0", allocs)
	}
}

// reference decodes a payload the slow way, with gopacket.NewPacket, for the
// fuzz target and the corpus test to compare with.
func reference(family uint8, payload []byte) (src, dst netip.Addr, sport, dport uint16, ok bool) {
	first := layers.LayerTypeIPv4
	if family == unix.NFPROTO_IPV6 {
		first = layers.LayerTypeIPv6
	}
	p := gopacket.NewPacket(payload, first, gopacket.Default)
	nl := p.NetworkLayer()
	if nl == nil || p.ErrorLayer() != nil {
		return // the reference itself is unsure; nothing to compare
	}
	switch v := nl.(type) {
	case *layers.IPv4:
		if v.Flags&layers.IPv4MoreFragments != 0 || v.FragOffset != 0 {
			return // a fragment: its transport header, if any, is not comparable
		}
		src, _ = netip.AddrFromSlice(v.SrcIP)
		dst, _ = netip.AddrFromSlice(v.DstIP)
	case *layers.IPv6:
		src, _ = netip.AddrFromSlice(v.SrcIP)
		dst, _ = netip.AddrFromSlice(v.DstIP)
	}
	// Only a transport header right after the outer IP header counts: the
	// summary is of the packet as the router saw it, not of a tunnel's inner
	// packet.
	if ls := p.Layers(); len(ls) >= 2 {
		switch v := ls[1].(type) {
		case *layers.TCP:
			sport, dport = uint16(v.SrcPort), uint16(v.DstPort)
		case *layers.UDP:
			sport, dport = uint16(v.SrcPort), uint16(v.DstPort)
		}
	}
	return src, dst, sport, dport, src.IsValid()
}

// check feeds one payload through the listener and, when the fast path
// decodes it, requires the reference to agree on the addresses (and on the
// ports, when the reference found a transport layer too).
func check(t *testing.T, family uint8, payload []byte) {
	l := &Listener{ring: NewRing(1), dec: newDecoder()}
	var rec Record
	if !l.dec.message(nflogMessage(family, 1, 1, payload)[unix.NLMSG_HDRLEN:], &rec) {
		return
	}
	src, dst, sport, dport, ok := reference(family, payload)
	if !ok {
		return
	}
	if rec.Src != src || rec.Dst != dst {
		t.Fatalf("addresses %s -> %s, reference %s -> %s (payload %x)", rec.Src, rec.Dst, src, dst, payload)
	}
	if (sport != 0 || dport != 0) && (rec.SrcPort != sport || rec.DstPort != dport) {
		t.Fatalf("ports %d -> %d, reference %d -> %d (payload %x)", rec.SrcPort, rec.DstPort, sport, dport, payload)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(uint8(unix.NFPROTO_IPV4), ipPacket(f, "192.168.1.10", "1.1.1.1", &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true}))
	f.Add(uint8(unix.NFPROTO_IPV6), ipPacket(f, "fd00::1", "2606:4700::1", &layers.UDP{SrcPort: 1, DstPort: 53}))
	f.Fuzz(func(t *testing.T, family uint8, payload []byte) {
		check(t, family%2*8+2, payload) // NFPROTO_IPV4 (2) or NFPROTO_IPV6 (10)
		// Truncated and garbled netlink framing must not panic either.
		l := &Listener{ring: NewRing(1), dec: newDecoder()}
		var rec Record
		l.handle(payload, &rec)
	})
}

// Every packet of the public capture corpus, many malformed on purpose,
// goes through the decoder as an IPv4 and an IPv6 payload, from the start of
// the frame and after an Ethernet header: nothing panics, and what decodes
// agrees with the reference.
func TestCorpus(t *testing.T) {
	files, _ := filepath.Glob("../../../shared/corpus/tcpdump/*.pcap*")
	if len(files) == 0 {
		t.Skip("no capture corpus at ../shared/corpus/tcpdump")
	}
	packets := 0
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		var next func() ([]byte, error)
		if strings.HasSuffix(file, ".pcapng") {
			r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
			if err != nil {
				f.Close()
				continue // unreadable on purpose
			}
			next = func() ([]byte, error) { d, _, err := r.ReadPacketData(); return d, err }
		} else {
			r, err := pcapgo.NewReader(f)
			if err != nil {
				f.Close()
				continue
			}
			next = func() ([]byte, error) { d, _, err := r.ReadPacketData(); return d, err }
		}
		for i := 0; i < 100000; i++ {
			data, err := next()
			if errors.Is(err, io.EOF) || err != nil && i > 0 && !errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				break
			}
			packets++
			for _, off := range []int{0, 14} {
				if off > len(data) {
					continue
				}
				check(t, unix.NFPROTO_IPV4, data[off:])
				check(t, unix.NFPROTO_IPV6, data[off:])
			}
		}
		f.Close()
	}
	t.Logf("%d packets from %d captures", packets, len(files))
}
