package policy

import (
	"net/netip"
	"os"
	"strings"
	"testing"
)

// FuzzParse: no input makes Parse panic; every diagnostic has a position and
// the FILE:LINE:COL form; a policy Parse accepts compiles, and its evaluator
// agrees with the linear reference on generated packets.
func FuzzParse(f *testing.F) {
	for _, file := range []string{"../../examples/home.yaml", "../../examples/office.yaml", "testdata/every-rule.yaml"} {
		src, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Add([]byte(base))
	f.Add([]byte("interfaces: [a, b\nzones: }\n"))
	f.Add([]byte("a: &x [1]\nb: *x\n"))
	f.Add([]byte("interfaces:\n  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}\nzones: {lan: {egress: {allow: [{name: a, to: ['*.x.example'], ports: [tcp/1-65535]}]}}}\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		pol, diags := Parse("f.yaml", src)
		for _, d := range diags {
			if d.Pos.Line < 1 || d.Pos.Col < 1 {
				t.Fatalf("diagnostic without a position: %s", d)
			}
			if s := d.String(); !strings.HasPrefix(s, "f.yaml:") || d.Msg == "" {
				t.Fatalf("malformed diagnostic %q", s)
			}
		}
		if diags.Err() != nil {
			return
		}
		prog, err := Compile(pol)
		if err != nil {
			t.Fatalf("Parse accepted a policy Compile rejects: %v", err)
		}
		ev := NewEvaluator(prog, Options{})
		ref := &linearEvaluator{prog: prog, registry: SpecialPurposeRegistry()}
		gen := newPacketGen(prog, Options{}, uint64(len(src)))
		for range 64 {
			pk := gen.next()
			if got, want := ev.Evaluate(&pk), ref.Evaluate(&pk); got != want {
				t.Fatalf("%s: evaluator %+v, reference %+v", describePacket(prog, pk), got, want)
			}
		}
		for in := range prog.Interfaces {
			for _, pk := range []Packet{
				{In: in, Src: netip.MustParseAddr("192.168.1.10"), Dst: netip.MustParseAddr("8.8.8.8"), Proto: ProtoTCP, DstPort: 443, TCPFlags: TCPSyn},
				{In: in, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("fd00::1"), Proto: ProtoICMPv6, ICMPType: 135},
			} {
				if d := ev.Evaluate(&pk); d.Rule < 0 || d.Rule >= len(prog.Rules) {
					t.Fatalf("decision %+v names no rule", d)
				}
			}
		}
	})
}

// FuzzParsePacket: no packet text makes ParsePacket panic, and an accepted
// packet is decided.
func FuzzParsePacket(f *testing.F) {
	prog := compileSource(f, DefaultFile, Default())
	ev := NewEvaluator(prog, Options{})
	for _, s := range []string{
		"tcp 192.168.1.10:40000 -> 93.184.216.34:443 in lan new",
		"icmpv6/packet-too-big [2001:db8::1] -> [fd00:53:1::10] in wan related",
		"udp [fd00:53:1::10]:53 -> [2001:4860::8888]:53 in lan flags=SA",
		"icmp/300 1.2.3.4 -> 5.6.7.8 in wan",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pk, err := prog.ParsePacket(s)
		if err != nil {
			return
		}
		if d := ev.Evaluate(&pk); d.Rule < 0 {
			t.Fatalf("ParsePacket(%q) gave a packet no rule decides: %+v", s, d)
		}
	})
}
