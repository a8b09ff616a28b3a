package conntrack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicefw/sluice/dataplane/flows"
)

// The userspace table's flows come out as the kernel client's flows.Flow.
func TestFlows(t *testing.T) {
	tb, clk := newTable(t, 16)
	for _, p := range []*Packet{
		tcpPkt("192.168.1.10", 40000, "93.184.216.34", 443, FlagSYN, 100, 0, 0),
		tcpPkt("93.184.216.34", 443, "192.168.1.10", 40000, FlagSYN|FlagACK, 500, 101, 0),
		tcpPkt("192.168.1.10", 40000, "93.184.216.34", 443, FlagACK, 101, 501, 0),
		icmpPkt("fd00:53:1::10", "2606:4700::1", 128, 7),
	} {
		if r := tb.Track(p); r.State == StateInvalid {
			t.Fatalf("Track: %v", r.Reason)
		}
	}
	clk.Advance(time.Second)
	got := tb.Flows(clk.Now())
	byProto := map[uint8]flows.Flow{}
	for _, f := range got {
		byProto[f.Proto] = f
	}
	lan, web := netip.MustParseAddrPort("192.168.1.10:40000"), netip.MustParseAddrPort("93.184.216.34:443")
	tcp := byProto[ProtoTCP]
	if diff := cmp.Diff(flows.Flow{Proto: ProtoTCP, Src: lan, Dst: web, ReplySrc: web, ReplyDst: lan, State: "ESTABLISHED", SeenReply: true, Assured: true},
		tcp, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }), cmp.FilterPath(func(p cmp.Path) bool {
			switch p.Last().String() {
			case ".Timeout", ".Packets", ".Bytes":
				return true
			}
			return false
		}, cmp.Ignore())); diff != "" {
		t.Errorf("tcp flow (-want +got):\n%s", diff)
	}
	if tcp.Timeout <= 0 || tcp.Timeout > 432000*time.Second || tcp.Packets != [2]uint64{2, 1} {
		t.Errorf("tcp flow timeout %v, packets %v; want within the established timeout, 2 original and 1 reply", tcp.Timeout, tcp.Packets)
	}
	ping := byProto[ProtoICMPv6]
	if ping.ICMPType != 128 || ping.ICMPID != 7 || ping.Src.Addr() != netip.MustParseAddr("fd00:53:1::10") || ping.State != "" || ping.SeenReply {
		t.Errorf("ping flow = %+v, want an unreplied ICMPv6 echo id 7 from fd00:53:1::10", ping)
	}
}
