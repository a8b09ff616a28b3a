package dhcp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

var (
	testMAC = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}
	testXID = uint32(0x5a1ce001)
)

// serverMsg is a server's message in the tests, encoded by gopacket.
type serverMsg struct {
	typ           byte
	xid           uint32
	mac           net.HardwareAddr
	yiaddr        netip.Addr
	mask          []byte // option 1, when not nil
	router        netip.Addr
	server        netip.Addr
	lease, t1, t2 uint32 // options 51, 58, 59, when not zero
}

func (m serverMsg) encode(t testing.TB) []byte {
	t.Helper()
	d := &layers.DHCPv4{
		Operation:    layers.DHCPOpReply,
		HardwareType: layers.LinkTypeEthernet,
		Xid:          m.xid,
		ClientIP:     net.IPv4zero,
		YourClientIP: net.IPv4zero,
		NextServerIP: net.IPv4zero,
		RelayAgentIP: net.IPv4zero,
		ClientHWAddr: m.mac,
	}
	if m.yiaddr.IsValid() {
		d.YourClientIP = net.IP(m.yiaddr.AsSlice())
	}
	add := func(o layers.DHCPOpt, b []byte) { d.Options = append(d.Options, layers.NewDHCPOption(o, b)) }
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	add(layers.DHCPOptMessageType, []byte{m.typ})
	if m.server.IsValid() {
		add(layers.DHCPOptServerID, m.server.AsSlice())
	}
	if m.mask != nil {
		add(layers.DHCPOptSubnetMask, m.mask)
	}
	if m.router.IsValid() {
		add(layers.DHCPOptRouter, m.router.AsSlice())
	}
	for _, o := range []struct {
		code layers.DHCPOpt
		v    uint32
	}{{layers.DHCPOptLeaseTime, m.lease}, {layers.DHCPOptT1, m.t1}, {layers.DHCPOptT2, m.t2}} {
		if o.v != 0 {
			add(o.code, u32(o.v))
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := d.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		t.Fatalf("encode %+v: %v", m, err)
	}
	return buf.Bytes()
}

// ack is a well-formed ACK for testXID and testMAC.
func ack() serverMsg {
	return serverMsg{
		typ: msgAck, xid: testXID, mac: testMAC,
		yiaddr: netip.MustParseAddr("81.0.0.50"), mask: []byte{255, 255, 255, 0},
		router: netip.MustParseAddr("81.0.0.1"), server: netip.MustParseAddr("81.0.0.1"),
		lease: 3600,
	}
}

func TestParseReply(t *testing.T) {
	good := ack().encode(t)
	with := func(f func(*serverMsg)) []byte {
		m := ack()
		f(&m)
		return m.encode(t)
	}
	patch := func(off int, b ...byte) []byte {
		p := bytes.Clone(good)
		copy(p[off:], b)
		return p
	}
	want := reply{
		typ:    msgAck,
		addr:   netip.MustParsePrefix("81.0.0.50/24"),
		server: netip.MustParseAddr("81.0.0.1"),
		router: netip.MustParseAddr("81.0.0.1"),
		lease:  time.Hour, t1: 30 * time.Minute, t2: 52*time.Minute + 30*time.Second,
	}
	tests := []struct {
		name    string
		pkt     []byte
		want    reply
		verdict verdict
	}{
		{"ack", good, want, accepted},
		{"timers", with(func(m *serverMsg) { m.t1, m.t2 = 600, 1200 }), func() reply {
			r := want
			r.t1, r.t2 = 10*time.Minute, 20*time.Minute
			return r
		}(), accepted},
		{"t1 after t2", with(func(m *serverMsg) { m.t1, m.t2 = 3000, 1200 }), func() reply {
			r := want
			r.t1, r.t2 = 20*time.Minute, 20*time.Minute
			return r
		}(), accepted},
		{"infinite", with(func(m *serverMsg) { m.lease = infinite }), func() reply {
			r := want
			r.lease, r.t1, r.t2 = forever, forever, forever
			return r
		}(), accepted},
		{"no mask: classful", with(func(m *serverMsg) { m.mask = nil }), func() reply {
			r := want
			r.addr = netip.MustParsePrefix("81.0.0.50/8")
			return r
		}(), accepted},
		{"no router", with(func(m *serverMsg) { m.router = netip.Addr{} }), func() reply {
			r := want
			r.router = netip.Addr{}
			return r
		}(), accepted},
		{"offer without lease", with(func(m *serverMsg) { m.typ, m.lease = msgOffer, 0 }), func() reply {
			r := want
			r.typ, r.lease, r.t1, r.t2 = msgOffer, 0, 0, 0
			return r
		}(), accepted},
		{"nak", with(func(m *serverMsg) { *m = serverMsg{typ: msgNak, xid: testXID, mac: testMAC, server: m.server} }),
			reply{typ: msgNak, server: netip.MustParseAddr("81.0.0.1")}, accepted},

		{"empty", nil, reply{}, short},
		{"truncated header", good[:200], reply{}, short},
		{"request", patch(0, 1), reply{}, notReply},
		{"not ethernet", patch(1, 6), reply{}, badHardware},
		{"long hlen", patch(2, 255), reply{}, badHardware},
		{"wrong xid", with(func(m *serverMsg) { m.xid++ }), reply{}, wrongXID},
		{"wrong chaddr", with(func(m *serverMsg) { m.mac = net.HardwareAddr{2, 0, 0, 0, 0, 2} }), reply{}, wrongChaddr},
		{"wrong cookie", patch(headerLen, 0x63, 0x82, 0x53, 0x64), reply{}, badCookie},
		{"option past the end", good[:len(good)-4], reply{}, badOption},
		{"option length only", append(bytes.Clone(good[:len(good)-1]), optRouter), reply{}, badOption},
		{"mask with holes", with(func(m *serverMsg) { m.mask = []byte{255, 0, 255, 0} }), reply{}, badOption},
		{"short mask", with(func(m *serverMsg) { m.mask = []byte{255, 255} }), reply{}, badOption},
		{"no type", patch(headerLen+4, optPad, optPad, optPad), reply{}, noType},
		{"discover", with(func(m *serverMsg) { m.typ = msgDiscover }), reply{}, noType},
		{"no server id", with(func(m *serverMsg) { m.server = netip.Addr{} }), reply{}, noServerID},
		{"zero yiaddr", with(func(m *serverMsg) { m.yiaddr = netip.Addr{} }), reply{}, badAddress},
		{"broadcast yiaddr", with(func(m *serverMsg) { m.yiaddr = netip.MustParseAddr("255.255.255.255") }), reply{}, badAddress},
		{"ack without lease", with(func(m *serverMsg) { m.lease = 0 }), reply{}, noLease},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, v := parseReply(tt.pkt, testXID, testMAC)
			if v != tt.verdict {
				t.Errorf("verdict = %v, want %v", v, tt.verdict)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(reply{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
}

// What the client sends decodes, with gopacket, as RFC 2131 table 5 says.
func TestRequestEncode(t *testing.T) {
	q := request{
		typ: msgRequest, xid: testXID, mac: testMAC, hostname: "sluice", broadcast: true,
		requested: netip.MustParseAddr("81.0.0.50"), server: netip.MustParseAddr("81.0.0.1"),
	}
	b, err := q.encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 300 {
		t.Errorf("len = %d, want at least 300", len(b))
	}
	var d layers.DHCPv4
	if err := d.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
		t.Fatalf("decode: %v", err)
	}
	type got struct {
		Op     layers.DHCPOp
		Xid    uint32
		Flags  uint16
		CHAddr string
		Opts   map[layers.DHCPOpt]string
	}
	g := got{Op: d.Operation, Xid: d.Xid, Flags: d.Flags, CHAddr: d.ClientHWAddr.String(), Opts: map[layers.DHCPOpt]string{}}
	for _, o := range d.Options {
		if o.Type != layers.DHCPOptPad {
			g.Opts[o.Type] = string(o.Data)
		}
	}
	want := got{
		Op: layers.DHCPOpRequest, Xid: testXID, Flags: 0x8000, CHAddr: testMAC.String(),
		Opts: map[layers.DHCPOpt]string{
			layers.DHCPOptMessageType:    string([]byte{msgRequest}),
			layers.DHCPOptClientID:       string(append([]byte{1}, testMAC...)),
			layers.DHCPOptRequestIP:      string([]byte{81, 0, 0, 50}),
			layers.DHCPOptServerID:       string([]byte{81, 0, 0, 1}),
			layers.DHCPOptHostname:       "sluice",
			layers.DHCPOptParamsRequest:  string(paramRequest),
			layers.DHCPOptMaxMessageSize: string([]byte{0x05, 0xdc}),
		},
	}
	if diff := cmp.Diff(want, g); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
}

func TestTimers(t *testing.T) {
	tests := []struct {
		name                  string
		lease, t1, t2         uint32
		wantL, wantT1, wantT2 time.Duration
	}{
		{"defaults", 800, 0, 0, 800 * time.Second, 400 * time.Second, 700 * time.Second},
		{"given", 800, 100, 200, 800 * time.Second, 100 * time.Second, 200 * time.Second},
		{"t2 past lease", 800, 100, 900, 800 * time.Second, 100 * time.Second, 700 * time.Second},
		{"t1 past t2", 800, 750, 0, 800 * time.Second, 400 * time.Second, 700 * time.Second},
		{"infinite", infinite, 5, 6, forever, forever, forever},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, t1, t2 := timers(tt.lease, tt.t1, tt.t2)
			if l != tt.wantL || t1 != tt.wantT1 || t2 != tt.wantT2 {
				t.Errorf("timers(%d, %d, %d) = %v, %v, %v; want %v, %v, %v", tt.lease, tt.t1, tt.t2, l, t1, t2, tt.wantL, tt.wantT1, tt.wantT2)
			}
		})
	}
}

// FuzzParseReply checks that parseReply never panics, that what it accepts
// is consistent, and that it agrees with gopacket's decoder, the slower
// reference, on the fields both read.
func FuzzParseReply(f *testing.F) {
	f.Add(ack().encode(f))
	m := ack()
	m.typ, m.t1, m.t2 = msgOffer, 10, 20
	f.Add(m.encode(f))
	f.Add(serverMsg{typ: msgNak, xid: testXID, mac: testMAC}.encode(f))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, v := parseReply(b, testXID, testMAC)
		if v >= numVerdicts {
			t.Fatalf("verdict %d out of range", v)
		}
		if v != accepted {
			if r != (reply{}) {
				t.Fatalf("verdict %v with a reply %+v", v, r)
			}
			return
		}
		if !(r.t1 <= r.t2 && r.t2 <= r.lease) {
			t.Fatalf("timers out of order: t1 %v t2 %v lease %v", r.t1, r.t2, r.lease)
		}
		var d layers.DHCPv4
		if err := d.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
			t.Fatalf("accepted, but gopacket: %v", err)
		}
		if d.Operation != layers.DHCPOpReply || d.Xid != testXID || !bytes.Equal(d.ClientHWAddr, testMAC) {
			t.Fatalf("accepted op %v xid %#x chaddr %v", d.Operation, d.Xid, d.ClientHWAddr)
		}
		var typ byte
		for _, o := range d.Options {
			if o.Type == layers.DHCPOptMessageType && len(o.Data) == 1 {
				typ = o.Data[0] // the last one counts, as in parseReply
			}
		}
		if typ != r.typ {
			t.Fatalf("message type %d, gopacket says %d", r.typ, typ)
		}
		if r.typ != msgNak && !r.addr.Addr().Is4() || r.typ != msgNak && !net.IP(r.addr.Addr().AsSlice()).Equal(d.YourClientIP) {
			t.Fatalf("address %v, gopacket says yiaddr %v", r.addr, d.YourClientIP)
		}
	})
}

func TestParseReplyNoAllocs(t *testing.T) {
	pkt := ack().encode(t)
	allocs := testing.AllocsPerRun(100, func() {
		if _, v := parseReply(pkt, testXID, testMAC); v != accepted {
			t.Fatalf("verdict %v", v)
		}
	})
	if allocs != 0 {
		t.Errorf("parseReply allocates %v times per reply, want 0", allocs)
	}
}

func BenchmarkParseReply(b *testing.B) {
	pkt := ack().encode(b)
	b.ReportAllocs()
	for b.Loop() {
		parseReply(pkt, testXID, testMAC)
	}
}
