package flows

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/ti-mo/conntrack"
)

// TestFromKernel converts flows as ti-mo/conntrack decodes them.
func TestFromKernel(t *testing.T) {
	masq := kernelTCP("192.168.1.10:40000", "93.184.216.34:80", "93.184.216.34:80", "81.0.0.2:40000")
	masq.ID, masq.Mark, masq.Zone = 77, 0x10, 3
	masq.Status |= conntrack.StatusSrcNAT | conntrack.StatusSrcNATDone
	masq.CountersOrig = conntrack.Counter{Packets: 5, Bytes: 300}
	masq.CountersReply = conntrack.Counter{Direction: true, Packets: 4, Bytes: 2000}

	ping := conntrack.Flow{
		ID: 78,
		TupleOrig: conntrack.Tuple{
			IP:    conntrack.IPTuple{SourceAddress: netip.MustParseAddr("fd00:53:1::10"), DestinationAddress: netip.MustParseAddr("2606:4700::1")},
			Proto: conntrack.ProtoTuple{Protocol: policy.ProtoICMPv6, ICMPv6: true, ICMPType: 128, ICMPID: 9},
		},
		TupleReply: conntrack.Tuple{
			IP:    conntrack.IPTuple{SourceAddress: netip.MustParseAddr("2606:4700::1"), DestinationAddress: netip.MustParseAddr("fd00:53:1::10")},
			Proto: conntrack.ProtoTuple{Protocol: policy.ProtoICMPv6, ICMPv6: true, ICMPType: 129, ICMPID: 9},
		},
		Timeout: 30,
	}
	odd := kernelTCP("192.168.1.10:40001", "93.184.216.34:443", "93.184.216.34:443", "81.0.0.2:40001")
	odd.ProtoInfo.TCP.State = 42

	tests := []struct {
		name string
		in   conntrack.Flow
		want Flow
	}{
		{"masqueraded tcp with accounting", masq, Flow{
			ID: 77, Proto: policy.ProtoTCP,
			Src: ap("192.168.1.10:40000"), Dst: ap("93.184.216.34:80"), ReplySrc: ap("93.184.216.34:80"), ReplyDst: ap("81.0.0.2:40000"),
			State: "ESTABLISHED", Assured: true, SeenReply: true, SrcNAT: true,
			Timeout: 432000 * time.Second, Packets: [2]uint64{5, 4}, Bytes: [2]uint64{300, 2000}, Mark: 0x10, Zone: 3,
		}},
		{"icmpv6 echo", ping, Flow{
			ID: 78, Proto: policy.ProtoICMPv6,
			Src: ap("[fd00:53:1::10]:0"), Dst: ap("[2606:4700::1]:0"), ReplySrc: ap("[2606:4700::1]:0"), ReplyDst: ap("[fd00:53:1::10]:0"),
			ICMPType: 128, ICMPID: 9, Timeout: 30 * time.Second,
		}},
		{"unknown tcp state", odd, Flow{
			Proto: policy.ProtoTCP,
			Src:   ap("192.168.1.10:40001"), Dst: ap("93.184.216.34:443"), ReplySrc: ap("93.184.216.34:443"), ReplyDst: ap("81.0.0.2:40001"),
			State: "STATE_42", Assured: true, SeenReply: true, Timeout: 432000 * time.Second,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := fromKernel(&tc.in)
			if diff := cmp.Diff(tc.want, got, equateAddrs); diff != "" {
				t.Errorf("fromKernel (-want +got):\n%s", diff)
			}
		})
	}
}

// TestToKernel checks what a delete request names a flow by: the original
// tuple (with an ICMP flow's identity) and the zone, and reply addresses of
// the same family.
func TestToKernel(t *testing.T) {
	f := Flow{Proto: policy.ProtoICMPv6, Src: ap("[fd00:53:1::10]:0"), Dst: ap("[2606:4700::1]:0"), ReplySrc: ap("[2606:4700::1]:0"), ReplyDst: ap("[fd00:53:1::10]:0"), ICMPType: 128, ICMPID: 9, Zone: 2}
	got := toKernel(f)
	if !got.TupleOrig.IP.IsIPv6() || !got.TupleReply.IP.IsIPv6() {
		t.Errorf("toKernel(%s): tuples orig %v reply %v, want both IPv6 so the request goes out as IPv6", f, got.TupleOrig, got.TupleReply)
	}
	wantOrig := conntrack.Tuple{
		IP:    conntrack.IPTuple{SourceAddress: f.Src.Addr(), DestinationAddress: f.Dst.Addr()},
		Proto: conntrack.ProtoTuple{Protocol: policy.ProtoICMPv6, ICMPType: 128, ICMPID: 9},
	}
	if diff := cmp.Diff(wantOrig, got.TupleOrig, equateAddrs); diff != "" {
		t.Errorf("original tuple (-want +got):\n%s", diff)
	}
	if got.Zone != 2 {
		t.Errorf("zone = %d, want 2", got.Zone)
	}
}

func TestFlowString(t *testing.T) {
	tests := []struct {
		flow Flow
		want string
	}{
		{tcpFlow("192.168.1.10:40000", "93.184.216.34:443", "93.184.216.34:443", "81.0.0.2:40000"), "tcp 192.168.1.10:40000 -> 93.184.216.34:443"},
		{Flow{Proto: policy.ProtoUDP, Src: ap("[fd00:53:1::10]:5353"), Dst: ap("[2606:4700::1]:53")}, "udp [fd00:53:1::10]:5353 -> [2606:4700::1]:53"},
		{Flow{Proto: policy.ProtoICMP, Src: ap("192.168.1.10:0"), Dst: ap("8.8.8.8:0"), ICMPType: 8, ICMPID: 7}, "icmp 192.168.1.10 -> 8.8.8.8 id 7"},
		{Flow{Proto: policy.ProtoICMPv6, Src: ap("[fe80::1]:0"), Dst: ap("[ff02::1]:0"), ICMPID: 9}, "icmpv6 fe80::1 -> ff02::1 id 9"},
		{Flow{Proto: 47, Src: ap("192.168.1.10:0"), Dst: ap("81.0.0.1:0")}, "proto 47 192.168.1.10 -> 81.0.0.1"},
	}
	buf := make([]byte, 0, 128)
	for _, tc := range tests {
		if got := tc.flow.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
		if n := testing.AllocsPerRun(100, func() { buf = tc.flow.AppendTo(buf[:0]) }); n != 0 || string(buf) != tc.want {
			t.Errorf("AppendTo = %q with %v allocations, want %q with none", buf, n, tc.want)
		}
	}
}
