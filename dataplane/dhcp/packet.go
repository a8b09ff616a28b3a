package dhcp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Message types (option 53) the client sends or takes.
const (
	msgDiscover = 1
	msgOffer    = 2
	msgRequest  = 3
	msgAck      = 5
	msgNak      = 6
)

// Option codes the client reads.
const (
	optPad      = 0
	optMask     = 1
	optRouter   = 3
	optLease    = 51
	optType     = 53
	optServerID = 54
	optT1       = 58
	optT2       = 59
	optEnd      = 255
)

const (
	headerLen   = 236 // the BOOTP header, up to the magic cookie
	magicCookie = 0x63825363
	infinite    = 0xffffffff // lease seconds meaning "forever" (RFC 2131 3.3)
)

// verdict is what parseReply made of a packet: accepted, or why it was
// ignored.
type verdict uint8

const (
	accepted    verdict = iota
	short               // shorter than the header and cookie
	notReply            // op is not BOOTREPLY
	badHardware         // htype or hlen is not Ethernet's
	wrongXID            // another transaction's
	wrongChaddr         // another client's
	badCookie           // no DHCP magic cookie
	badOption           // an option runs past the end, or has the wrong length
	noType              // no message type, or one a client does not take
	noServerID          // an OFFER or ACK without a server identifier
	badAddress          // an OFFER or ACK whose yiaddr is no unicast address
	noLease             // an ACK without a lease time
	numVerdicts
)

var verdictNames = [numVerdicts]string{
	accepted:    "accepted",
	short:       "short",
	notReply:    "not a reply",
	badHardware: "not ethernet",
	wrongXID:    "wrong xid",
	wrongChaddr: "wrong chaddr",
	badCookie:   "bad cookie",
	badOption:   "bad option",
	noType:      "no message type",
	noServerID:  "no server identifier",
	badAddress:  "bad yiaddr",
	noLease:     "no lease time",
}

func (v verdict) String() string {
	if v < numVerdicts {
		return verdictNames[v]
	}
	return "unknown"
}

// reply is what the client takes from an OFFER, ACK or NAK.
type reply struct {
	typ    uint8        // msgOffer, msgAck or msgNak
	addr   netip.Prefix // yiaddr with the subnet mask's length
	server netip.Addr   // option 54; may be invalid in a NAK
	router netip.Addr   // the first router of option 3; invalid if none
	lease  time.Duration
	t1, t2 time.Duration // as given, or lease/2 and 7/8 lease
}

// parseReply decodes a server's message for transaction xid of the client
// with Ethernet address mac. It never panics: anything it cannot use is a
// verdict other than accepted, and the reply is then the zero value.
func parseReply(b []byte, xid uint32, mac net.HardwareAddr) (reply, verdict) {
	if len(b) < headerLen+4 {
		return reply{}, short
	}
	if b[0] != 2 {
		return reply{}, notReply
	}
	if b[1] != 1 || b[2] != 6 {
		return reply{}, badHardware
	}
	if binary.BigEndian.Uint32(b[4:8]) != xid {
		return reply{}, wrongXID
	}
	if !bytes.Equal(b[28:34], mac) {
		return reply{}, wrongChaddr
	}
	if binary.BigEndian.Uint32(b[headerLen:headerLen+4]) != magicCookie {
		return reply{}, badCookie
	}
	yiaddr := netip.AddrFrom4([4]byte(b[16:20]))

	var r reply
	maskBits := -1
	var lease, t1, t2 uint32
	haveLease := false
	opts := b[headerLen+4:]
	for len(opts) > 0 {
		code := opts[0]
		if code == optPad {
			opts = opts[1:]
			continue
		}
		if code == optEnd {
			break
		}
		if len(opts) < 2 || int(opts[1]) > len(opts)-2 {
			return reply{}, badOption
		}
		data := opts[2 : 2+int(opts[1])]
		opts = opts[2+len(data):]
		switch code {
		case optType:
			if len(data) != 1 {
				return reply{}, badOption
			}
			r.typ = data[0]
		case optMask:
			bits, ok := maskLen(data)
			if !ok {
				return reply{}, badOption
			}
			maskBits = bits
		case optRouter:
			if len(data) == 0 || len(data)%4 != 0 {
				return reply{}, badOption
			}
			r.router = netip.AddrFrom4([4]byte(data[:4]))
		case optServerID:
			if len(data) != 4 {
				return reply{}, badOption
			}
			r.server = netip.AddrFrom4([4]byte(data))
		case optLease, optT1, optT2:
			if len(data) != 4 {
				return reply{}, badOption
			}
			v := binary.BigEndian.Uint32(data)
			switch code {
			case optLease:
				lease, haveLease = v, true
			case optT1:
				t1 = v
			case optT2:
				t2 = v
			}
		}
	}

	switch r.typ {
	case msgNak:
		return reply{typ: msgNak, server: r.server}, accepted
	case msgOffer, msgAck:
	default:
		return reply{}, noType
	}
	if !r.server.IsValid() {
		return reply{}, noServerID
	}
	if !yiaddr.IsGlobalUnicast() { // private addresses count as unicast here
		return reply{}, badAddress
	}
	if !haveLease {
		if r.typ == msgAck {
			return reply{}, noLease
		}
		lease = 0 // an OFFER may leave the lease time to the ACK
	}
	if maskBits < 0 {
		maskBits = classful(yiaddr)
	}
	r.addr = netip.PrefixFrom(yiaddr, maskBits)
	if r.router.IsValid() && !r.router.IsGlobalUnicast() {
		r.router = netip.Addr{} // 0.0.0.0 or broadcast: no usable gateway
	}
	r.lease, r.t1, r.t2 = timers(lease, t1, t2)
	return r, accepted
}

// maskLen is the prefix length of a contiguous IPv4 netmask.
func maskLen(b []byte) (int, bool) {
	if len(b) != 4 {
		return 0, false
	}
	ones, bits := net.IPMask(b).Size()
	if bits == 0 || ones == 0 {
		return 0, false // holes in the mask, or none at all
	}
	return ones, true
}

// classful is the prefix length of a's class, the subnet a lease without a
// mask option implies.
func classful(a netip.Addr) int {
	switch b := a.As4()[0]; {
	case b < 128:
		return 8
	case b < 192:
		return 16
	default:
		return 24
	}
}

// forever stands for an infinite lease: longer than any timer runs.
const forever = time.Duration(1<<63 - 1)

// timers turns the lease, T1 and T2 options into durations, with the
// defaults of RFC 2131 4.4.5 (T1 half the lease, T2 seven eighths) for
// missing or inconsistent ones.
func timers(lease, t1, t2 uint32) (time.Duration, time.Duration, time.Duration) {
	if lease == infinite {
		return forever, forever, forever
	}
	l := time.Duration(lease) * time.Second
	d1, d2 := time.Duration(t1)*time.Second, time.Duration(t2)*time.Second
	if t2 == 0 || d2 > l {
		d2 = l * 7 / 8
	}
	if t1 == 0 || d1 > d2 {
		d1 = l / 2
		if d1 > d2 {
			d1 = d2
		}
	}
	return l, d1, d2
}

// request is a message the client sends.
type request struct {
	typ       uint8
	xid       uint32
	mac       net.HardwareAddr
	hostname  string
	ciaddr    netip.Addr // the leased address, when renewing or rebinding
	requested netip.Addr // option 50, when selecting an offer
	server    netip.Addr // option 54, when selecting an offer
	broadcast bool       // ask for broadcast replies (no address yet)
}

// paramRequest is option 55: what the client asks the server for.
var paramRequest = []byte{optMask, optRouter, optLease, optServerID, optT1, optT2}

// encode serializes the message, padded to the 300 bytes of a BOOTP message
// that some servers insist on.
func (q request) encode() ([]byte, error) {
	d := &layers.DHCPv4{
		Operation:    layers.DHCPOpRequest,
		HardwareType: layers.LinkTypeEthernet,
		HardwareLen:  6,
		Xid:          q.xid,
		ClientIP:     net.IPv4zero,
		YourClientIP: net.IPv4zero,
		NextServerIP: net.IPv4zero,
		RelayAgentIP: net.IPv4zero,
		ClientHWAddr: q.mac,
	}
	if q.broadcast {
		d.Flags = 0x8000
	}
	if q.ciaddr.IsValid() {
		d.ClientIP = net.IP(q.ciaddr.AsSlice())
	}
	add := func(t layers.DHCPOpt, data []byte) {
		d.Options = append(d.Options, layers.NewDHCPOption(t, data))
	}
	add(layers.DHCPOptMessageType, []byte{q.typ})
	add(layers.DHCPOptClientID, append([]byte{1}, q.mac...))
	if q.requested.IsValid() {
		add(layers.DHCPOptRequestIP, q.requested.AsSlice())
	}
	if q.server.IsValid() {
		add(layers.DHCPOptServerID, q.server.AsSlice())
	}
	if q.hostname != "" && len(q.hostname) < 256 {
		add(layers.DHCPOptHostname, []byte(q.hostname))
	}
	add(layers.DHCPOptParamsRequest, paramRequest)
	add(layers.DHCPOptMaxMessageSize, []byte{0x05, 0xdc}) // 1500
	for d.Len() < 300 {
		d.Options = append(d.Options, layers.DHCPOption{Type: layers.DHCPOptPad})
	}
	buf := gopacket.NewSerializeBuffer()
	if err := d.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
