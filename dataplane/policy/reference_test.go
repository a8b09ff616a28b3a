package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// linearEvaluator is the slow reference: it decides a packet by scanning the
// Program's rules and the registry linearly, with no prefix tables and no
// precomputed bitsets. It is the baseline of BenchmarkEvaluate and the oracle
// of TestEvaluatorMatchesReference.
type linearEvaluator struct {
	prog     *Program
	opts     Options
	registry []SpecialPurpose
}

func (l *linearEvaluator) addrs(i int) []netip.Prefix {
	ifc := l.prog.Interfaces[i]
	return append(append([]netip.Prefix(nil), ifc.Addresses...), l.opts.Addresses[ifc.Name]...)
}

func (l *linearEvaluator) route(a netip.Addr) (int, bool) {
	best, bestBits := -1, -1
	dflt := -1
	for i, ifc := range l.prog.Interfaces {
		for _, g := range ifc.Gateways {
			if g.Is4() == a.Is4() {
				dflt = i
			}
		}
		if ifc.DHCP {
			dflt = i
		}
		for _, p := range l.addrs(i) {
			if p.Masked().Contains(a) && p.Bits() > bestBits {
				best, bestBits = i, p.Bits()
			}
		}
	}
	if best >= 0 {
		return best, true
	}
	return dflt, dflt >= 0
}

func (l *linearEvaluator) isLocal(a netip.Addr) bool {
	if a.IsMulticast() || a == netip.MustParseAddr("255.255.255.255") {
		return true
	}
	for i := range l.prog.Interfaces {
		for _, p := range l.addrs(i) {
			if p.Addr() == a || l.anycast(p, a) {
				return true
			}
			if a.Is4() && p.Bits() < 31 && p.Masked().Contains(a) && lastAddr(p.Masked()) == a {
				return true
			}
		}
	}
	return false
}

// ownLinkLocal reports whether link-local a is the box's on interface in:
// one of its listed addresses, or any when none are listed.
func (l *linearEvaluator) ownLinkLocal(in int, a netip.Addr) bool {
	ll, known := l.opts.LinkLocal[l.prog.Interfaces[in].Name]
	if !known || a == netip.MustParseAddr("fe80::") {
		return true
	}
	for _, x := range ll {
		if x == a {
			return true
		}
	}
	return false
}

// anycast reports whether a is the subnet-router anycast address of
// interface prefix p.
func (l *linearEvaluator) anycast(p netip.Prefix, a netip.Addr) bool {
	return p.Addr().Is6() && !p.Addr().IsLinkLocalUnicast() && p.Bits() < 127 && !a.IsUnspecified() && p.Masked().Addr() == a
}

func (l *linearEvaluator) bogon(zone int, a netip.Addr) bool {
	best, bits := SpecialPurpose{}, -1
	for _, sp := range l.registry {
		if sp.Prefix.Contains(a) && sp.Prefix.Bits() > bits {
			best, bits = sp, sp.Prefix.Bits()
		}
	}
	if bits < 0 || !best.BogonSource() {
		return false
	}
	for _, i := range l.prog.Zones[zone].Interfaces {
		for _, p := range l.addrs(i) {
			if p.Masked().Contains(a) {
				return false
			}
		}
	}
	return true
}

func (l *linearEvaluator) destMatches(d Destination, a netip.Addr) bool {
	if d.Name == "" {
		return d.Prefix.Contains(a)
	}
	for name, addrs := range l.opts.Resolved {
		n := strings.TrimSuffix(strings.ToLower(name), ".")
		if d.Name != n && !(strings.HasPrefix(d.Name, "*.") && strings.HasSuffix(n, d.Name[1:])) {
			continue
		}
		for _, x := range addrs {
			if x.Unmap() == a {
				return true
			}
		}
	}
	return false
}

func (l *linearEvaluator) Evaluate(pk *Packet) Decision {
	p := l.prog
	dec := func(ri int) Decision {
		return Decision{Verdict: p.Rules[ri].Verdict, Rule: ri, Reason: p.Rules[ri].Reason}
	}
	if pk.In < 0 || pk.In >= len(p.Interfaces) {
		return Decision{Verdict: Drop, Rule: -1, Reason: ReasonUnknownInterface}
	}
	zi := p.Interfaces[pk.In].Zone
	z := p.Zones[zi]
	src, dst := pk.Src, pk.Dst
	srcLink := src.IsUnspecified() || src.IsLinkLocalUnicast()
	local := l.isLocal(dst) || dst.Is6() && dst.IsLinkLocalUnicast() && l.ownLinkLocal(pk.In, dst)
	if local && p.DHCPClient >= 0 && p.Interfaces[pk.In].DHCP && pk.Proto == ProtoUDP && pk.SrcPort == 67 && pk.DstPort == 68 {
		return dec(p.DHCPClient)
	}
	if srcLink && !local && !(dst.Is6() && (dst.IsUnspecified() || dst.IsLinkLocalUnicast())) {
		return dec(p.LinkLocal)
	}
	if !srcLink {
		for i := range p.Interfaces {
			for _, a := range l.addrs(i) {
				if a.Addr() == src || l.anycast(a, src) {
					return dec(p.LocalSource)
				}
			}
		}
		if z.Bogons >= 0 && l.bogon(zi, src) {
			return dec(z.Bogons)
		}
		if z.ReversePath >= 0 {
			out, ok := l.route(src)
			if !ok || src.IsLoopback() || (p.Rules[z.ReversePath].ReversePath == RPFStrict && out != pk.In) {
				return dec(z.ReversePath)
			}
		}
		if z.Sources >= 0 {
			in := false
			for _, s := range p.Rules[z.Sources].Sources {
				in = in || s.Contains(src)
			}
			if !in {
				return dec(z.Sources)
			}
		}
	}
	if pk.Proto == ProtoTCP {
		f := pk.TCPFlags & 0x3f
		syn, ack, fin, rst := f&TCPSyn != 0, f&TCPAck != 0, f&TCPFin != 0, f&TCPRst != 0
		if f == 0 || syn && fin || syn && rst || fin && rst || !ack && f&(TCPFin|TCPPsh|TCPUrg) != 0 {
			return dec(p.TCPFlags)
		}
	}
	switch pk.State {
	case StateInvalid:
		return dec(p.Invalid)
	case StateEstablished, StateRelated:
		return dec(p.Established)
	}
	if pk.Proto == ProtoTCP && !(pk.TCPFlags&TCPSyn != 0 && pk.TCPFlags&(TCPAck|TCPRst|TCPFin) == 0) {
		return dec(p.NewNotSYN)
	}
	boxAddr := false
	for i := range p.Interfaces {
		for _, a := range l.addrs(i) {
			boxAddr = boxAddr || a.Addr() == dst || l.anycast(a, dst)
		}
	}
	if boxAddr && !srcLink {
		for i, pf := range p.PortForwards {
			ri := p.PortForwardRules[i]
			if p.Rules[ri].Zone == zi && pf.Port.Proto == pk.Proto && pf.To.Addr().Is4() == dst.Is4() && pk.DstPort >= pf.Port.Lo && pk.DstPort <= pf.Port.Hi {
				return dec(ri)
			}
		}
	}
	icmpErr := pk.Proto == ProtoICMP && (pk.ICMPType == 3 || pk.ICMPType == 11 || pk.ICMPType == 12) ||
		pk.Proto == ProtoICMPv6 && pk.ICMPType >= 1 && pk.ICMPType <= 4
	if local {
		nd := pk.Proto == ProtoICMPv6 && (pk.ICMPType >= 130 && pk.ICMPType <= 136 || pk.ICMPType == 141 || pk.ICMPType == 142 || pk.ICMPType == 143 || pk.ICMPType == 148 || pk.ICMPType == 149)
		if p.ICMPLocal >= 0 && (icmpErr || nd) {
			return dec(p.ICMPLocal)
		}
		for _, ri := range z.Services {
			if portsMatch(p.Rules[ri].Ports, pk) {
				return dec(ri)
			}
		}
		return dec(z.Inbound)
	}
	if dst.IsUnspecified() || dst.IsLinkLocalUnicast() {
		return dec(p.LinkLocal)
	}
	if p.ICMPForward >= 0 && icmpErr {
		return dec(p.ICMPForward)
	}
	out, ok := l.route(dst)
	if !ok {
		return dec(p.NoRoute)
	}
	if out == pk.In {
		return Decision{Verdict: Drop, Rule: p.ForwardDeny, Reason: ReasonSameInterface}
	}
	oz := p.Interfaces[out].Zone
	if oz == zi {
		return dec(p.IntraZone)
	}
	if !z.ForwardTo[oz] {
		return dec(p.ForwardDeny)
	}
	for _, ri := range z.Egress {
		r := p.Rules[ri]
		toOK := len(r.To) == 0
		for _, d := range r.To {
			toOK = toOK || l.destMatches(d, dst)
		}
		if toOK && portsMatch(r.Ports, pk) {
			return dec(ri)
		}
	}
	return dec(z.EgressDflt)
}

// packetGen draws packets from the addresses that matter to a policy: both
// ends of every prefix it names and their neighbours, registry boundaries,
// resolved names and a few random addresses, with ports at range ends.
type packetGen struct {
	rng   *rand.Rand
	addrs []netip.Addr
	ports []uint16
	n     int            // interfaces
	near  [][]netip.Addr // per interface: addresses on its own prefixes
}

func newPacketGen(prog *Program, opts Options, seed uint64) *packetGen {
	g := &packetGen{rng: rand.New(rand.NewPCG(seed, 1)), n: len(prog.Interfaces)}
	addPrefix := func(p netip.Prefix) {
		p = p.Masked()
		first := p.Addr()
		last := first
		if first.Is4() {
			last = lastAddr(p)
		} else {
			b := first.As16()
			for i := p.Bits(); i < 128; i++ {
				b[i/8] |= 1 << (7 - i%8)
			}
			last = netip.AddrFrom16(b)
		}
		for _, a := range []netip.Addr{first, first.Next(), first.Prev(), last, last.Prev(), last.Next()} {
			if a.IsValid() {
				g.addrs = append(g.addrs, a)
			}
		}
	}
	for _, sp := range SpecialPurposeRegistry() {
		addPrefix(sp.Prefix)
	}
	g.near = make([][]netip.Addr, len(prog.Interfaces))
	for i, ifc := range prog.Interfaces {
		for _, a := range append(append([]netip.Prefix(nil), ifc.Addresses...), opts.Addresses[ifc.Name]...) {
			g.addrs = append(g.addrs, a.Addr())
			addPrefix(a)
			for n, h := 0, a.Addr(); n < 4; n++ {
				h = h.Next()
				g.near[i] = append(g.near[i], h)
			}
		}
	}
	for _, r := range prog.Rules {
		for _, s := range r.Sources {
			addPrefix(s)
		}
		for _, d := range r.To {
			if d.Name == "" {
				addPrefix(d.Prefix)
			}
		}
		for _, pr := range r.Ports {
			g.ports = append(g.ports, pr.Lo, pr.Hi, pr.Lo-1, pr.Hi+1)
		}
	}
	for _, pf := range prog.PortForwards {
		g.ports = append(g.ports, pf.Port.Lo, pf.Port.Hi, pf.Port.Hi+1)
	}
	for _, as := range opts.Resolved {
		g.addrs = append(g.addrs, as...)
	}
	for range 50 {
		g.addrs = append(g.addrs, netip.AddrFrom4([4]byte{byte(g.rng.Uint32()), byte(g.rng.Uint32()), byte(g.rng.Uint32()), byte(g.rng.Uint32())}))
		var b [16]byte
		for i := range b {
			b[i] = byte(g.rng.Uint32())
		}
		b[0] = 0x20 | b[0]&0x1f // mostly global unicast
		g.addrs = append(g.addrs, netip.AddrFrom16(b))
	}
	g.addrs = append(g.addrs, netip.MustParseAddr("fe80::1"), netip.MustParseAddr("fe80::2"), netip.MustParseAddr("fe80::"), netip.MustParseAddr("::"), netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("ff02::1"), netip.MustParseAddr("255.255.255.255"))
	g.ports = append(g.ports, 1, 22, 53, 443, 65535)
	return g
}

func (g *packetGen) addr(is4 bool) netip.Addr {
	for {
		a := g.addrs[g.rng.IntN(len(g.addrs))]
		if a.Is4() == is4 {
			return a
		}
	}
}

func (g *packetGen) next() Packet {
	is4 := g.rng.IntN(2) == 0
	pk := Packet{In: g.rng.IntN(g.n), Src: g.addr(is4), Dst: g.addr(is4), State: CTState(g.rng.IntN(4))}
	if g.rng.IntN(2) == 0 {
		pk.State = StateNew
	}
	if near := g.near[pk.In]; len(near) > 0 && g.rng.IntN(2) == 0 {
		// A source that passes the zone's anti-spoof checks, so that the
		// later rules get exercised too.
		pk.Src = near[g.rng.IntN(len(near))]
		if pk.Src.Is4() != pk.Dst.Is4() {
			pk.Dst = g.addr(pk.Src.Is4())
		}
	}
	switch g.rng.IntN(4) {
	case 0, 1:
		pk.Proto = ProtoTCP
		pk.TCPFlags = uint8(g.rng.IntN(64))
		if g.rng.IntN(2) == 0 {
			pk.TCPFlags = TCPSyn
		}
	case 2:
		pk.Proto = ProtoUDP
	case 3:
		pk.Proto = ProtoICMP
		if !is4 {
			pk.Proto = ProtoICMPv6
		}
		pk.ICMPType = uint8(g.rng.IntN(256))
		if g.rng.IntN(2) == 0 {
			pk.ICMPType = []uint8{0, 1, 2, 3, 4, 8, 11, 12, 128, 129, 133, 134, 135, 136, 137, 143}[g.rng.IntN(16)]
		}
	}
	if pk.Proto == ProtoTCP || pk.Proto == ProtoUDP {
		pk.SrcPort = g.ports[g.rng.IntN(len(g.ports))]
		pk.DstPort = g.ports[g.rng.IntN(len(g.ports))]
	}
	return pk
}

func describePacket(prog *Program, pk Packet) string {
	return fmt.Sprintf("proto %d %s:%d -> %s:%d in %s %s flags=%#x icmp=%d", pk.Proto, pk.Src, pk.SrcPort, pk.Dst, pk.DstPort, prog.Interfaces[pk.In].Name, pk.State, pk.TCPFlags, pk.ICMPType)
}

// TestEvaluatorMatchesReference decides many generated packets with both
// evaluators, on every shipped and test policy, and requires the same rule.
func TestEvaluatorMatchesReference(t *testing.T) {
	opts := Options{
		Addresses: map[string][]netip.Prefix{"wan": {netip.MustParsePrefix("100.64.0.2/10")}},
		Resolved: map[string][]netip.Addr{
			"eu.vendor.example": {netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("2606:2800:220:1::10")},
			"pool.ntp.org":      {netip.MustParseAddr("162.159.200.1")},
			"deb.debian.org":    {netip.MustParseAddr("151.101.2.132")},
		},
		// lan's link-local address is known (fe80::2 is another host's);
		// the other interfaces' are not.
		LinkLocal: map[string][]netip.Addr{"lan": {netip.MustParseAddr("fe80::1")}},
	}
	files := []string{"../../examples/home.yaml", "../../examples/office.yaml", "testdata/every-rule.yaml"}
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			prog := compileFile(t, file)
			o := opts
			if _, ok := prog.Interface("wan"); !ok || !prog.Interfaces[0].DHCP {
				o.Addresses = nil
			}
			fast := NewEvaluator(prog, o)
			ref := &linearEvaluator{prog: prog, opts: o, registry: SpecialPurposeRegistry()}
			gen := newPacketGen(prog, o, 42)
			kinds := map[Kind]int{}
			for range 100000 {
				pk := gen.next()
				got, want := fast.Evaluate(&pk), ref.Evaluate(&pk)
				if got != want {
					r := func(d Decision) string {
						if d.Rule < 0 {
							return "none"
						}
						return prog.Rules[d.Rule].Name
					}
					t.Fatalf("%s\nfast: %s by %s (%s)\nreference: %s by %s (%s)", describePacket(prog, pk), got.Verdict, r(got), got.Reason, want.Verdict, r(want), want.Reason)
				}
				if got.Rule >= 0 {
					kinds[prog.Rules[got.Rule].Kind]++
				}
			}
			t.Logf("decisions by kind: %v", kinds)
		})
	}
}
