package conntrack

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// referenceDecode decodes an IP packet the slow way, with gopacket.NewPacket,
// for comparison with Decode: ok is false when gopacket reports an error or
// the packet is a fragment, and there is nothing to compare.
func referenceDecode(b []byte) (src, dst netip.Addr, proto uint8, sport, dport uint16, hasPorts, ok bool) {
	if len(b) == 0 {
		return
	}
	first := layers.LayerTypeIPv4
	if b[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	} else if b[0]>>4 != 4 {
		return
	}
	p := gopacket.NewPacket(b, first, gopacket.Default)
	if p.ErrorLayer() != nil {
		return
	}
	ls := p.Layers()
	if len(ls) < 2 {
		return
	}
	switch ip := ls[0].(type) {
	case *layers.IPv4:
		if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 || len(ip.Options) > 0 {
			return
		}
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		proto = uint8(ip.Protocol)
	case *layers.IPv6:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		proto = uint8(ip.NextHeader)
	default:
		return
	}
	switch l4 := ls[1].(type) {
	case *layers.TCP:
		sport, dport, hasPorts = uint16(l4.SrcPort), uint16(l4.DstPort), true
	case *layers.UDP:
		sport, dport, hasPorts = uint16(l4.SrcPort), uint16(l4.DstPort), true
	case *layers.ICMPv4, *layers.ICMPv6:
	default:
		return // an extension header or a protocol the table does not track
	}
	return src, dst, proto, sport, dport, hasPorts, true
}

// FuzzDecodeReference: whatever Decode accepts agrees with gopacket on the
// addresses, the protocol and the ports.
func FuzzDecodeReference(f *testing.F) {
	for _, raw := range samplePackets(f) {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		if p.Decode(b) != ReasonNone {
			return
		}
		src, dst, proto, sport, dport, hasPorts, ok := referenceDecode(b)
		if !ok {
			return
		}
		tu := p.Tuple()
		if tu.SrcAddr() != src || tu.DstAddr() != dst || p.Proto != proto {
			t.Fatalf("Decode: %s -> %s proto %d; reference: %s -> %s proto %d (%x)", tu.SrcAddr(), tu.DstAddr(), p.Proto, src, dst, proto, b)
		}
		if hasPorts && (p.SrcPort != sport || p.DstPort != dport) {
			t.Fatalf("Decode ports %d -> %d; reference %d -> %d (%x)", p.SrcPort, p.DstPort, sport, dport, b)
		}
	})
}

// Every packet of the capture corpus, from the start of the frame and after
// an Ethernet header, goes through Decode and Track: nothing panics, and
// what Decode accepts agrees with the reference.
func TestCorpus(t *testing.T) {
	files, _ := filepath.Glob("../../shared/corpus/tcpdump/*.pcap*")
	if len(files) == 0 {
		t.Skip("no capture corpus at ../shared/corpus/tcpdump")
	}
	tb, _ := newTable(t, 1024)
	packets, compared := 0, 0
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		var read func() ([]byte, error)
		if strings.HasSuffix(file, ".pcapng") {
			if r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions); err == nil {
				read = func() ([]byte, error) { d, _, err := r.ReadPacketData(); return d, err }
			}
		} else if r, err := pcapgo.NewReader(f); err == nil {
			read = func() ([]byte, error) { d, _, err := r.ReadPacketData(); return d, err }
		}
		for i := 0; read != nil && i < 100000; i++ {
			data, err := read()
			if err != nil {
				break // the end, or a capture truncated on purpose
			}
			packets++
			for _, off := range []int{0, 14} {
				if off > len(data) {
					continue
				}
				b := data[off:]
				var p Packet
				r := p.Decode(b)
				tb.Track(&p)
				if r != ReasonNone {
					continue
				}
				src, dst, proto, sport, dport, hasPorts, ok := referenceDecode(b)
				if !ok {
					continue
				}
				compared++
				tu := p.Tuple()
				if tu.SrcAddr() != src || tu.DstAddr() != dst || p.Proto != proto || hasPorts && (p.SrcPort != sport || p.DstPort != dport) {
					t.Errorf("%s packet %d: Decode %s:%d -> %s:%d proto %d; reference %s:%d -> %s:%d proto %d", file, i, tu.SrcAddr(), p.SrcPort, tu.DstAddr(), p.DstPort, p.Proto, src, sport, dst, dport, proto)
				}
			}
		}
		f.Close()
	}
	t.Logf("%d packets from %d captures; %d decoded ones compared with the reference", packets, len(files), compared)
	if compared == 0 {
		t.Error("no packet was compared")
	}
}
