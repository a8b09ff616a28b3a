package policy

import (
	"net/netip"
	"os"
	"regexp"
	"testing"
)

func compileFile(t testing.TB, file string) *Program {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return compileSource(t, file, src)
}

func compileSource(t testing.TB, file string, src []byte) *Program {
	t.Helper()
	pol, diags := Parse(file, src)
	if err := diags.Err(); err != nil {
		t.Fatalf("parse %s:\n%v", file, err)
	}
	prog, err := Compile(pol)
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

var ruleIDPattern = regexp.MustCompile(`^r[0-9a-f]{10}$`)

// TestEvaluate covers every rule kind, both address families and each
// anti-spoof case, naming the rule that must decide.
func TestEvaluate(t *testing.T) {
	prog := compileFile(t, "testdata/every-rule.yaml")
	ev := NewEvaluator(prog, Options{Resolved: map[string][]netip.Addr{
		"eu.vendor.example": {netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("2606:2800:220:1::10")},
		"pool.ntp.org":      {netip.MustParseAddr("162.159.200.1")},
		"vendor.example":    {netip.MustParseAddr("93.184.216.99")}, // the wildcard does not cover the apex
	}})
	// An island: no uplink, so nothing outside its prefix has a route.
	island := compileSource(t, "island.yaml", []byte(`interfaces:
  a: {device: eth0, zone: a, addresses: [10.0.0.1/24]}
  b: {device: eth1, zone: b, addresses: [10.0.1.1/24]}
zones: {a: {antispoof: {reverse_path: off}}, b: {}}
forward: [{from: a, to: b}]
`))
	islandEv := NewEvaluator(island, Options{})
	home := compileSource(t, DefaultFile, Default())
	homeEv := NewEvaluator(home, Options{})
	tests := []struct {
		name    string
		packet  string
		verdict Verdict
		rule    string
		kind    Kind
		on      string // the policy: "" every-rule.yaml, "island", or "home" (the built-in default)
	}{
		{"no route", "tcp 10.0.0.5:1000 -> 8.8.8.8:443 in a", Drop, "no route", KindNoRoute, "island"},
		{"no route back, strict", "tcp 8.8.4.4:1000 -> 10.0.0.5:443 in b", Drop, "b antispoof reverse-path strict", KindReversePath, "island"},
		{"island forward", "tcp 10.0.0.5:1000 -> 10.0.1.5:443 in a", Accept, "a egress default allow", KindEgressDefault, "island"},
		// Anti-spoof from the uplink.
		{"wan source is the box", "tcp 100.64.10.2:1000 -> 192.168.1.10:22 in wan established", Drop, "source is the box", KindLocalSource, ""},
		{"lan source is the box", "tcp 192.168.1.1:1000 -> 93.184.216.34:80 in lan", Drop, "source is the box", KindLocalSource, ""},
		{"wan bogon v4 private", "tcp 10.1.2.3:1000 -> 100.64.10.2:22 in wan", Drop, "wan antispoof bogons", KindBogons, ""},
		{"wan bogon v4 documentation", "tcp 198.51.100.7:1000 -> 10.30.0.10:80 in wan", Drop, "wan antispoof bogons", KindBogons, ""},
		{"wan bogon v6 ula", "tcp [fd00:53:1::10]:1000 -> [2001:db8:ffff::2]:22 in wan", Drop, "wan antispoof bogons", KindBogons, ""},
		{"wan bogon v6 documentation", "udp [2001:db8:1::1]:53 -> [fd00:53:1::10]:53 in wan", Drop, "wan antispoof bogons", KindBogons, ""},
		{"wan bogon lan's own prefix", "tcp 192.168.1.10:1000 -> 192.168.1.20:22 in wan", Drop, "wan antispoof bogons", KindBogons, ""},
		{"wan bogon multicast source", "udp 224.0.0.5:1000 -> 100.64.10.2:53 in wan", Drop, "wan antispoof bogons", KindBogons, ""},
		{"wan bogon reachable inside reserved", "tcp 192.0.0.9:1000 -> 100.64.10.2:22 in wan established", Accept, "conntrack established", KindEstablished, ""},
		{"wan uplink's own CGNAT prefix is exempt", "tcp 100.64.10.7:1000 -> 100.64.10.2:22 in wan", Drop, "wan inbound deny", KindInbound, ""},
		{"wan uplink's own v6 documentation prefix is exempt", "tcp [2001:db8:ffff::9]:1000 -> [2001:db8:ffff::2]:22 in wan", Drop, "wan inbound deny", KindInbound, ""},
		{"wan strict rpf: source routed via lan", "tcp 10.30.0.10:1000 -> 100.64.10.2:22 in wan", Drop, "wan antispoof bogons", KindBogons, ""},
		{"wan link-local v6 neighbour discovery", "icmpv6/135 [fe80::1] -> [ff02::1:ff00:2] in wan", Accept, "icmp essential to box", KindICMPLocal, ""},

		// Anti-spoof from inside.
		{"lan source outside prefixes v4", "tcp 192.168.7.7:1000 -> 8.8.8.8:53 in lan", Drop, "lan antispoof reverse-path strict", KindReversePath, ""},
		{"lan2 source of lan prefix, strict rpf", "tcp 192.168.1.10:1000 -> 8.8.8.8:53 in lan2", Drop, "lan antispoof reverse-path strict", KindReversePath, ""},
		{"lan source outside prefixes v6", "tcp [fd00:53:9::1]:1000 -> [2606:4700::1]:443 in lan", Drop, "lan antispoof reverse-path strict", KindReversePath, ""},
		{"iot loose rpf passes, sources drop", "tcp 8.8.8.8:1000 -> 1.1.1.1:443 in iot", Drop, "iot antispoof sources", KindSources, ""},
		{"iot spoofing lan", "tcp 192.168.1.10:1000 -> 1.1.1.1:443 in iot", Drop, "iot antispoof sources", KindSources, ""},
		{"dmz rpf off, sources drop", "tcp 192.168.1.10:1000 -> 1.1.1.1:443 in dmz", Drop, "dmz antispoof sources", KindSources, ""},
		{"dhcp discover from unspecified source", "udp 0.0.0.0:68 -> 255.255.255.255:67 in lan", Drop, "lan inbound deny", KindInbound, ""},

		// TCP flags and conntrack.
		{"syn fin", "tcp 192.168.1.10:1000 -> 8.8.8.8:443 in lan flags=SF", Drop, "tcp flags", KindTCPFlags, ""},
		{"null scan", "tcp 192.168.1.10:1000 -> 8.8.8.8:443 in lan established flags=", Drop, "tcp flags", KindTCPFlags, ""},
		{"fin without ack", "tcp 192.168.1.10:1000 -> 8.8.8.8:443 in lan established flags=F", Drop, "tcp flags", KindTCPFlags, ""},
		{"invalid state", "tcp 192.168.1.10:1000 -> 8.8.8.8:443 in lan invalid", Drop, "conntrack invalid", KindInvalid, ""},
		{"established from wan", "tcp 93.184.216.34:443 -> 192.168.1.10:1000 in wan established", Accept, "conntrack established", KindEstablished, ""},
		{"related icmp v6", "icmpv6/packet-too-big [2606:4700::1] -> [fd00:53:1::10] in wan related", Accept, "conntrack established", KindEstablished, ""},
		{"new tcp ack", "tcp 192.168.1.10:1000 -> 8.8.8.8:443 in lan new flags=A", Drop, "tcp new not syn", KindNewNotSYN, ""},

		// Port forwards.
		{"port forward v4", "tcp 93.184.216.34:5555 -> 100.64.10.2:8080 in wan", Accept, "port-forward web", KindPortForward, ""},
		{"port forward range end", "udp 93.184.216.34:5555 -> 100.64.10.2:27010 in wan", Accept, "port-forward games", KindPortForward, ""},
		{"port forward past range end", "udp 93.184.216.34:5555 -> 100.64.10.2:27011 in wan", Drop, "wan inbound deny", KindInbound, ""},
		{"port forward is v4 only", "tcp [2606:4700::1]:5555 -> [2001:db8:ffff::2]:8080 in wan", Drop, "wan inbound deny", KindInbound, ""},
		{"port forward only from its zone", "tcp 192.168.1.10:5555 -> 192.168.1.1:8080 in lan", Drop, "lan inbound deny", KindInbound, ""},
		{"port forward dhcp-learned address", "tcp 93.184.216.34:5555 -> 100.64.10.2:8080 in wan", Accept, "port-forward web", KindPortForward, ""},

		// The box itself.
		{"dhcp reply on a dhcp interface", "udp 100.64.0.1:67 -> 255.255.255.255:68 in wan", Accept, "dhcp client", KindDHCPClient, "home"},
		{"dhcp reply on a static interface", "udp 192.168.1.7:67 -> 255.255.255.255:68 in lan", Drop, "lan inbound deny", KindInbound, ""},
		{"ssh from lan v4", "tcp 192.168.1.10:40000 -> 192.168.1.1:22 in lan", Accept, "lan service ssh", KindService, ""},
		{"ssh from lan v6", "tcp [fd00:53:1::10]:40000 -> [fd00:53:1::1]:22 in lan", Accept, "lan service ssh", KindService, ""},
		{"ssh to another interface's address", "tcp 192.168.1.10:40000 -> 10.30.0.1:22 in lan", Accept, "lan service ssh", KindService, ""},
		{"dns over tcp", "tcp 192.168.1.10:40000 -> 192.168.1.1:53 in lan", Accept, "lan service dns", KindService, ""},
		{"ping box v6", "icmpv6 [fd00:53:1::10] -> [fd00:53:1::1] in lan", Accept, "lan service ping", KindService, ""},
		{"ping box from iot", "icmp 192.168.20.5 -> 192.168.20.1 in iot", Drop, "iot inbound deny", KindInbound, ""},
		{"ssh from wan", "tcp 93.184.216.34:40000 -> 100.64.10.2:22 in wan", Drop, "wan inbound deny", KindInbound, ""},
		{"ssh from iot", "tcp 192.168.20.5:40000 -> 192.168.20.1:22 in iot", Drop, "iot inbound deny", KindInbound, ""},
		{"mgmt inbound allow", "tcp 10.99.0.5:40000 -> 10.99.0.1:9999 in mgmt", Accept, "mgmt inbound allow", KindInbound, ""},
		{"subnet broadcast is the box", "udp 192.168.1.10:137 -> 192.168.1.255:137 in lan", Drop, "lan inbound deny", KindInbound, ""},
		{"essential icmp to box from wan", "icmp/destination-unreachable 93.184.216.34 -> 100.64.10.2 in wan new", Accept, "icmp essential to box", KindICMPLocal, ""},
		{"router advertisement from wan", "icmpv6/134 [fe80::1] -> [ff02::1] in wan", Accept, "icmp essential to box", KindICMPLocal, ""},

		// Forwarding.
		{"lan to internet v4", "tcp 192.168.1.10:40000 -> 93.184.216.34:443 in lan", Accept, "lan egress default allow", KindEgressDefault, ""},
		{"lan to internet v6", "tcp [fd00:53:1::10]:40000 -> [2606:4700::1]:443 in lan", Accept, "lan egress default allow", KindEgressDefault, ""},
		{"lan to lan2 same zone", "tcp 192.168.1.10:40000 -> 192.168.2.10:445 in lan", Accept, "intra-zone", KindIntraZone, ""},
		{"wan to lan unsolicited", "tcp 93.184.216.34:40000 -> 192.168.1.10:22 in wan", Drop, "forward deny", KindForwardDeny, ""},
		{"iot to lan", "tcp 192.168.20.5:40000 -> 192.168.1.10:22 in iot", Drop, "forward deny", KindForwardDeny, ""},
		{"lan to iot", "tcp 192.168.1.10:40000 -> 192.168.20.5:80 in lan", Accept, "lan egress default allow", KindEgressDefault, ""},
		{"forward link-local source", "tcp [fe80::5]:40000 -> [2606:4700::1]:80 in lan", Drop, "link-local", KindLinkLocal, ""},
		{"link-local destination is the box", "tcp [fe80::5]:40000 -> [fe80::1]:22 in lan", Accept, "lan service ssh", KindService, ""},
		{"neighbour advertisement to the box's link-local", "icmpv6/136 [fe80::2] -> [fe80::1] in lan", Accept, "icmp essential to box", KindICMPLocal, ""},
		{"wan back out wan", "tcp 8.8.8.8:1234 -> 1.1.1.1:80 in wan", Drop, "forward deny", KindForwardDeny, ""},
		{"lan back out lan", "tcp 192.168.1.10:1234 -> 192.168.1.20:80 in lan", Drop, "forward deny", KindForwardDeny, ""},
		{"forwarded essential icmp error", "icmp/time-exceeded 93.184.216.34 -> 192.168.1.10 in wan new", Accept, "icmp essential forwarded", KindICMPForward, ""},
		{"forwarded packet too big v6", "icmpv6/packet-too-big [2606:4700::1] -> [fd00:53:1::10] in wan new", Accept, "icmp essential forwarded", KindICMPForward, ""},
		{"unsolicited icmp error is invalid by default", "icmp/time-exceeded 93.184.216.34 -> 192.168.1.10 in wan", Drop, "conntrack invalid", KindInvalid, ""},
		{"v4 link-local destination is not the box", "tcp 192.168.1.10:1000 -> 169.254.1.1:22 in lan", Drop, "link-local", KindLinkLocal, ""},
		{"forwarded echo is not essential", "icmp 93.184.216.34 -> 192.168.1.10 in wan", Drop, "forward deny", KindForwardDeny, ""},

		// Egress allowlists.
		{"iot wildcard name v4", "tcp 192.168.20.5:40000 -> 93.184.216.34:443 in iot", Accept, "iot egress vendor-cloud", KindEgressAllow, ""},
		{"iot wildcard name v6", "tcp [fd00:53:20::5]:40000 -> [2606:2800:220:1::10]:443 in iot", Accept, "iot egress vendor-cloud", KindEgressAllow, ""},
		{"iot wildcard wrong port", "tcp 192.168.20.5:40000 -> 93.184.216.34:80 in iot", Drop, "iot egress default deny", KindEgressDefault, ""},
		{"iot wildcard does not cover apex", "tcp 192.168.20.5:40000 -> 93.184.216.99:443 in iot", Drop, "iot egress default deny", KindEgressDefault, ""},
		{"iot exact name", "udp 192.168.20.5:40000 -> 162.159.200.1:123 in iot", Accept, "iot egress time", KindEgressAllow, ""},
		{"iot port range low end", "udp 192.168.20.5:40000 -> 198.51.100.1:3478 in iot", Accept, "iot egress relay", KindEgressAllow, ""},
		{"iot port range high end", "udp 192.168.20.5:40000 -> 198.51.100.255:3481 in iot", Accept, "iot egress relay", KindEgressAllow, ""},
		{"iot port range past end", "udp 192.168.20.5:40000 -> 198.51.100.1:3482 in iot", Drop, "iot egress default deny", KindEgressDefault, ""},
		{"iot prefix boundary outside", "udp 192.168.20.5:40000 -> 198.51.101.0:3478 in iot", Drop, "iot egress default deny", KindEgressDefault, ""},
		{"iot covering prefix different port", "tcp 192.168.20.5:40000 -> 198.51.100.7:5000 in iot", Accept, "iot egress relay-wide", KindEgressAllow, ""},
		{"iot v6 prefix", "udp [fd00:53:20::5]:40000 -> [2001:db8:77:ffff::1]:3480 in iot", Accept, "iot egress relay", KindEgressAllow, ""},
		{"iot v6 prefix outside", "udp [fd00:53:20::5]:40000 -> [2001:db8:78::1]:3480 in iot", Drop, "iot egress default deny", KindEgressDefault, ""},
		{"iot entry without destination", "icmp 192.168.20.5 -> 8.8.8.8 in iot", Accept, "iot egress ping-out", KindEgressAllow, ""},
		{"iot entry without destination v6", "icmpv6 [fd00:53:20::5] -> [2606:4700::1] in iot", Accept, "iot egress ping-out", KindEgressAllow, ""},
		{"dmz allow without default denies the rest", "tcp 10.30.0.10:40000 -> 203.0.113.26:587 in dmz", Drop, "dmz egress default deny", KindEgressDefault, ""},
		{"dmz single address", "tcp 10.30.0.10:40000 -> 203.0.113.25:587 in dmz", Accept, "dmz egress smtp", KindEgressAllow, ""},
		{"dmz cannot reach lan", "tcp 10.30.0.10:40000 -> 192.168.1.10:22 in dmz", Drop, "forward deny", KindForwardDeny, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prog, ev := prog, ev
			switch tc.on {
			case "island":
				prog, ev = island, islandEv
			case "home":
				prog, ev = home, homeEv
			}
			pk, err := prog.ParsePacket(tc.packet)
			if err != nil {
				t.Fatal(err)
			}
			got := ev.Evaluate(&pk)
			if got.Rule < 0 {
				t.Fatalf("Evaluate(%s) = %+v, no rule", tc.packet, got)
			}
			r := prog.Rules[got.Rule]
			if got.Verdict != tc.verdict || r.Name != tc.rule || r.Kind != tc.kind {
				t.Errorf("Evaluate(%s) = %s by %q (%s, %s), want %s by %q (%s)", tc.packet, got.Verdict, r.Name, r.Kind, got.Reason, tc.verdict, tc.rule, tc.kind)
			}
			if r.Verdict != got.Verdict {
				t.Errorf("decision verdict %s differs from its rule's %s", got.Verdict, r.Verdict)
			}
			if !ruleIDPattern.MatchString(string(r.ID)) {
				t.Errorf("rule ID %q does not match %s", r.ID, ruleIDPattern)
			}
		})
	}
	covered := map[Kind]bool{}
	for _, tc := range tests {
		covered[tc.kind] = true
	}
	for k := Kind(0); k < numKinds; k++ {
		if k == KindSYNLimit || k == KindICMPLimit {
			continue // rate limits need many packets; the lab tests them
		}
		if !covered[k] {
			t.Errorf("no case decided by a %s rule", k)
		}
	}
}

// A DHCP uplink has no address in the policy; the address it learns at run
// time makes port forwards and the box's services match, and its prefix is
// exempt from the bogon check.
func TestEvaluateRuntimeAddresses(t *testing.T) {
	prog := compileSource(t, DefaultFile, Default())
	pk, err := prog.ParsePacket("tcp 100.64.0.9:1000 -> 100.64.0.2:22 in wan")
	if err != nil {
		t.Fatal(err)
	}
	before := NewEvaluator(prog, Options{}).Evaluate(&pk)
	if r := prog.Rules[before.Rule]; r.Kind != KindBogons {
		t.Errorf("before the lease: decided by %s, want bogons", r.Name)
	}
	ev := NewEvaluator(prog, Options{Addresses: map[string][]netip.Prefix{"wan": {netip.MustParsePrefix("100.64.0.2/10")}}})
	after := ev.Evaluate(&pk)
	if r := prog.Rules[after.Rule]; r.Kind != KindInbound || after.Verdict != Drop {
		t.Errorf("after the lease: %s by %s, want drop by wan inbound deny", after.Verdict, r.Name)
	}
}

// An IPv4-mapped IPv6 source is an IPv6 packet's source, and the registry
// says it is not a valid one.
func TestEvaluateMappedSource(t *testing.T) {
	prog := compileFile(t, "testdata/every-rule.yaml")
	wan, _ := prog.Interface("wan")
	pk := Packet{In: wan, Src: netip.MustParseAddr("::ffff:8.8.8.8"), Dst: netip.MustParseAddr("2001:db8:ffff::2"), Proto: ProtoTCP, DstPort: 22, TCPFlags: TCPSyn}
	got := NewEvaluator(prog, Options{}).Evaluate(&pk)
	if r := prog.Rules[got.Rule]; got.Verdict != Drop || r.Kind != KindBogons {
		t.Errorf("Evaluate(mapped source) = %s by %s, want drop by wan antispoof bogons", got.Verdict, r.Name)
	}
}

func TestEvaluateUnknownInterface(t *testing.T) {
	prog := compileSource(t, DefaultFile, Default())
	ev := NewEvaluator(prog, Options{})
	pk := Packet{In: 7, Src: netip.MustParseAddr("192.168.1.2"), Dst: netip.MustParseAddr("1.1.1.1"), Proto: ProtoUDP}
	if got := ev.Evaluate(&pk); got.Verdict != Drop || got.Rule != -1 || got.Reason != ReasonUnknownInterface {
		t.Errorf("Evaluate on interface 7 = %+v, want drop, rule -1, unknown interface", got)
	}
}

func TestEvaluateNoAllocs(t *testing.T) {
	prog := compileFile(t, "testdata/every-rule.yaml")
	ev := NewEvaluator(prog, Options{})
	var pks []Packet
	for _, s := range []string{
		"tcp 192.168.20.5:40000 -> 198.51.100.1:3478 in iot",
		"tcp [fd00:53:1::10]:40000 -> [2606:4700::1]:443 in lan",
		"tcp 10.1.2.3:1000 -> 100.64.10.2:22 in wan",
		"tcp 192.168.1.10:40000 -> 192.168.1.1:22 in lan",
	} {
		pk, err := prog.ParsePacket(s)
		if err != nil {
			t.Fatal(err)
		}
		pks = append(pks, pk)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		for i := range pks {
			ev.Evaluate(&pks[i])
		}
	})
	if allocs != 0 {
		t.Errorf("Evaluate allocates %.1f times per run, want 0", allocs)
	}
}

// With the box's link-local addresses known, a link-local destination is
// the box's only on the interface that holds it: another is sent back out
// the link by Linux, and dropped as link-local.
func TestEvaluateKnownLinkLocal(t *testing.T) {
	prog := compileFile(t, "testdata/every-rule.yaml")
	ev := NewEvaluator(prog, Options{LinkLocal: map[string][]netip.Addr{"lan": {netip.MustParseAddr("fe80::1")}}})
	for _, tc := range []struct {
		packet string
		kind   Kind
	}{
		{"tcp [fe80::5]:40000 -> [fe80::1]:22 in lan", KindService},
		{"tcp [fe80::5]:40000 -> [fe80::9]:22 in lan", KindLinkLocal},
		{"tcp [fd00:53:1::5]:40000 -> [fe80::9]:22 in lan", KindLinkLocal},
		{"tcp [fe80::5]:40000 -> [fe80::9]:22 in wan", KindInbound}, // wan's are not known: taken as the box's
	} {
		pk, err := prog.ParsePacket(tc.packet)
		if err != nil {
			t.Fatal(err)
		}
		got := ev.Evaluate(&pk)
		if got.Rule < 0 || prog.Rules[got.Rule].Kind != tc.kind {
			t.Errorf("Evaluate(%s) = %+v, want a %s rule", tc.packet, got, tc.kind)
		}
	}
}
