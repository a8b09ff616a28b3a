package policy

import (
	"math/bits"
	"net/netip"
	"slices"

	"github.com/gaissmai/bart"
)

// CTState is the conntrack state of a packet.
type CTState uint8

const (
	StateNew CTState = iota
	StateEstablished
	StateRelated
	StateInvalid
)

var ctStateNames = [...]string{StateNew: "new", StateEstablished: "established", StateRelated: "related", StateInvalid: "invalid"}

func (s CTState) String() string {
	if int(s) < len(ctStateNames) {
		return ctStateNames[s]
	}
	return "invalid"
}

// FirstState is the conntrack state Linux gives a packet of a flow it has
// not seen (with nf_conntrack_tcp_loose=0, as sluice sets it): new for a
// bare TCP SYN, for UDP, and for the ICMP requests that open a flow (echo,
// timestamp, information and address mask; ICMPv6 echo), and for IPv6
// neighbour discovery and multicast listener messages; invalid for
// everything else, an ICMP error that quotes no known flow among them.
func FirstState(pk *Packet) CTState {
	switch pk.Proto {
	case ProtoTCP:
		if pk.TCPFlags&(TCPSyn|TCPAck|TCPRst|TCPFin) == TCPSyn {
			return StateNew
		}
	case ProtoUDP:
		return StateNew
	case ProtoICMP:
		switch pk.ICMPType {
		case 8, 13, 15, 17:
			return StateNew
		}
	case ProtoICMPv6:
		if pk.ICMPType == 128 || pk.ICMPType >= 130 && pk.ICMPType <= 143 {
			return StateNew
		}
	default:
		return StateNew
	}
	return StateInvalid
}

// ParseCTState parses new, established, related or invalid.
func ParseCTState(s string) (CTState, bool) {
	for i, n := range ctStateNames {
		if n == s {
			return CTState(i), true
		}
	}
	return 0, false
}

// TCP flag bits, as in the TCP header.
const (
	TCPFin = 1 << iota
	TCPSyn
	TCPRst
	TCPPsh
	TCPAck
	TCPUrg
)

// Packet is the summary of one packet the evaluator decides on. It is a plain
// value; the evaluator never keeps it.
type Packet struct {
	In       int // index into Program.Interfaces
	Src, Dst netip.Addr
	Proto    uint8
	SrcPort  uint16
	DstPort  uint16
	ICMPType uint8 // for ICMP and ICMPv6
	ICMPCode uint8
	TCPFlags uint8
	State    CTState
}

// Decision is the evaluator's answer: the verdict, the index of the deciding
// rule in Program.Rules (-1 only for a packet on an unknown interface) and a
// constant reason.
type Decision struct {
	Verdict Verdict
	Rule    int
	Reason  Reason
}

// Options are facts the policy file cannot know: addresses the box learned at
// run time (DHCP) and what DNS names resolved to.
type Options struct {
	// Addresses adds interface addresses, by interface name.
	Addresses map[string][]netip.Prefix
	// Resolved gives the addresses a DNS name resolved to; egress entries
	// whose names match it allow them.
	Resolved map[string][]netip.Addr
	// LinkLocal gives the box's IPv6 link-local addresses, by interface
	// name. A link-local destination is the box's only on the interface
	// that holds it; Linux sends others back out the link they came in by.
	// For an interface not listed, every link-local destination is taken as
	// the box's (a policy does not say them).
	LinkLocal map[string][]netip.Addr
}

// Evaluator decides packets against a Program. It is immutable once built and
// safe for concurrent use; Evaluate does not allocate.
type Evaluator struct {
	prog      *Program
	ifaceZone []int
	ifaceDHCP []bool
	ifaceLL   [][]netip.Addr    // the box's link-local addresses by interface; nil: not known
	boxAddrs  *bart.Lite        // the box's own unicast addresses
	local     *bart.Lite        // the box's own addresses and broadcast addresses
	routes    *bart.Table[int]  // connected prefixes -> interface index
	dflt      [2]int            // interface of the default route, by family (IPv4, IPv6), or -1
	special   *bart.Table[bool] // special-purpose prefixes -> is a bogon source
	zones     []zoneEval
	pfs       []pfEval
}

type zoneEval struct {
	exempt  *bart.Lite // the zone's own prefixes, exempt from the bogon check
	sources *bart.Lite
	rpf     ReversePath
	svc     []portRule
	egress  egressEval
}

// portRule is one rule matched on protocol and port ranges.
type portRule struct {
	rule  int
	ports []PortRange // empty: any
}

// egressEval finds the first allowlist entry matching a destination. dsts
// maps every destination prefix to a bitset of the entries whose
// destinations contain it (its own entries and those of every covering
// prefix), so that one longest-prefix lookup yields every candidate.
type egressEval struct {
	entries []portRule
	words   int              // bitset length in uint64s
	anyDst  []uint64         // entries without destinations
	dsts    *bart.Table[int] // prefix -> offset into sets
	sets    []uint64
}

type pfEval struct {
	zone   int
	proto  uint8
	lo, hi uint16
	is4    bool
	rule   int
}

// NewEvaluator builds the lookup structures for prog.
func NewEvaluator(prog *Program, opts Options) *Evaluator {
	e := &Evaluator{
		prog:     prog,
		local:    new(bart.Lite),
		boxAddrs: new(bart.Lite),
		routes:   new(bart.Table[int]),
		dflt:     [2]int{-1, -1},
		special:  new(bart.Table[bool]),
	}
	for _, sp := range SpecialPurposeRegistry() {
		e.special.Insert(sp.Prefix, sp.BogonSource())
	}
	ifaceAddrs := make([][]netip.Prefix, len(prog.Interfaces))
	for i, ifc := range prog.Interfaces {
		e.ifaceZone = append(e.ifaceZone, ifc.Zone)
		e.ifaceDHCP = append(e.ifaceDHCP, ifc.DHCP)
		ll, known := opts.LinkLocal[ifc.Name]
		if known && ll == nil {
			ll = []netip.Addr{} // known to have none
		}
		e.ifaceLL = append(e.ifaceLL, ll)
		ifaceAddrs[i] = append(append([]netip.Prefix(nil), ifc.Addresses...), opts.Addresses[ifc.Name]...)
		// A default route of a family comes from a gateway of that family,
		// or with DHCP (IPv4 by the lease, IPv6 by router advertisements).
		for f, is4 := range []bool{true, false} {
			if ifc.DHCP || slices.ContainsFunc(ifc.Gateways, func(g netip.Addr) bool { return g.Is4() == is4 }) {
				e.dflt[f] = i
			}
		}
		for _, a := range ifaceAddrs[i] {
			e.local.Insert(netip.PrefixFrom(a.Addr(), a.Addr().BitLen()))
			e.boxAddrs.Insert(netip.PrefixFrom(a.Addr(), a.Addr().BitLen()))
			e.routes.Insert(a.Masked(), i)
			if a.Addr().Is4() && a.Bits() < 31 {
				e.local.Insert(netip.PrefixFrom(lastAddr(a.Masked()), 32))
			}
			if ac, ok := SubnetRouterAnycast(a); ok {
				e.local.Insert(netip.PrefixFrom(ac, 128))
				e.boxAddrs.Insert(netip.PrefixFrom(ac, 128))
			}
		}
	}
	e.local.Insert(netip.MustParsePrefix("255.255.255.255/32"))
	e.local.Insert(netip.MustParsePrefix("224.0.0.0/4"))
	e.local.Insert(netip.MustParsePrefix("ff00::/8"))

	for _, z := range prog.Zones {
		ze := zoneEval{exempt: new(bart.Lite), sources: new(bart.Lite), rpf: RPFOff}
		for _, i := range z.Interfaces {
			for _, a := range ifaceAddrs[i] {
				ze.exempt.Insert(a.Masked())
			}
		}
		if z.ReversePath >= 0 {
			ze.rpf = prog.Rules[z.ReversePath].ReversePath
		}
		if z.Sources >= 0 {
			for _, s := range prog.Rules[z.Sources].Sources {
				ze.sources.Insert(s)
			}
		}
		for _, ri := range z.Services {
			ze.svc = append(ze.svc, portRule{rule: ri, ports: prog.Rules[ri].Ports})
		}
		ze.egress = buildEgress(prog, z.Egress, opts.Resolved)
		e.zones = append(e.zones, ze)
	}
	for i, pf := range prog.PortForwards {
		ri := prog.PortForwardRules[i]
		e.pfs = append(e.pfs, pfEval{zone: prog.Rules[ri].Zone, proto: pf.Port.Proto, lo: pf.Port.Lo, hi: pf.Port.Hi, is4: pf.To.Addr().Is4(), rule: ri})
	}
	return e
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= (1 << (32 - p.Bits())) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func buildEgress(prog *Program, entries []int, resolved map[string][]netip.Addr) egressEval {
	eg := egressEval{words: (len(entries) + 63) / 64, dsts: new(bart.Table[int])}
	eg.anyDst = make([]uint64, eg.words)
	own := map[netip.Prefix][]uint64{}
	setBit := func(p netip.Prefix, bit int) {
		bs, ok := own[p]
		if !ok {
			bs = make([]uint64, eg.words)
			own[p] = bs
		}
		bs[bit/64] |= 1 << (bit % 64)
	}
	for bit, ri := range entries {
		r := prog.Rules[ri]
		eg.entries = append(eg.entries, portRule{rule: ri, ports: r.Ports})
		if len(r.To) == 0 {
			eg.anyDst[bit/64] |= 1 << (bit % 64)
		}
		for _, d := range r.To {
			if d.Name == "" {
				setBit(d.Prefix, bit)
				continue
			}
			for name, addrs := range resolved {
				if !NameMatches(d.Name, name) {
					continue
				}
				for _, a := range addrs {
					a = a.Unmap()
					setBit(netip.PrefixFrom(a, a.BitLen()), bit)
				}
			}
		}
	}
	// Each stored prefix carries the entries of every prefix covering it, so
	// that a longest-prefix match finds them all.
	tmp := new(bart.Table[[]uint64])
	for p, bs := range own {
		tmp.Insert(p, bs)
	}
	for p := range own {
		off := len(eg.sets)
		eg.sets = append(eg.sets, make([]uint64, eg.words)...)
		for _, bs := range tmp.Supernets(p) {
			for w := range bs {
				eg.sets[off+w] |= bs[w]
			}
		}
		eg.dsts.Insert(p, off)
	}
	return eg
}

func (e *Evaluator) rule(ri int, r Reason) Decision {
	return Decision{Verdict: e.prog.Rules[ri].Verdict, Rule: ri, Reason: r}
}

// Evaluate decides one packet in the order Program documents.
func (e *Evaluator) Evaluate(pk *Packet) Decision {
	if pk.In < 0 || pk.In >= len(e.ifaceZone) {
		return Decision{Verdict: Drop, Rule: -1, Reason: ReasonUnknownInterface}
	}
	zi := e.ifaceZone[pk.In]
	z := &e.prog.Zones[zi]
	ze := &e.zones[zi]
	src, dst := pk.Src, pk.Dst
	onLink := linkScoped(src)
	// Every interface has an IPv6 link-local address: a link-local
	// destination is the box's when it is the incoming interface's, or
	// when the interface's are not known.
	toBox := e.local.Contains(dst) || dst.Is6() && dst.IsLinkLocalUnicast() && e.ownLinkLocal(pk.In, dst)

	// 0. DHCP replies to the box's own DHCP client, before anti-spoof: the
	// server's address may be private, and before the lease the box has no
	// route back to it.
	if toBox && e.prog.DHCPClient >= 0 && e.ifaceDHCP[pk.In] && pk.Proto == ProtoUDP && pk.SrcPort == 67 && pk.DstPort == 68 {
		return e.rule(e.prog.DHCPClient, ReasonDHCPClient)
	}

	// 1. Anti-spoof, on every packet. A link-local or unspecified source
	// may only reach the box (or, in IPv6, another link-local address,
	// which step 6 drops unless it is the box's); it is exempt from the
	// other checks.
	if onLink && !toBox && !(dst.Is6() && linkScoped(dst)) {
		return e.rule(e.prog.LinkLocal, ReasonLinkLocal)
	}
	if !onLink {
		if e.boxAddrs.Contains(src) {
			return e.rule(e.prog.LocalSource, ReasonLocalSource)
		}
		if z.Bogons >= 0 {
			if bogon, ok := e.special.Lookup(src); ok && bogon && !ze.exempt.Contains(src) {
				return e.rule(z.Bogons, ReasonBogonSource)
			}
		}
		if z.ReversePath >= 0 && !e.reversePathOK(src, pk.In, ze.rpf) {
			return e.rule(z.ReversePath, ReasonReversePath)
		}
		if z.Sources >= 0 && !ze.sources.Contains(src) {
			return e.rule(z.Sources, ReasonSourceNotInZone)
		}
	}

	// 2. Impossible TCP flags.
	if pk.Proto == ProtoTCP && badTCPFlags(pk.TCPFlags) {
		return e.rule(e.prog.TCPFlags, ReasonBadTCPFlags)
	}

	// 3. Conntrack.
	switch pk.State {
	case StateInvalid:
		return e.rule(e.prog.Invalid, ReasonInvalidState)
	case StateEstablished, StateRelated:
		return e.rule(e.prog.Established, ReasonEstablished)
	}
	if pk.Proto == ProtoTCP && pk.TCPFlags&(TCPSyn|TCPAck|TCPRst|TCPFin) != TCPSyn {
		return e.rule(e.prog.NewNotSYN, ReasonNewNotSYN)
	}

	// 4. Port forwards: to one of the box's own (unicast) addresses, from
	// their zone.
	// A link-local source is not forwarded, so it never reaches one.
	if (pk.Proto == ProtoTCP || pk.Proto == ProtoUDP) && len(e.pfs) > 0 && !onLink && e.boxAddrs.Contains(dst) {
		for i := range e.pfs {
			pf := &e.pfs[i]
			if pf.zone == zi && pf.proto == pk.Proto && pf.is4 == dst.Is4() && pk.DstPort >= pf.lo && pk.DstPort <= pf.hi {
				return e.rule(pf.rule, ReasonPortForward)
			}
		}
	}

	// 5. To the box.
	if toBox {
		if e.prog.ICMPLocal >= 0 && essentialICMPLocal(pk) {
			return e.rule(e.prog.ICMPLocal, ReasonEssentialICMP)
		}
		for i := range ze.svc {
			if portsMatch(ze.svc[i].ports, pk) {
				return e.rule(ze.svc[i].rule, ReasonService)
			}
		}
		return e.rule(z.Inbound, e.prog.Rules[z.Inbound].Reason)
	}

	// 6. Forwarded.
	if linkScoped(dst) {
		return e.rule(e.prog.LinkLocal, ReasonLinkLocal)
	}
	if e.prog.ICMPForward >= 0 && essentialICMPError(pk) {
		return e.rule(e.prog.ICMPForward, ReasonEssentialICMP)
	}
	out, ok := e.route(dst)
	if !ok {
		return e.rule(e.prog.NoRoute, ReasonNoRoute)
	}
	if out == pk.In {
		// Out the way it came: the box is no relay.
		return e.rule(e.prog.ForwardDeny, ReasonSameInterface)
	}
	oz := e.ifaceZone[out]
	if oz == zi {
		return e.rule(e.prog.IntraZone, ReasonIntraZone)
	}
	if !z.ForwardTo[oz] {
		return e.rule(e.prog.ForwardDeny, ReasonZonePairNotForwarded)
	}
	if ri, ok := ze.egress.match(dst, pk); ok {
		return e.rule(ri, ReasonEgressAllowed)
	}
	return e.rule(z.EgressDflt, e.prog.Rules[z.EgressDflt].Reason)
}

func (eg *egressEval) match(dst netip.Addr, pk *Packet) (int, bool) {
	if len(eg.entries) == 0 {
		return -1, false
	}
	off, found := eg.dsts.Lookup(dst)
	for w := 0; w < eg.words; w++ {
		word := eg.anyDst[w]
		if found {
			word |= eg.sets[off+w]
		}
		for word != 0 {
			b := bits.TrailingZeros64(word)
			word &^= 1 << b
			ent := &eg.entries[w*64+b]
			if portsMatch(ent.ports, pk) {
				return ent.rule, true
			}
		}
	}
	return -1, false
}

// route returns the interface the box would send dst out of.
func (e *Evaluator) route(dst netip.Addr) (int, bool) {
	if i, ok := e.routes.Lookup(dst); ok {
		return i, true
	}
	f := 0
	if dst.Is6() {
		f = 1
	}
	return e.dflt[f], e.dflt[f] >= 0
}

// SubnetRouterAnycast returns the subnet-router anycast address (RFC 4291
// 2.6.1) of an IPv6 interface prefix: Linux, forwarding, takes it as the
// box's own on every prefix shorter than /127.
func SubnetRouterAnycast(p netip.Prefix) (netip.Addr, bool) {
	if !p.Addr().Is6() || p.Bits() >= 127 || p.Addr().IsLinkLocalUnicast() || p.Masked().Addr().IsUnspecified() {
		return netip.Addr{}, false
	}
	return p.Masked().Addr(), true
}

// ownLinkLocal reports whether link-local address a is the box's on
// interface in, taking it as the box's when that is not known. fe80:: is
// every interface's: the subnet-router anycast address of the link-local
// prefix.
func (e *Evaluator) ownLinkLocal(in int, a netip.Addr) bool {
	a = a.WithZone("")
	ll := e.ifaceLL[in]
	return ll == nil || a == linkLocalAnycast || slices.Contains(ll, a)
}

// linkLocalAnycast is fe80::, which Linux, forwarding, takes as its own on
// every interface.
var linkLocalAnycast = netip.MustParseAddr("fe80::")

func (e *Evaluator) reversePathOK(src netip.Addr, in int, mode ReversePath) bool {
	if src.IsLoopback() {
		return false // routed to the box itself, out of no interface
	}
	out, ok := e.route(src)
	if !ok {
		return false
	}
	return mode == RPFLoose || out == in
}

// linkScoped reports whether a is unspecified or link-local: such addresses
// never leave their link, are exempt from the anti-spoof checks (neighbour
// discovery and DHCP need them), and are never forwarded.
func linkScoped(a netip.Addr) bool {
	return a.IsUnspecified() || a.IsLinkLocalUnicast()
}

func portsMatch(ports []PortRange, pk *Packet) bool {
	if len(ports) == 0 {
		return true
	}
	for i := range ports {
		p := &ports[i]
		if p.Proto == 0 {
			return true
		}
		if p.Proto != pk.Proto {
			continue
		}
		var v uint16
		switch pk.Proto {
		case ProtoTCP, ProtoUDP:
			v = pk.DstPort
		case ProtoICMP, ProtoICMPv6:
			v = uint16(pk.ICMPType)
		}
		if v >= p.Lo && v <= p.Hi {
			return true
		}
	}
	return false
}

// badTCPFlags reports flag combinations no TCP stack sends: none at all,
// SYN with FIN or RST, FIN with RST, and FIN, PSH or URG without ACK.
func badTCPFlags(f uint8) bool {
	f &= TCPFin | TCPSyn | TCPRst | TCPPsh | TCPAck | TCPUrg
	switch {
	case f == 0:
		return true
	case f&(TCPSyn|TCPFin) == TCPSyn|TCPFin, f&(TCPSyn|TCPRst) == TCPSyn|TCPRst, f&(TCPFin|TCPRst) == TCPFin|TCPRst:
		return true
	case f&TCPAck == 0 && f&(TCPFin|TCPPsh|TCPUrg) != 0:
		return true
	}
	return false
}

// ICMP types sluice treats as essential (RFC 4890 section 4.4 for the box,
// 4.3.1 for forwarded traffic; RFC 1122 for ICMPv4).
const (
	icmp4DestUnreach  = 3
	icmp4TimeExceeded = 11
	icmp4ParamProblem = 12
	icmp6DestUnreach  = 1
	icmp6PacketTooBig = 2
	icmp6TimeExceeded = 3
	icmp6ParamProblem = 4
)

// essentialICMPError reports the error messages that path MTU discovery and
// diagnostics need: destination unreachable (including fragmentation needed
// and packet too big), time exceeded and parameter problem.
func essentialICMPError(pk *Packet) bool {
	switch pk.Proto {
	case ProtoICMP:
		return pk.ICMPType == icmp4DestUnreach || pk.ICMPType == icmp4TimeExceeded || pk.ICMPType == icmp4ParamProblem
	case ProtoICMPv6:
		return pk.ICMPType >= icmp6DestUnreach && pk.ICMPType <= icmp6ParamProblem
	}
	return false
}

// essentialICMPLocal adds what the box itself needs to take part in IPv6:
// multicast listener discovery (130-132, 143), router and neighbour
// solicitation and advertisement (133-136), inverse neighbour discovery
// (141, 142) and SEND certification paths (148, 149). RFC 4890 section 4.4.1.
func essentialICMPLocal(pk *Packet) bool {
	if essentialICMPError(pk) {
		return true
	}
	if pk.Proto != ProtoICMPv6 {
		return false
	}
	switch t := pk.ICMPType; {
	case t >= 130 && t <= 136, t == 141, t == 142, t == 143, t == 148, t == 149:
		return true
	}
	return false
}
