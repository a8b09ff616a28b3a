package conntrack

import (
	"net/netip"
	"time"

	"github.com/sluicefw/sluice/dataplane/flows"
)

// Flows returns the table's entries as flows.Flow, the one view of a
// connection the kernel's ctnetlink client gives too: whichever engine runs,
// the TUI and `flows --json` show the same type. now is the time the
// timeouts count from.
func (t *Table) Flows(now time.Time) []flows.Flow {
	entries := t.Snapshot()
	out := make([]flows.Flow, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Flow(now))
	}
	return out
}

// Flow converts one entry. The userspace table translates no addresses, so
// the reply direction is the original reversed; an ICMP echo's identifier
// goes into ICMPID and its ports stay 0.
func (e Entry) Flow(now time.Time) flows.Flow {
	tu := e.Tuple
	f := flows.Flow{
		Proto:     tu.Proto,
		Assured:   e.Assured,
		SeenReply: e.Replied,
		Timeout:   max(e.Expires.Sub(now), 0),
		Packets:   e.Packets,
		Bytes:     e.Bytes,
		Zone:      tu.Zone,
	}
	src, dst := tu.SrcAddr(), tu.DstAddr()
	switch tu.Proto {
	case ProtoICMP, ProtoICMPv6:
		f.ICMPID = tu.SrcPort
		f.ICMPType = 8
		if tu.Proto == ProtoICMPv6 {
			f.ICMPType = 128
		}
		f.Src, f.Dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	default:
		f.Src, f.Dst = netip.AddrPortFrom(src, tu.SrcPort), netip.AddrPortFrom(dst, tu.DstPort)
	}
	f.ReplySrc, f.ReplyDst = f.Dst, f.Src
	if tu.Proto == ProtoTCP {
		f.State = e.TCP.String()
	}
	return f
}
