package nft

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/internal/lab"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// diffPolicy is one policy of the differential corpus, with the facts the
// evaluator needs that the file does not give.
type diffPolicy struct {
	name string
	src  []byte
	opts policy.Options
}

// labAddresses are the router's uplink addresses, as a DHCP lease would
// give them to a policy whose wan uses dhcp.
var labAddresses = policy.Options{Addresses: map[string][]netip.Prefix{
	"wan": {netip.MustParsePrefix("81.0.0.2/24"), netip.MustParsePrefix("2a00:1::2/64")},
}}

func diffCorpus(t *testing.T, generated int) []diffPolicy {
	t.Helper()
	home, err := os.ReadFile("../../examples/home.yaml")
	if err != nil {
		t.Fatal(err)
	}
	corpus := []diffPolicy{
		{name: "lab", src: lab.Policy()},
		{name: "home (wan by dhcp)", src: home, opts: labAddresses},
	}
	rng := rand.New(rand.NewPCG(2026, 11))
	for i := range generated {
		corpus = append(corpus, diffPolicy{name: fmt.Sprintf("generated-%d", i), src: []byte(generatePolicy(rng))})
	}
	return corpus
}

func pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

// generatePolicy writes a random policy on the lab's interfaces: every
// anti-spoof mode, services, inbound, egress allowlists with prefixes and
// port ranges of both families, port forwards and essential ICMP on or off.
func generatePolicy(rng *rand.Rand) string {
	var b strings.Builder
	b.WriteString("interfaces:\n")
	b.WriteString("  wan: {device: eth0, zone: wan, addresses: [81.0.0.2/24, \"2a00:1::2/64\"], gateway: [81.0.0.1, \"2a00:1::1\"]}\n")
	b.WriteString("  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24, \"fd00:53:1::1/64\"]}\n")
	b.WriteString("zones:\n")
	for _, z := range []string{"wan", "lan"} {
		fmt.Fprintf(&b, "  %s:\n    antispoof: {reverse_path: %s, bogons: %s", z, pick(rng, "strict", "loose", "off"), pick(rng, "drop", "allow"))
		if rng.IntN(2) == 0 {
			if z == "lan" {
				b.WriteString(", sources: [192.168.1.0/25, \"fd00:53:1::/64\"]")
			} else {
				b.WriteString(", sources: [0.0.0.0/1, \"2000::/3\"]")
			}
		}
		b.WriteString("}\n")
		fmt.Fprintf(&b, "    inbound: %s\n", pick(rng, "deny", "deny", "allow"))
		svcs := []string{}
		for _, s := range []string{"ssh", "dns", "ping", "tcp/8000-8010", "udp/5353"} {
			if rng.IntN(3) == 0 {
				svcs = append(svcs, s)
			}
		}
		if len(svcs) > 0 {
			fmt.Fprintf(&b, "    services: [%s]\n", strings.Join(svcs, ", "))
		}
		fmt.Fprintf(&b, "    egress:\n      default: %s\n", pick(rng, "allow", "deny"))
		if n := rng.IntN(4); n > 0 {
			b.WriteString("      allow:\n")
			for e := range n {
				to := pick(rng, `[93.184.216.0/24]`, `["2606:4700::/32"]`, `[1.1.1.1, 8.8.8.8, "2606:4700::1"]`, `[192.168.1.0/24]`, `[81.0.0.0/24, "2a00:1::/64"]`)
				ports := pick(rng, `[tcp/80, tcp/443]`, `[udp/53, tcp/53]`, `[tcp/1000-2000]`, `[icmp/echo-request, icmpv6/echo-request]`, `[udp]`, `[any]`)
				if rng.IntN(4) == 0 {
					fmt.Fprintf(&b, "        - {name: e%d, ports: %s}\n", e, ports)
				} else {
					fmt.Fprintf(&b, "        - {name: e%d, to: %s, ports: %s}\n", e, to, ports)
				}
			}
		}
	}
	b.WriteString("forward:\n  - {from: lan, to: wan}\n")
	if rng.IntN(3) == 0 {
		b.WriteString("  - {from: wan, to: lan}\n")
	}
	if rng.IntN(2) == 0 {
		b.WriteString("port_forwards:\n  - {name: web, from: wan, port: tcp/8080, to: \"192.168.1.10:80\"}\n  - {name: games, from: wan, port: udp/27000-27010, to: 192.168.1.11}\n")
	}
	fmt.Fprintf(&b, "icmp: {essential: %s}\n", pick(rng, "allow", "allow", "deny"))
	return b.String()
}

// probe is one generated packet: where it enters and what it is.
//
// Multicast destinations other than broadcast are left out: the evaluator
// takes every multicast packet as for the box, while Linux delivers only the
// groups the box joined, and other hosts on the link answer them, moving
// counters of their own.
type probe struct {
	in     string // interface name in the policy: wan or lan
	pk     policy.Packet
	frameF func(src, dst net.HardwareAddr) []byte
	text   string
}

var (
	wanSources = addrs("93.184.216.34", "1.1.1.1", "8.8.8.8", "81.0.0.1", "81.0.0.77", "10.1.2.3", "192.168.1.50", "100.64.1.1",
		"198.51.100.7", "192.0.0.9", "172.16.5.5", "81.0.0.2",
		"2606:4700::1", "2a00:1::1", "2a00:1::77", "2001:db8::1", "fd00:53:1::77", "2a00:1::2", "fe80::1234", "2001:4:112::1", "169.254.7.7")
	lanSources = addrs("192.168.1.10", "192.168.1.11", "192.168.1.50", "192.168.1.200", "8.8.4.4", "10.9.9.9", "192.168.1.1",
		"fd00:53:1::10", "fd00:53:1::50", "2606:4700::5", "fd00:53:1::1", "fe80::10", "169.254.10.10")
	lanHosts     = addrs("192.168.1.10", "192.168.1.11", "fd00:53:1::10", "fd00:53:1::11")
	destinations = addrs("81.0.0.2", "192.168.1.1", "255.255.255.255", "93.184.216.34", "93.184.216.255", "93.184.217.0", "1.1.1.1", "8.8.8.8",
		"192.168.1.10", "192.168.1.11", "81.0.0.1", "81.0.0.99", "5.6.7.8",
		"2a00:1::2", "fd00:53:1::1", "2606:4700::1", "2606:4700:ffff::1", "2606:4701::1", "fd00:53:1::10", "2a00:1::1", "2a00:2::1", "169.254.1.1")
	ports = []uint16{22, 53, 80, 443, 999, 1000, 2000, 2001, 5353, 7999, 8000, 8010, 8011, 8080, 27000, 27010, 27011}
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func genProbe(rng *rand.Rand, seq int) probe {
	var p probe
	p.in = pick(rng, "wan", "lan")
	srcs := wanSources
	if p.in == "lan" {
		srcs = lanSources
	}
	src := pick(rng, srcs...)
	if p.in == "lan" && rng.IntN(2) == 0 {
		src = pick(rng, lanHosts...) // a well-behaved client, so later rules get exercised
	}
	var dst netip.Addr
	for {
		dst = pick(rng, destinations...)
		if dst.Is4() == src.Is4() {
			break
		}
	}
	pk := policy.Packet{Src: src, Dst: dst}
	randomTransport(rng, &pk, uint16(30000+seq%30000), pick(rng, ports...), 4)
	pk.State = policy.FirstState(&pk)
	p.pk = pk
	p.text = fmt.Sprintf("proto %d %s:%d -> %s:%d in %s flags=%#x icmp=%d state=%s", pk.Proto, pk.Src, pk.SrcPort, pk.Dst, pk.DstPort, p.in, pk.TCPFlags, pk.ICMPType, pk.State)
	id := uint16(seq)
	p.frameF = func(srcMAC, dstMAC net.HardwareAddr) []byte { return frame(srcMAC, dstMAC, pk, id) }
	return p
}

// randomTransport gives pk a random protocol of its family: TCP, mostly a
// SYN and one time in oddOneIn odd flags; UDP, sometimes a DHCP reply; or
// an ICMP or ICMPv6 type.
func randomTransport(rng *rand.Rand, pk *policy.Packet, sport, dport uint16, oddOneIn int) {
	switch rng.IntN(6) {
	case 0, 1:
		pk.Proto, pk.SrcPort, pk.DstPort, pk.TCPFlags = policy.ProtoTCP, sport, dport, policy.TCPSyn
		if rng.IntN(oddOneIn) == 0 {
			pk.TCPFlags = pick(rng, uint8(0), policy.TCPSyn|policy.TCPFin, policy.TCPAck, policy.TCPFin, policy.TCPSyn|policy.TCPAck, policy.TCPRst, policy.TCPPsh|policy.TCPAck, policy.TCPSyn|policy.TCPRst, policy.TCPSyn|policy.TCPUrg)
		}
	case 2, 3:
		pk.Proto, pk.SrcPort, pk.DstPort = policy.ProtoUDP, sport, dport
		if rng.IntN(8) == 0 {
			pk.SrcPort, pk.DstPort = 67, 68 // a DHCP reply
		}
	default:
		if pk.Src.Is4() {
			pk.Proto, pk.ICMPType = policy.ProtoICMP, pick(rng, uint8(8), 8, 3, 11, 0, 13)
		} else {
			pk.Proto, pk.ICMPType = policy.ProtoICMPv6, pick(rng, uint8(128), 128, 1, 2, 3, 129, 135, 136)
		}
	}
}

// frame builds an Ethernet frame carrying pk.
func frame(srcMAC, dstMAC net.HardwareAddr, pk policy.Packet, id uint16) []byte {
	// Multicast and broadcast go to their group's hardware address, as a
	// real sender's would.
	switch d := pk.Dst.AsSlice(); {
	case pk.Dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		dstMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	case pk.Dst.Is4() && pk.Dst.IsMulticast():
		dstMAC = net.HardwareAddr{0x01, 0x00, 0x5e, d[1] & 0x7f, d[2], d[3]}
	case pk.Dst.IsMulticast():
		dstMAC = net.HardwareAddr{0x33, 0x33, d[12], d[13], d[14], d[15]}
	}
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC}
	var net gopacket.NetworkLayer
	var ls []gopacket.SerializableLayer
	if pk.Src.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, TTL: 64, Id: id, SrcIP: pk.Src.AsSlice(), DstIP: pk.Dst.AsSlice(), Protocol: layers.IPProtocol(pk.Proto)}
		net, ls = ip, []gopacket.SerializableLayer{eth, ip}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		hop := uint8(64)
		if pk.Proto == policy.ProtoICMPv6 && pk.ICMPType >= 133 && pk.ICMPType <= 137 {
			hop = 255 // neighbour discovery is valid only from the link
		}
		ip := &layers.IPv6{Version: 6, HopLimit: hop, SrcIP: pk.Src.AsSlice(), DstIP: pk.Dst.AsSlice(), NextHeader: layers.IPProtocol(pk.Proto)}
		net, ls = ip, []gopacket.SerializableLayer{eth, ip}
	}
	payload := gopacket.Payload([]byte("sluice differential probe"))
	switch pk.Proto {
	case policy.ProtoTCP:
		f := pk.TCPFlags
		tcp := &layers.TCP{SrcPort: layers.TCPPort(pk.SrcPort), DstPort: layers.TCPPort(pk.DstPort), Seq: 1000 + uint32(id), Window: 64240,
			FIN: f&policy.TCPFin != 0, SYN: f&policy.TCPSyn != 0, RST: f&policy.TCPRst != 0, PSH: f&policy.TCPPsh != 0, ACK: f&policy.TCPAck != 0, URG: f&policy.TCPUrg != 0}
		if tcp.ACK {
			tcp.Ack = 1
		}
		tcp.SetNetworkLayerForChecksum(net)
		ls = append(ls, tcp, payload)
	case policy.ProtoUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(pk.SrcPort), DstPort: layers.UDPPort(pk.DstPort)}
		udp.SetNetworkLayerForChecksum(net)
		ls = append(ls, udp, payload)
	case policy.ProtoICMP:
		ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(pk.ICMPType, pk.ICMPCode), Id: id, Seq: 1}, payload)
	case policy.ProtoICMPv6:
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(pk.ICMPType, pk.ICMPCode)}
		icmp.SetNetworkLayerForChecksum(net)
		body := make([]byte, 4, 64)
		body[0], body[1] = byte(id>>8), byte(id)
		if pk.ICMPType == 135 || pk.ICMPType == 136 {
			body = append(body[:4], pk.Dst.AsSlice()...) // target address
		}
		ls = append(ls, icmp, gopacket.Payload(append(body, payload...)))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		panic(fmt.Sprintf("serialize probe: %v", err))
	}
	return buf.Bytes()
}

// TestDifferential sends generated packets through the lab router for a
// corpus of policies and requires the rule whose counter the kernel moved
// to be the rule the evaluator names.
func TestDifferential(t *testing.T) {
	netnstest.RequireRoot(t)
	l := lab.New(netnstest.Name("diff"))
	if err := l.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Down)
	if out, err := l.Command(l.Router, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0").CombinedOutput(); err != nil {
		t.Logf("nf_conntrack_tcp_loose: %v %s (set after the first ruleset loads conntrack)", err, out)
	}
	wanInj, err := l.Injector(l.Internet, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer wanInj.Close()
	lanInj, err := l.Injector(l.LAN1, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer lanInj.Close()
	routerWAN, err := lab.MAC(l.Router, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	routerLAN, err := lab.MAC(l.Router, "eth1")
	if err != nil {
		t.Fatal(err)
	}
	conn, _ := dialNetns(t, l.Router, time.Minute)

	probes := 1000
	if testing.Short() {
		probes = 200
	}
	seq := 0
	for _, dp := range diffCorpus(t, 10) {
		t.Run(dp.name, func(t *testing.T) {
			prog := compileSource(t, dp.name+".yaml", dp.src)
			rs, err := Build(prog, dp.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := Apply(conn, rs); err != nil {
				t.Fatal(err)
			}
			l.Command(l.Router, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0").Run()
			ev := policy.NewEvaluator(prog, dp.opts)
			// Counters the conversations a probe starts can move, sometimes
			// after the next probe is already out: replies to what was let
			// through (established, or invalid, such as the answer to a
			// reset) and neighbour discovery answering the router's
			// solicitations (essential ICMP to the box). They count only
			// when the evaluator names them. A probe is still caught when
			// the kernel decides it by one of them: the rule the evaluator
			// names then does not move.
			established, invalid := string(prog.Rules[prog.Established].ID), string(prog.Rules[prog.Invalid].ID)
			icmpLocal := ""
			if prog.ICMPLocal >= 0 {
				icmpLocal = string(prog.Rules[prog.ICMPLocal].ID)
			}
			rng := rand.New(rand.NewPCG(uint64(len(dp.src)), 7))
			tally := newTally(prog, dp.src)
			for range probes {
				seq++
				p := genProbe(rng, seq)
				in, _ := prog.Interface(p.in)
				p.pk.In = in
				want := ev.Evaluate(&p.pk)
				inj, mac := wanInj, routerWAN
				if p.in == "lan" {
					inj, mac = lanInj, routerLAN
				}
				if _, err := conn.Counters(true); err != nil {
					t.Fatal(err)
				}
				if err := inj.Send(p.frameF(inj.MAC, mac)); err != nil {
					t.Fatal(err)
				}
				wantID := string(prog.Rules[want.Rule].ID)
				background := func(id string) bool {
					return id == established || id == icmpLocal || id == invalid
				}
				tally.check(t, p.text, want, movedCounters(t, conn, wantID, background, 60*time.Millisecond))
			}
			t.Logf("agreed on %d packets: %s", probes-tally.mismatches, tally)
		})
	}
}

// tally counts one policy's probes: agreements by rule kind, and each
// disagreement reported with the packet, the policy line of the rule the
// evaluator names and the counters the kernel moved.
type tally struct {
	prog       *policy.Program
	src        []byte
	agreed     map[policy.Kind]int
	mismatches int
}

func newTally(prog *policy.Program, src []byte) *tally {
	return &tally{prog: prog, src: src, agreed: map[policy.Kind]int{}}
}

// check compares the evaluator's decision with the counters that moved.
// It stops the test after ten disagreements.
func (ta *tally) check(t *testing.T, probe string, want policy.Decision, moved []string) bool {
	t.Helper()
	r := ta.prog.Rules[want.Rule]
	if len(moved) == 1 && moved[0] == string(r.ID) {
		ta.agreed[r.Kind]++
		return true
	}
	ta.mismatches++
	var names []string
	for _, id := range moved {
		other, _ := ta.prog.Rule(policy.RuleID(id))
		names = append(names, fmt.Sprintf("%s %s", id, other.Name))
	}
	t.Errorf("%s\n  evaluator: %s by %s %s (%s:%s)\n  kernel counters: %v", probe, want.Verdict, r.ID, r.Name, ta.prog.File, r.Pos, names)
	if ta.mismatches >= 10 {
		t.Fatalf("stopping after %d mismatches\npolicy:\n%s", ta.mismatches, ta.src)
	}
	return false
}

// String lists the agreements by rule kind.
func (ta *tally) String() string {
	var kinds []string
	for k, n := range ta.agreed {
		kinds = append(kinds, fmt.Sprintf("%s:%d", k, n))
	}
	slices.Sort(kinds)
	return strings.Join(kinds, " ")
}
