package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// benchPolicy is a policy with 100 egress allow entries holding 10,000
// prefixes in all, half IPv4 and half IPv6, and the packets to decide: new
// TCP flows from lan hosts to addresses inside those prefixes (on allowed and
// on other ports) and outside them.
func benchPolicy(tb testing.TB) (*Program, []Packet) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	var b strings.Builder
	b.WriteString(`interfaces:
  wan: {device: eth0, zone: wan, addresses: [dhcp]}
  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24, "fd00:53:1::1/64"]}
zones:
  wan: {antispoof: {bogons: drop}}
  lan:
    antispoof: {sources: [192.168.1.0/24, "fd00:53:1::/64"]}
    egress:
      default: deny
      allow:
`)
	var inside []netip.Addr
	for e := range 100 {
		fmt.Fprintf(&b, "        - name: e%d\n          ports: [tcp/%d, udp/%d-%d]\n          to:\n", e, 1000+e, 2000+e, 2100+e)
		for i := range 100 {
			if i%2 == 0 {
				a := netip.AddrFrom4([4]byte{byte(11 + e), byte(i), byte(rng.IntN(256)), 0})
				fmt.Fprintf(&b, "            - %s/24\n", a)
				inside = append(inside, a.Next())
			} else {
				a := netip.AddrFrom16([16]byte{0x24, 0x00, byte(e), byte(i), byte(rng.IntN(256)), byte(rng.IntN(256))})
				fmt.Fprintf(&b, "            - \"%s/48\"\n", a)
				inside = append(inside, a.Next())
			}
		}
	}
	b.WriteString("forward: [{from: lan, to: wan}]\n")
	prog := compileSource(tb, "bench.yaml", []byte(b.String()))
	if n := len(prog.Rules); n < 100 {
		tb.Fatalf("bench policy has %d rules, want at least 100", n)
	}
	lan, _ := prog.Interface("lan")
	var pks []Packet
	for i := range 4096 {
		dst := inside[rng.IntN(len(inside))]
		if i%4 == 3 {
			dst = netip.AddrFrom4([4]byte{byte(150 + rng.IntN(50)), byte(rng.IntN(256)), byte(rng.IntN(256)), 1}) // outside every prefix
		}
		src := netip.MustParseAddr("192.168.1.10")
		if !dst.Is4() {
			src = netip.MustParseAddr("fd00:53:1::10")
		}
		pks = append(pks, Packet{In: lan, Src: src, Dst: dst, Proto: ProtoTCP, SrcPort: 40000, DstPort: uint16(1000 + rng.IntN(100)), TCPFlags: TCPSyn, State: StateNew})
	}
	return prog, pks
}

func BenchmarkEvaluate(b *testing.B) {
	prog, pks := benchPolicy(b)
	ev := NewEvaluator(prog, Options{})
	ref := &linearEvaluator{prog: prog, registry: SpecialPurposeRegistry()}
	for i := range pks[:256] {
		if got, want := ev.Evaluate(&pks[i]), ref.Evaluate(&pks[i]); got != want {
			b.Fatalf("%s: evaluator %+v, reference %+v", describePacket(prog, pks[i]), got, want)
		}
	}
	b.Run("bart", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			ev.Evaluate(&pks[i&4095])
			i++
		}
	})
	b.Run("linear-baseline", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			ref.Evaluate(&pks[i&4095])
			i++
		}
	})
}

func TestBenchPolicyNoAllocs(t *testing.T) {
	prog, pks := benchPolicy(t)
	ev := NewEvaluator(prog, Options{})
	allocs := testing.AllocsPerRun(10, func() {
		for i := range pks {
			ev.Evaluate(&pks[i])
		}
	})
	if allocs != 0 {
		t.Errorf("Evaluate on the 10,000-prefix policy allocates %.1f times per run, want 0", allocs)
	}
}
