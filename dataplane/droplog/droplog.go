// Package droplog receives the packets the kernel ruleset drops, through
// NFLOG, and keeps the latest in a bounded ring of decoded records.
//
// Every logged drop carries its rule's number as the packet mark (see
// dataplane/nft), so a record names the rule that dropped the packet. The
// receive path decodes in place with gopacket's DecodingLayerParser into
// preallocated layers and stores plain values: it does not allocate per
// packet, and a burst only overwrites the oldest records.
package droplog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Record is one dropped packet. It holds values only; Rule is the packet
// mark, the dropping rule's index in the Program plus one (0: unknown).
type Record struct {
	Time     time.Time
	InIndex  uint32 // input interface index
	Rule     uint32
	Proto    uint8
	Src, Dst netip.Addr
	SrcPort  uint16
	DstPort  uint16
	ICMPType uint8
	TCPFlags uint8
	Length   uint16 // bytes of the packet as the kernel saw it
}

// Ring holds the latest records. The zero Ring is unusable; use NewRing. It
// is safe for one writer and any number of readers at once.
type Ring struct {
	mu      sync.Mutex
	recs    []Record
	next    int    // where the next record goes
	total   uint64 // records ever added
	lost    uint64 // messages the kernel could not deliver (socket overrun)
	invalid uint64 // messages that could not be decoded
}

// NewRing returns a ring keeping the latest n records (at least one).
func NewRing(n int) *Ring { return &Ring{recs: make([]Record, max(n, 1))} }

func (r *Ring) add(rec *Record) {
	r.mu.Lock()
	r.recs[r.next] = *rec
	r.next = (r.next + 1) % len(r.recs)
	r.total++
	r.mu.Unlock()
}

// Snapshot returns the records held, oldest first, and the count of all
// records ever added.
func (r *Ring) Snapshot() ([]Record, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := int(min(r.total, uint64(len(r.recs))))
	out := make([]Record, 0, n)
	start := (r.next - n + len(r.recs)) % len(r.recs)
	for i := 0; i < n; i++ {
		out = append(out, r.recs[(start+i)%len(r.recs)])
	}
	return out, r.total
}

// Stats returns how many records were added, how many kernel messages were
// lost to a full socket, and how many could not be decoded.
func (r *Ring) Stats() (total, lost, invalid uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total, r.lost, r.invalid
}

// decoder turns one NFLOG packet message into a Record without allocating.
// It is owned by one receive loop.
type decoder struct {
	ip4    layers.IPv4
	ip6    layers.IPv6
	tcp    layers.TCP
	udp    layers.UDP
	icmp4  layers.ICMPv4
	icmp6  layers.ICMPv6
	p4, p6 *gopacket.DecodingLayerParser
	found  []gopacket.LayerType
}

func newDecoder() *decoder {
	d := &decoder{found: make([]gopacket.LayerType, 0, 4)}
	d.p4 = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv4, &d.ip4, &d.tcp, &d.udp, &d.icmp4)
	d.p6 = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv6, &d.ip6, &d.tcp, &d.udp, &d.icmp6)
	// TLS on 443, DNS on 53 and the rest are not decoded: the summary needs
	// the transport header only.
	d.p4.IgnoreUnsupported = true
	d.p6.IgnoreUnsupported = true
	return d
}

// nlaTypeMask strips the nested and byte-order flags from an attribute type.
const nlaTypeMask = 0x3fff

// NFLOG attribute types (linux/netfilter/nfnetlink_log.h).
const (
	nfulaMark        = 2
	nfulaTimestamp   = 3
	nfulaIfindexIn   = 4
	nfulaPayload     = 9
	nfulnlMsgPacket  = 0
	nfulnlMsgConfig  = 1
	nfulnlCfgCmdBind = 1
	nfulaCfgCmd      = 1
	nfulaCfgMode     = 2
	nfulaCfgTimeout  = 4
	nfulaCfgQThresh  = 6
	nfulnlCopyPacket = 2
)

// message decodes the payload of one NFLOG packet message (after the
// netlink header) into rec; ok is false when it holds no decodable packet.
func (d *decoder) message(data []byte, rec *Record) bool {
	if len(data) < 4 {
		return false
	}
	family := data[0]
	*rec = Record{}
	var payload []byte
	for b := data[4:]; len(b) >= 4; {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask
		if l < 4 || l > len(b) {
			return false
		}
		v := b[4:l]
		switch typ {
		case nfulaMark:
			if len(v) == 4 {
				rec.Rule = binary.BigEndian.Uint32(v)
			}
		case nfulaIfindexIn:
			if len(v) == 4 {
				rec.InIndex = binary.BigEndian.Uint32(v)
			}
		case nfulaTimestamp:
			if len(v) == 16 {
				rec.Time = time.Unix(int64(binary.BigEndian.Uint64(v[0:8])), int64(binary.BigEndian.Uint64(v[8:16]))*1000)
			}
		case nfulaPayload:
			payload = v
		}
		b = b[(l+3)&^3:]
	}
	if payload == nil {
		return false
	}
	rec.Length = uint16(min(len(payload), 65535))
	parser := d.p4
	if family == unix.NFPROTO_IPV6 {
		parser = d.p6
	}
	if err := parser.DecodeLayers(payload, &d.found); err != nil && len(d.found) == 0 {
		return false
	}
	for _, lt := range d.found {
		switch lt {
		case layers.LayerTypeIPv4:
			rec.Src, _ = netip.AddrFromSlice(d.ip4.SrcIP)
			rec.Dst, _ = netip.AddrFromSlice(d.ip4.DstIP)
			rec.Proto = uint8(d.ip4.Protocol)
		case layers.LayerTypeIPv6:
			rec.Src, _ = netip.AddrFromSlice(d.ip6.SrcIP)
			rec.Dst, _ = netip.AddrFromSlice(d.ip6.DstIP)
			rec.Proto = uint8(d.ip6.NextHeader)
		case layers.LayerTypeTCP:
			rec.SrcPort, rec.DstPort = uint16(d.tcp.SrcPort), uint16(d.tcp.DstPort)
			rec.TCPFlags = tcpFlags(&d.tcp)
		case layers.LayerTypeUDP:
			rec.SrcPort, rec.DstPort = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
		case layers.LayerTypeICMPv4:
			rec.ICMPType = d.icmp4.TypeCode.Type()
		case layers.LayerTypeICMPv6:
			rec.ICMPType = d.icmp6.TypeCode.Type()
		}
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	return rec.Src.IsValid()
}

func tcpFlags(t *layers.TCP) uint8 {
	var f uint8
	for i, set := range []bool{t.FIN, t.SYN, t.RST, t.PSH, t.ACK, t.URG} {
		if set {
			f |= 1 << i
		}
	}
	return f
}

// Listener receives dropped packets from one NFLOG group in one network
// namespace. Run it on one goroutine.
type Listener struct {
	conn *netlink.Conn
	ring *Ring
	dec  *decoder
	buf  []byte
}

// Listen binds NFLOG group in the namespace netnsFd refers to (-1: the
// calling thread's) and returns a listener filling ring.
func Listen(netnsFd int, group uint16, ring *Ring) (*Listener, error) {
	cfg := &netlink.Config{}
	if netnsFd >= 0 {
		cfg.NetNS = netnsFd
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("nflog netlink: %w", err)
	}
	_ = conn.SetReadBuffer(4 << 20) // a larger buffer absorbs bursts; the default still works
	cmd := func(attrType uint16, val []byte) error {
		ae := netlink.NewAttributeEncoder()
		ae.Bytes(attrType, val)
		attrs, err := ae.Encode()
		if err != nil {
			return err
		}
		data := append([]byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(group >> 8), byte(group)}, attrs...)
		_, err = conn.Execute(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | nfulnlMsgConfig), Flags: netlink.Request | netlink.Acknowledge},
			Data:   data,
		})
		return err
	}
	if err := cmd(nfulaCfgCmd, []byte{nfulnlCfgCmdBind}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nflog bind group %d: %w", group, err)
	}
	mode := make([]byte, 6) // copy range (big endian), copy mode, padding
	binary.BigEndian.PutUint32(mode, 256)
	mode[4] = nfulnlCopyPacket
	if err := cmd(nfulaCfgMode, mode); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nflog copy mode for group %d: %w", group, err)
	}
	// Deliver each packet at once rather than batching for up to a second.
	if err := cmd(nfulaCfgQThresh, binary.BigEndian.AppendUint32(nil, 1)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nflog queue threshold for group %d: %w", group, err)
	}
	if err := cmd(nfulaCfgTimeout, binary.BigEndian.AppendUint32(nil, 0)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nflog flush timeout for group %d: %w", group, err)
	}
	return &Listener{conn: conn, ring: ring, dec: newDecoder(), buf: make([]byte, 1<<16)}, nil
}

// Run receives until Close, adding a record per dropped packet. A full
// socket (the kernel's ENOBUFS) is counted as lost and not an error.
func (l *Listener) Run() error {
	raw, err := l.conn.SyscallConn()
	if err != nil {
		return err
	}
	var rec Record
	for {
		var n int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), l.buf, 0)
			return rerr != unix.EAGAIN
		}); err != nil {
			return err // closed
		}
		switch {
		case errors.Is(rerr, unix.ENOBUFS):
			l.ring.mu.Lock()
			l.ring.lost++
			l.ring.mu.Unlock()
			continue
		case rerr != nil:
			return fmt.Errorf("nflog receive: %w", rerr)
		}
		l.handle(l.buf[:n], &rec)
	}
}

// handle walks the netlink messages in one datagram.
func (l *Listener) handle(b []byte, rec *Record) {
	for len(b) >= unix.NLMSG_HDRLEN {
		ml := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if ml < unix.NLMSG_HDRLEN || ml > len(b) {
			return
		}
		if typ == unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket {
			if l.dec.message(b[unix.NLMSG_HDRLEN:ml], rec) {
				l.ring.add(rec)
			} else {
				l.ring.mu.Lock()
				l.ring.invalid++
				l.ring.mu.Unlock()
			}
		}
		b = b[(ml+3)&^3:]
	}
}

// Close stops Run.
func (l *Listener) Close() error { return l.conn.Close() }

// Summary writes the packet the way `sluice explain` reads one:
// "tcp 192.168.1.10:40000 -> 1.1.1.1:80 flags=S".
func (r Record) Summary() string {
	ep := func(a netip.Addr, port uint16) string {
		if r.Proto != unix.IPPROTO_TCP && r.Proto != unix.IPPROTO_UDP {
			return a.String()
		}
		return netip.AddrPortFrom(a, port).String()
	}
	switch r.Proto {
	case unix.IPPROTO_TCP:
		flags := ""
		for i, c := range "FSRPAU" {
			if r.TCPFlags&(1<<i) != 0 {
				flags += string(c)
			}
		}
		return fmt.Sprintf("tcp %s -> %s flags=%s", ep(r.Src, r.SrcPort), ep(r.Dst, r.DstPort), flags)
	case unix.IPPROTO_UDP:
		return fmt.Sprintf("udp %s -> %s", ep(r.Src, r.SrcPort), ep(r.Dst, r.DstPort))
	case unix.IPPROTO_ICMP:
		return fmt.Sprintf("icmp/%d %s -> %s", r.ICMPType, r.Src, r.Dst)
	case unix.IPPROTO_ICMPV6:
		return fmt.Sprintf("icmpv6/%d %s -> %s", r.ICMPType, r.Src, r.Dst)
	}
	return fmt.Sprintf("proto-%d %s -> %s", r.Proto, r.Src, r.Dst)
}
