package flows

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/internal/lab"
	"github.com/sluicefw/sluice/internal/labtest"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// equateAddrs lets cmp compare netip values, which have unexported fields.
var equateAddrs = cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{})

func compile(t testing.TB, name string, src []byte) *policy.Program {
	t.Helper()
	return labtest.Compile(t, name, src)
}

// labPolicy returns the lab's policy with old replaced by new, failing the
// test when old is not in it.
func labPolicy(t testing.TB, old, new string) []byte {
	t.Helper()
	src := string(lab.Policy())
	if !strings.Contains(src, old) {
		t.Fatalf("the lab policy has no %q", old)
	}
	return []byte(strings.Replace(src, old, new, 1))
}

// webOnly443 is the lab policy with plain-HTTP egress taken away.
func webOnly443(t testing.TB) []byte {
	return labPolicy(t, "ports: [tcp/80, tcp/443]", "ports: [tcp/443]")
}

var ap = netip.MustParseAddrPort

func tcpFlow(src, dst, replySrc, replyDst string) Flow {
	return Flow{Proto: policy.ProtoTCP, Src: ap(src), Dst: ap(dst), ReplySrc: ap(replySrc), ReplyDst: ap(replyDst)}
}

// TestFirstPacket checks, on the lab policy without a kernel, which packet
// and which interface each kind of flow is judged as, and what the policy
// decides about it.
func TestFirstPacket(t *testing.T) {
	prog := compile(t, "lab.yaml", lab.Policy())
	// An address the lan interface learned at run time.
	opts := policy.Options{Addresses: map[string][]netip.Prefix{"lan": {netip.MustParsePrefix("10.9.0.1/24")}}}
	j := NewJudge(prog, opts)
	addr := netip.MustParseAddr
	tests := []struct {
		name       string
		flow       Flow
		wantIn     string // the interface; "" for a flow not judged
		wantPacket policy.Packet
		wantReason policy.Reason
		wantAllow  bool
	}{
		{
			name:       "masqueraded web from lan",
			flow:       tcpFlow("192.168.1.10:40000", "93.184.216.34:80", "93.184.216.34:80", "81.0.0.2:40000"),
			wantIn:     "lan",
			wantPacket: policy.Packet{Src: addr("192.168.1.10"), Dst: addr("93.184.216.34"), Proto: policy.ProtoTCP, SrcPort: 40000, DstPort: 80, TCPFlags: policy.TCPSyn, State: policy.StateNew},
			wantReason: policy.ReasonEgressAllowed, wantAllow: true,
		},
		{
			name:       "lan to a destination the allowlist lacks",
			flow:       tcpFlow("192.168.1.10:40001", "1.1.1.1:80", "1.1.1.1:80", "81.0.0.2:40001"),
			wantIn:     "lan",
			wantPacket: policy.Packet{Src: addr("192.168.1.10"), Dst: addr("1.1.1.1"), Proto: policy.ProtoTCP, SrcPort: 40001, DstPort: 80, TCPFlags: policy.TCPSyn, State: policy.StateNew},
			wantReason: policy.ReasonEgressDefaultDeny,
		},
		{
			name:       "dns over udp from lan",
			flow:       Flow{Proto: policy.ProtoUDP, Src: ap("192.168.1.11:5353"), Dst: ap("8.8.8.8:53"), ReplySrc: ap("8.8.8.8:53"), ReplyDst: ap("81.0.0.2:5353")},
			wantIn:     "lan",
			wantPacket: policy.Packet{Src: addr("192.168.1.11"), Dst: addr("8.8.8.8"), Proto: policy.ProtoUDP, SrcPort: 5353, DstPort: 53, State: policy.StateNew},
			wantReason: policy.ReasonEgressAllowed, wantAllow: true,
		},
		{
			name:       "ping from lan",
			flow:       Flow{Proto: policy.ProtoICMP, Src: ap("192.168.1.11:0"), Dst: ap("8.8.8.8:0"), ReplySrc: ap("8.8.8.8:0"), ReplyDst: ap("81.0.0.2:0"), ICMPType: 8, ICMPID: 7},
			wantIn:     "lan",
			wantPacket: policy.Packet{Src: addr("192.168.1.11"), Dst: addr("8.8.8.8"), Proto: policy.ProtoICMP, ICMPType: 8, State: policy.StateNew},
			wantReason: policy.ReasonEgressAllowed, wantAllow: true,
		},
		{
			name:       "web over IPv6 from lan",
			flow:       tcpFlow("[fd00:53:1::10]:40002", "[2606:4700::1]:443", "[2606:4700::1]:443", "[fd00:53:1::10]:40002"),
			wantIn:     "lan",
			wantPacket: policy.Packet{Src: addr("fd00:53:1::10"), Dst: addr("2606:4700::1"), Proto: policy.ProtoTCP, SrcPort: 40002, DstPort: 443, TCPFlags: policy.TCPSyn, State: policy.StateNew},
			wantReason: policy.ReasonEgressAllowed, wantAllow: true,
		},
		{
			name:       "ping over IPv6 from lan",
			flow:       Flow{Proto: policy.ProtoICMPv6, Src: ap("[fd00:53:1::10]:0"), Dst: ap("[2606:4700::1]:0"), ReplySrc: ap("[2606:4700::1]:0"), ReplyDst: ap("[fd00:53:1::10]:0"), ICMPType: 128, ICMPID: 9},
			wantIn:     "lan",
			wantPacket: policy.Packet{Src: addr("fd00:53:1::10"), Dst: addr("2606:4700::1"), Proto: policy.ProtoICMPv6, ICMPType: 128, State: policy.StateNew},
			wantReason: policy.ReasonEgressAllowed, wantAllow: true,
		},
		{
			name:       "port forward from the uplink's neighbour, judged by its original destination",
			flow:       Flow{Proto: policy.ProtoTCP, Src: ap("81.0.0.1:50000"), Dst: ap("81.0.0.2:8080"), ReplySrc: ap("192.168.1.10:80"), ReplyDst: ap("81.0.0.1:50000"), DstNAT: true},
			wantIn:     "wan",
			wantPacket: policy.Packet{Src: addr("81.0.0.1"), Dst: addr("81.0.0.2"), Proto: policy.ProtoTCP, SrcPort: 50000, DstPort: 8080, TCPFlags: policy.TCPSyn, State: policy.StateNew},
			wantReason: policy.ReasonPortForward, wantAllow: true,
		},
		{
			name:       "port forward from beyond the uplink comes in on the uplink",
			flow:       Flow{Proto: policy.ProtoTCP, Src: ap("93.184.216.34:50001"), Dst: ap("81.0.0.2:8080"), ReplySrc: ap("192.168.1.10:80"), ReplyDst: ap("93.184.216.34:50001"), DstNAT: true},
			wantIn:     "wan",
			wantPacket: policy.Packet{Src: addr("93.184.216.34"), Dst: addr("81.0.0.2"), Proto: policy.ProtoTCP, SrcPort: 50001, DstPort: 8080, TCPFlags: policy.TCPSyn, State: policy.StateNew},
			wantReason: policy.ReasonPortForward, wantAllow: true,
		},
		{
			name:       "ssh to the box from wan",
			flow:       tcpFlow("81.0.0.1:50002", "81.0.0.2:22", "81.0.0.2:22", "81.0.0.1:50002"),
			wantIn:     "wan",
			wantPacket: policy.Packet{Src: addr("81.0.0.1"), Dst: addr("81.0.0.2"), Proto: policy.ProtoTCP, SrcPort: 50002, DstPort: 22, TCPFlags: policy.TCPSyn, State: policy.StateNew},
			wantReason: policy.ReasonInboundDenied,
		},
		{
			name:       "ssh to the box from lan",
			flow:       tcpFlow("192.168.1.10:50003", "192.168.1.1:22", "192.168.1.1:22", "192.168.1.10:50003"),
			wantIn:     "lan",
			wantPacket: policy.Packet{Src: addr("192.168.1.10"), Dst: addr("192.168.1.1"), Proto: policy.ProtoTCP, SrcPort: 50003, DstPort: 22, TCPFlags: policy.TCPSyn, State: policy.StateNew},
			wantReason: policy.ReasonService, wantAllow: true,
		},
		{
			name:       "source in a prefix the lan learned at run time",
			flow:       tcpFlow("10.9.0.5:40003", "93.184.216.34:443", "93.184.216.34:443", "81.0.0.2:40003"),
			wantIn:     "lan",
			wantPacket: policy.Packet{Src: addr("10.9.0.5"), Dst: addr("93.184.216.34"), Proto: policy.ProtoTCP, SrcPort: 40003, DstPort: 443, TCPFlags: policy.TCPSyn, State: policy.StateNew},
			wantReason: policy.ReasonSourceNotInZone, // the zone's sources were not widened
		},
		{name: "the box's own connection out", flow: Flow{Proto: policy.ProtoUDP, Src: ap("81.0.0.2:33333"), Dst: ap("1.1.1.1:53"), ReplySrc: ap("1.1.1.1:53"), ReplyDst: ap("81.0.0.2:33333")}, wantAllow: true},
		{name: "from the run-time address", flow: tcpFlow("10.9.0.1:40004", "93.184.216.34:80", "93.184.216.34:80", "10.9.0.1:40004"), wantAllow: true},
		{name: "loopback", flow: tcpFlow("127.0.0.1:40005", "127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1:40005"), wantAllow: true},
		{name: "link-local source", flow: Flow{Proto: policy.ProtoUDP, Src: ap("[fe80::1]:546"), Dst: ap("[ff02::1:2]:547")}, wantAllow: true},
		{name: "unspecified source", flow: Flow{Proto: policy.ProtoUDP, Src: ap("0.0.0.0:68"), Dst: ap("255.255.255.255:67")}, wantAllow: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := j.firstPacket(tc.flow)
			if ok != (tc.wantIn != "") {
				t.Fatalf("firstPacket(%s) judged = %v, want %v", tc.flow, ok, tc.wantIn != "")
			}
			if ok {
				want := tc.wantPacket
				want.In, _ = prog.Interface(tc.wantIn)
				if diff := cmp.Diff(want, got, equateAddrs); diff != "" {
					t.Errorf("firstPacket(%s) (-want +got):\n%s", tc.flow, diff)
				}
				d := j.ev.Evaluate(&got)
				if d.Reason != tc.wantReason {
					t.Errorf("%s: decided %v by %q, want reason %q", tc.flow, d.Verdict, d.Reason, tc.wantReason)
				}
			}
			_, d, decided := j.Decide(tc.flow)
			if allowed := !decided || d.Verdict == policy.Accept; allowed != tc.wantAllow {
				t.Errorf("Decide(%s) allowed = %v, want %v", tc.flow, allowed, tc.wantAllow)
			}
		})
	}
}

// TestFirstPacketNoUplink: without a default route a source outside every
// prefix names no interface, and its flow is left alone.
func TestFirstPacketNoUplink(t *testing.T) {
	prog := compile(t, "lab-no-gateway.yaml", labPolicy(t, `, gateway: [81.0.0.1, "2a00:1::1"]`, ""))
	j := NewJudge(prog, policy.Options{})
	f := tcpFlow("93.184.216.34:50000", "81.0.0.2:8080", "192.168.1.10:80", "93.184.216.34:50000")
	if pk, ok := j.firstPacket(f); ok {
		t.Errorf("firstPacket(%s) = %+v, want no packet: no interface routes to the source", f, pk)
	}
	wan, _ := prog.Interface("wan")
	if pk, ok := j.firstPacket(tcpFlow("81.0.0.1:50000", "81.0.0.2:8080", "192.168.1.10:80", "81.0.0.1:50000")); !ok || pk.In != wan {
		t.Errorf("a source in wan's prefix: judged %v on interface %d, want on wan (%d)", ok, pk.In, wan)
	}
}

// fakeTable stands in for ctnetlink: it lists its flows and records every
// delete request.
type fakeTable struct {
	flows   []conntrack.Flow
	sent    []conntrack.Flow         // delete requests, in order
	answers map[netip.AddrPort]error // Delete's error by original source
	closed  bool
}

func (ft *fakeTable) Dump(*conntrack.DumpOptions) ([]conntrack.Flow, error) {
	return append([]conntrack.Flow(nil), ft.flows...), nil
}

func (ft *fakeTable) Delete(f conntrack.Flow) error {
	ft.sent = append(ft.sent, f)
	src := netip.AddrPortFrom(f.TupleOrig.IP.SourceAddress, f.TupleOrig.Proto.SourcePort)
	if err := ft.answers[src]; err != nil {
		return err
	}
	for i, k := range ft.flows {
		if k.TupleOrig == f.TupleOrig && k.Zone == f.Zone {
			ft.flows = append(ft.flows[:i], ft.flows[i+1:]...)
			return nil
		}
	}
	return unix.ENOENT
}

func (ft *fakeTable) Close() error { ft.closed = true; return nil }

// kernelTCP is a TCP flow as ctnetlink reports it.
func kernelTCP(src, dst, replySrc, replyDst string) conntrack.Flow {
	tuple := func(s, d netip.AddrPort) conntrack.Tuple {
		return conntrack.Tuple{
			IP:    conntrack.IPTuple{SourceAddress: s.Addr(), DestinationAddress: d.Addr()},
			Proto: conntrack.ProtoTuple{Protocol: policy.ProtoTCP, SourcePort: s.Port(), DestinationPort: d.Port()},
		}
	}
	return conntrack.Flow{
		TupleOrig:  tuple(ap(src), ap(dst)),
		TupleReply: tuple(ap(replySrc), ap(replyDst)),
		Status:     conntrack.StatusConfirmed | conntrack.StatusSeenReply | conntrack.StatusAssured,
		ProtoInfo:  conntrack.ProtoInfo{TCP: &conntrack.ProtoInfoTCP{State: 3}},
		Timeout:    432000,
	}
}

// TestRevoke takes plain-HTTP egress away from the lab policy: the flows
// to port 80 are deleted, by their tuples, and nothing else is.
func TestRevoke(t *testing.T) {
	web80 := kernelTCP("192.168.1.10:40000", "93.184.216.34:80", "93.184.216.34:80", "81.0.0.2:40000")
	web443 := kernelTCP("192.168.1.10:40001", "93.184.216.34:443", "93.184.216.34:443", "81.0.0.2:40001")
	web80v6 := kernelTCP("[fd00:53:1::10]:40002", "[2606:4700::1]:80", "[2606:4700::1]:80", "[fd00:53:1::10]:40002")
	forward := kernelTCP("81.0.0.1:50000", "81.0.0.2:8080", "192.168.1.10:80", "81.0.0.1:50000")
	forward.Status |= conntrack.StatusDstNAT
	own := kernelTCP("81.0.0.2:50001", "93.184.216.34:80", "93.184.216.34:80", "81.0.0.2:50001")
	ft := &fakeTable{flows: []conntrack.Flow{web80, web443, web80v6, forward, own}}
	c := &Conn{ct: ft, netns: -1}

	got, err := Revoke(c, compile(t, "lab-443.yaml", webOnly443(t)), policy.Options{})
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	want := []Flow{fromKernel(&web80), fromKernel(&web80v6)}
	if diff := cmp.Diff(want, got, equateAddrs); diff != "" {
		t.Errorf("Revoke deleted (-want +got):\n%s", diff)
	}
	// What was sent: the original tuple, and the reply tuple's addresses
	// so that an IPv6 request goes out as IPv6.
	wantSent := []conntrack.Flow{
		{TupleOrig: web80.TupleOrig, TupleReply: web80.TupleReply},
		{TupleOrig: web80v6.TupleOrig, TupleReply: web80v6.TupleReply},
	}
	if diff := cmp.Diff(wantSent, ft.sent, equateAddrs); diff != "" {
		t.Errorf("delete requests (-want +got):\n%s", diff)
	}
	left, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	wantLeft := []Flow{fromKernel(&web443), fromKernel(&forward), fromKernel(&own)}
	if diff := cmp.Diff(wantLeft, left, equateAddrs); diff != "" {
		t.Errorf("flows left (-want +got):\n%s", diff)
	}
	// Revoking again finds nothing more to do.
	if again, err := Revoke(c, compile(t, "lab-443.yaml", webOnly443(t)), policy.Options{}); err != nil || len(again) != 0 {
		t.Errorf("second Revoke = %v, %v; want nothing deleted", again, err)
	}
}

// TestRevokeDeleteErrors: a flow gone since the listing is not an error
// and not reported deleted; a failed delete is reported and does not stop
// the others.
func TestRevokeDeleteErrors(t *testing.T) {
	gone := kernelTCP("192.168.1.10:40000", "93.184.216.34:80", "93.184.216.34:80", "81.0.0.2:40000")
	refused := kernelTCP("192.168.1.10:40001", "93.184.216.34:80", "93.184.216.34:80", "81.0.0.2:40001")
	deleted := kernelTCP("192.168.1.10:40002", "93.184.216.34:80", "93.184.216.34:80", "81.0.0.2:40002")
	ft := &fakeTable{
		flows:   []conntrack.Flow{gone, refused, deleted},
		answers: map[netip.AddrPort]error{ap("192.168.1.10:40000"): unix.ENOENT, ap("192.168.1.10:40001"): unix.EPERM},
	}
	got, err := Revoke(&Conn{ct: ft, netns: -1}, compile(t, "lab-443.yaml", webOnly443(t)), policy.Options{})
	if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "tcp 192.168.1.10:40001 -> 93.184.216.34:80") {
		t.Errorf("Revoke error = %v, want EPERM naming the refused flow", err)
	}
	if diff := cmp.Diff([]Flow{fromKernel(&deleted)}, got, equateAddrs); diff != "" {
		t.Errorf("Revoke deleted (-want +got):\n%s", diff)
	}
	if len(ft.sent) != 3 {
		t.Errorf("sent %d delete requests, want 3 (one per revoked flow)", len(ft.sent))
	}
}
