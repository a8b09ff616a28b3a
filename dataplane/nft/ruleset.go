package nft

import (
	"fmt"
	"iter"
	"net/netip"
	"slices"

	"github.com/gaissmai/bart"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/sluicefw/sluice/dataplane/policy"
)

// TableName is the nftables table sluice owns, in the inet family. Nothing
// outside it is ever touched.
const TableName = "sluice"

// Ruleset is a compiled policy as nftables objects: counters, sets and
// chains, in the order they are created. It is built once and then rendered
// (Text) or applied (Apply); it is read-only after Build.
type Ruleset struct {
	Counters []string // one named counter per policy rule, by rule ID
	sets     []*set
	chains   []*chain
}

// set is a named set of addresses, always an interval set; or, when concat
// is set, of address, protocol and port ranges together.
type set struct {
	name    string
	id      uint32
	v4      bool
	dynamic bool // filled at run time (DNS answers), with timeouts
	ranges  []addrRange
	concat  []concatRange
	comment string
}

// concatRange is one element of an address . protocol . port set.
type concatRange struct {
	addrs  addrRange
	proto  uint8
	lo, hi uint16
}

// size is the number of elements the set holds.
func (s *set) size() int { return len(s.ranges) + len(s.concat) }

// hosts reports whether every range is a single address: such a set needs
// no intervals, and the kernel holds it as a hash of half the elements (an
// interval needs an element for its start and one for its end).
func (s *set) hosts() bool {
	if s.dynamic || s.concat != nil || len(s.ranges) == 0 {
		return false
	}
	for _, r := range s.ranges {
		if r.lo != r.hi {
			return false
		}
	}
	return true
}

type addrRange struct{ lo, hi netip.Addr }

type baseChain struct {
	typ    nftables.ChainType
	hook   *nftables.ChainHook
	hookNm string
	prio   int32
	accept bool // policy accept (else drop)
}

type chain struct {
	name  string
	base  *baseChain
	rules []rule
}

type rule struct {
	p       piece
	comment string
}

// Sets returns the number of sets and the total number of address ranges
// they hold.
func (rs *Ruleset) Sets() (sets, ranges int) {
	for _, s := range rs.sets {
		ranges += s.size()
	}
	return len(rs.sets), ranges
}

// builder assembles a Ruleset from a Program. It is used once.
type builder struct {
	prog   *policy.Program
	opts   policy.Options
	rs     *Ruleset
	nextID uint32
}

func (b *builder) addSet(name string, v4 bool, comment string, prefixes []netip.Prefix) *set {
	return b.addRanges(name, v4, comment, len(prefixes), slices.Values(prefixes))
}

// addRanges is addSet for prefixes that come one by one, at most about
// hint of them: an allowlist's million destinations are not copied into a
// list of prefixes first.
func (b *builder) addRanges(name string, v4 bool, comment string, hint int, prefixes iter.Seq[netip.Prefix]) *set {
	b.nextID++
	s := &set{name: name, id: b.nextID, v4: v4, comment: comment, ranges: make([]addrRange, 0, hint)}
	for p := range prefixes {
		if p.Addr().Is4() == v4 {
			s.ranges = append(s.ranges, prefixRange(p))
		}
	}
	s.ranges = mergeRanges(s.ranges)
	b.rs.sets = append(b.rs.sets, s)
	return s
}

// addConcatSet adds a set of every address range of one family crossed with
// every port range, or returns nil when the entry has no address of that
// family. Addresses and port ranges are merged first, so no two elements
// overlap.
func (b *builder) addConcatSet(name string, v4 bool, comment string, prefixes iter.Seq[netip.Prefix], ports []policy.PortRange) *set {
	var addrs []addrRange
	for p := range prefixes {
		if p.Addr().Is4() == v4 {
			addrs = append(addrs, prefixRange(p))
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	addrs = mergeRanges(addrs)
	b.nextID++
	s := &set{name: name, id: b.nextID, v4: v4, comment: comment}
	for _, proto := range []uint8{policy.ProtoTCP, policy.ProtoUDP} {
		for _, pr := range mergePorts(ports, proto) {
			for _, a := range addrs {
				s.concat = append(s.concat, concatRange{addrs: a, proto: proto, lo: pr[0], hi: pr[1]})
			}
		}
	}
	b.rs.sets = append(b.rs.sets, s)
	return s
}

// mergePorts returns the port ranges of one protocol, sorted and merged.
func mergePorts(ports []policy.PortRange, proto uint8) [][2]uint16 {
	var rs [][2]uint16
	for _, p := range ports {
		if p.Proto == proto {
			rs = append(rs, [2]uint16{max(p.Lo, 1), p.Hi})
		}
	}
	slices.SortFunc(rs, func(a, b [2]uint16) int { return int(a[0]) - int(b[0]) })
	var out [][2]uint16
	for _, r := range rs {
		if n := len(out); n > 0 && uint32(r[0]) <= uint32(out[n-1][1])+1 {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

func (b *builder) addChain(name string, base *baseChain) *chain {
	c := &chain{name: name, base: base}
	b.rs.chains = append(b.rs.chains, c)
	return c
}

// LogGroup is the NFLOG group dropped packets are logged to. A logged drop
// carries its rule's index in Program.Rules, plus one, as the packet mark.
const LogGroup = 5

// LogPrefix prefixes every drop logged to LogGroup.
const LogPrefix = "sluice drop"

// add appends a rule counting into policy rule ri (when ri >= 0) and ending
// with the given verdict piece. When the policy logs drops, a drop marks the
// packet with its rule and goes through the rate-limited log chain.
func (b *builder) add(c *chain, ri int, v piece, matches ...piece) {
	ps := slices.Clone(matches)
	comment := ""
	if ri >= 0 {
		r := b.prog.Rules[ri]
		ps = append(ps, counter(string(r.ID)))
		comment = string(r.ID) + " " + r.Name
		if b.prog.Log.Drops && v.text == "drop" {
			ps = append(ps, markSet(uint32(ri+1)))
			v = verdict(expr.VerdictJump, "drop_log")
		}
	}
	ps = append(ps, v)
	c.rules = append(c.rules, rule{p: join(ps...), comment: comment})
}

func accept() piece { return verdict(expr.VerdictAccept, "") }
func drop() piece   { return verdict(expr.VerdictDrop, "") }

func verdictOf(v policy.Verdict) piece {
	if v == policy.Accept {
		return accept()
	}
	return drop()
}

// Build compiles a Program into a Ruleset that decides packets the way
// policy.Evaluator does with the same Options, in the order documented on
// policy.Program. Options give the addresses interfaces learned at run time
// (they join the box's addresses and their zone's own prefixes) and what
// DNS names resolved to (they fill the name sets).
func Build(prog *policy.Program, opts policy.Options) (*Ruleset, error) {
	b := &builder{prog: prog, rs: &Ruleset{}, opts: opts}
	for _, r := range prog.Rules {
		b.rs.Counters = append(b.rs.Counters, string(r.ID))
	}

	// Sets shared by every zone.
	bogon4, bogon6 := bogonRanges()
	b4 := b.addSet("bogons4", true, "IANA special-purpose sources (RFC 6890) and multicast", nil)
	b4.ranges = bogon4
	b6 := b.addSet("bogons6", false, "IANA special-purpose sources (RFC 6890) and multicast", nil)
	b6.ranges = bogon6
	linkLocal := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("::/128"), netip.MustParsePrefix("fe80::/10")}
	ll4 := b.addSet("linklocal4", true, "unspecified and link-local: never leave the link", linkLocal)
	ll6 := b.addSet("linklocal6", false, "unspecified and link-local: never leave the link", linkLocal)
	var boxAddrs []netip.Prefix
	for _, ifc := range prog.Interfaces {
		for _, a := range b.addresses(ifc) {
			boxAddrs = append(boxAddrs, netip.PrefixFrom(a.Addr(), a.Addr().BitLen()))
			if ac, ok := policy.SubnetRouterAnycast(a); ok {
				boxAddrs = append(boxAddrs, netip.PrefixFrom(ac, 128))
			}
		}
	}
	box4 := b.addSet("box4", true, "the box's own addresses", boxAddrs)
	box6 := b.addSet("box6", false, "the box's own addresses", boxAddrs)

	type zoneSets struct{ own4, own6, src4, src6 *set }
	zs := make([]zoneSets, len(prog.Zones))
	for zi, z := range prog.Zones {
		var own []netip.Prefix
		for _, i := range z.Interfaces {
			for _, a := range b.addresses(prog.Interfaces[i]) {
				own = append(own, a.Masked())
			}
		}
		zs[zi].own4 = b.addSet(z.Name+"_own4", true, "zone "+z.Name+"'s own prefixes, exempt from the bogon check", own)
		zs[zi].own6 = b.addSet(z.Name+"_own6", false, "zone "+z.Name+"'s own prefixes, exempt from the bogon check", own)
		if z.Sources >= 0 {
			src := prog.Rules[z.Sources].Sources
			zs[zi].src4 = b.addSet(z.Name+"_src4", true, "zone "+z.Name+"'s allowed sources", src)
			zs[zi].src6 = b.addSet(z.Name+"_src6", false, "zone "+z.Name+"'s allowed sources", src)
		}
	}

	dhcpIfaces := []policy.CompiledInterface{}
	for _, ifc := range prog.Interfaces {
		if ifc.DHCP {
			dhcpIfaces = append(dhcpIfaces, ifc)
		}
	}

	if prog.Log.Drops {
		// Drops from every hook meet here: logged at the policy's rate, then
		// dropped.
		dl := b.addChain("drop_log", nil)
		b.add(dl, -1, logGroup(LogGroup, LogPrefix), limitRate(prog.Log.Rate.N, prog.Log.Rate.Per))
		b.add(dl, -1, drop())
	}

	// prerouting: DHCP replies, then each zone's anti-spoof checks, then the
	// checks of every packet. After conntrack (-200), before DNAT (-100).
	pre := b.addChain("prerouting", &baseChain{typ: nftables.ChainTypeFilter, hook: nftables.ChainHookPrerouting, hookNm: "prerouting", prio: -150, accept: true})
	for _, ifc := range dhcpIfaces {
		for _, t := range []uint32{rtnLocal, rtnBroadcast} {
			b.add(pre, -1, accept(), iifname(ifc.Device), udpPorts(67, 68), daddrType(t))
		}
	}
	for _, ifc := range prog.Interfaces {
		b.add(pre, -1, verdict(expr.VerdictJump, "pre_"+prog.Zones[ifc.Zone].Name), iifname(ifc.Device))
	}
	for _, f := range badTCPFlags {
		b.add(pre, prog.TCPFlags, drop(), tcpFlags(f[0], f[1], false))
	}
	b.add(pre, prog.Invalid, drop(), ctState(ctInvalid, "invalid"))
	// Rate limits of new connections and pings, per zone, after conntrack
	// has sorted out what is new.
	for _, z := range prog.Zones {
		for _, ii := range z.Interfaces {
			dev := prog.Interfaces[ii].Device
			if z.SYNLimit >= 0 {
				r := prog.Rules[z.SYNLimit].Rate
				b.add(pre, z.SYNLimit, drop(), iifname(dev), tcpFlags(fin|syn|rst|ack, syn, false), ctState(ctNew, "new"), limitOver(r.N, r.Per))
			}
			if z.ICMPLimit >= 0 {
				r := prog.Rules[z.ICMPLimit].Rate
				b.add(pre, z.ICMPLimit, drop(), iifname(dev), portRange(unix.IPPROTO_ICMP, 8, 8, true), limitOver(r.N, r.Per))
				b.add(pre, z.ICMPLimit, drop(), iifname(dev), portRange(unix.IPPROTO_ICMPV6, 128, 128, true), limitOver(r.N, r.Per))
			}
		}
	}

	for zi, z := range prog.Zones {
		c := b.addChain("pre_"+z.Name, nil)
		// A link-local or unspecified source may only reach the box, and
		// is then exempt from the checks below.
		for _, t := range []uint32{rtnLocal, rtnBroadcast, rtnMulticast} {
			b.add(c, -1, verdict(expr.VerdictReturn, ""), addrInSet(true, true, false, ll4), daddrType(t))
		}
		for _, t := range []uint32{rtnLocal, rtnMulticast} {
			b.add(c, -1, verdict(expr.VerdictReturn, ""), addrInSet(false, true, false, ll6), daddrType(t))
		}
		b.add(c, -1, verdict(expr.VerdictReturn, ""), addrInSet(false, true, false, ll6), addrInSet(false, false, false, ll6))
		// fib calls the subnet-router anycast addresses anycast, not local.
		b.add(c, -1, verdict(expr.VerdictReturn, ""), addrInSet(false, true, false, ll6), addrInSet(false, false, false, box6))
		b.add(c, prog.LinkLocal, drop(), addrInSet(true, true, false, ll4))
		b.add(c, prog.LinkLocal, drop(), addrInSet(false, true, false, ll6))
		b.add(c, prog.LocalSource, drop(), addrInSet(true, true, false, box4))
		b.add(c, prog.LocalSource, drop(), addrInSet(false, true, false, box6))
		if z.Bogons >= 0 {
			b.add(c, z.Bogons, drop(), addrInSet(true, true, false, b4), addrInSet(true, true, true, zs[zi].own4))
			b.add(c, z.Bogons, drop(), addrInSet(false, true, false, b6), addrInSet(false, true, true, zs[zi].own6))
		}
		if z.ReversePath >= 0 {
			b.add(c, z.ReversePath, drop(), rpfMissing(prog.Rules[z.ReversePath].ReversePath == policy.RPFStrict))
		}
		if z.Sources >= 0 {
			b.add(c, z.Sources, drop(), addrInSet(true, true, true, zs[zi].src4))
			b.add(c, z.Sources, drop(), addrInSet(false, true, true, zs[zi].src6))
		}
	}

	// Port forwards: DNAT before routing, then accepted in forward.
	dstnat := b.addChain("dstnat", &baseChain{typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPrerouting, hookNm: "prerouting", prio: -100, accept: true})
	for i, pf := range prog.PortForwards {
		ri := prog.PortForwardRules[i]
		for _, ii := range prog.Zones[prog.Rules[ri].Zone].Interfaces {
			box, ll := box6, ll6
			if pf.To.Addr().Is4() {
				box, ll = box4, ll4
			}
			// The box's own addresses, as the evaluator has them: not every
			// local address (fib daddr type local would take 127.0.0.1 too).
			// Nor a link-local source, which is never forwarded.
			b.add(dstnat, -1, dnat(pf.To), iifname(prog.Interfaces[ii].Device), addrInSet(pf.To.Addr().Is4(), false, false, box), addrInSet(pf.To.Addr().Is4(), true, true, ll), portRange(pf.Port.Proto, pf.Port.Lo, pf.Port.Hi, true))
		}
	}

	// input: the box itself.
	in := b.addChain("input", &baseChain{typ: nftables.ChainTypeFilter, hook: nftables.ChainHookInput, hookNm: "input", prio: 0})
	b.add(in, -1, accept(), iifname("lo"))
	for _, ifc := range dhcpIfaces {
		b.add(in, prog.DHCPClient, accept(), iifname(ifc.Device), udpPorts(67, 68))
	}
	b.add(in, prog.Established, accept(), ctState(ctEstablished|ctRelated, "established,related"))
	b.add(in, prog.NewNotSYN, drop(), tcpFlags(fin|syn|rst|ack, syn, true))
	for _, ifc := range prog.Interfaces {
		b.add(in, -1, verdict(expr.VerdictJump, "in_"+prog.Zones[ifc.Zone].Name), iifname(ifc.Device))
	}
	for _, z := range prog.Zones {
		c := b.addChain("in_"+z.Name, nil)
		if prog.ICMPLocal >= 0 {
			for _, t := range essentialICMPLocal {
				b.add(c, prog.ICMPLocal, accept(), portRange(t.proto, t.lo, t.hi, true))
			}
		}
		for _, ri := range z.Services {
			for _, p := range prog.Rules[ri].Ports {
				b.add(c, ri, accept(), portMatch(p)...)
			}
		}
		b.add(c, z.Inbound, verdictOf(prog.Rules[z.Inbound].Verdict))
	}

	// forward: through the box.
	fwd := b.addChain("forward", &baseChain{typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, hookNm: "forward", prio: 0})
	b.add(fwd, prog.Established, accept(), ctState(ctEstablished|ctRelated, "established,related"))
	b.add(fwd, prog.NewNotSYN, drop(), tcpFlags(fin|syn|rst|ack, syn, true))
	for i, pf := range prog.PortForwards {
		ri := prog.PortForwardRules[i]
		for _, ii := range prog.Zones[prog.Rules[ri].Zone].Interfaces {
			b.add(fwd, ri, accept(), iifname(prog.Interfaces[ii].Device), ctStatusDNAT(), nfproto(pf.To.Addr().Is4()), l4proto(pf.Port.Proto), ctOriginalDport(pf.Port.Lo, pf.Port.Hi))
		}
	}
	b.add(fwd, prog.LinkLocal, drop(), addrInSet(true, false, false, ll4))
	b.add(fwd, prog.LinkLocal, drop(), addrInSet(false, false, false, ll6))
	if prog.ICMPForward >= 0 {
		for _, t := range essentialICMPErrors {
			b.add(fwd, prog.ICMPForward, accept(), portRange(t.proto, t.lo, t.hi, true))
		}
	}
	for _, ifc := range prog.Interfaces {
		b.add(fwd, prog.ForwardDeny, drop(), iifname(ifc.Device), oifname(ifc.Device))
	}
	for _, ifc := range prog.Interfaces {
		b.add(fwd, -1, verdict(expr.VerdictJump, "fwd_"+prog.Zones[ifc.Zone].Name), iifname(ifc.Device))
	}
	for zi, z := range prog.Zones {
		c := b.addChain("fwd_"+z.Name, nil)
		for _, ii := range z.Interfaces {
			b.add(c, prog.IntraZone, accept(), oifname(prog.Interfaces[ii].Device))
		}
		for oz, ok := range z.ForwardTo {
			if !ok || oz == zi {
				continue
			}
			for _, ii := range prog.Zones[oz].Interfaces {
				b.add(c, -1, verdict(expr.VerdictJump, "egress_"+z.Name), oifname(prog.Interfaces[ii].Device))
			}
		}
		b.add(c, prog.ForwardDeny, drop())
	}
	for _, z := range prog.Zones {
		c := b.addChain("egress_"+z.Name, nil)
		for _, ri := range z.Egress {
			b.egressEntry(c, ri)
		}
		b.add(c, z.EgressDflt, verdictOf(prog.Rules[z.EgressDflt].Verdict))
	}

	// IPv4 leaving through the uplink is masqueraded.
	srcnat := b.addChain("srcnat", &baseChain{typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting, hookNm: "postrouting", prio: 100, accept: true})
	for _, ifc := range prog.Interfaces {
		if ifc.Uplink() {
			b.add(srcnat, -1, masquerade(), oifname(ifc.Device), nfproto(true))
		}
	}
	return b.rs, nil
}

// egressEntry adds the rules of one allowlist entry: each destination set of
// each family, crossed with each port range.
func (b *builder) egressEntry(c *chain, ri int) {
	r := b.prog.Rules[ri]
	hasNames, has4, has6, hosts := false, false, false, true
	for _, d := range r.To {
		switch {
		case d.Name != "":
			hasNames = true
		case d.Prefix.Addr().Is4():
			has4 = true
		default:
			has6 = true
		}
		hosts = hosts && (d.Name != "" || d.Prefix.IsSingleIP())
	}
	has := map[bool]bool{true: has4, false: has6}
	prefixes := func(yield func(netip.Prefix) bool) {
		for _, d := range r.To {
			if d.Name == "" && !yield(d.Prefix) {
				return
			}
		}
	}
	type dst struct {
		p      piece
		family uint8 // 4, 6, or 0 for any destination
	}
	if !hasNames && !hosts && len(r.To)*len(r.Ports) <= shardRanges && len(r.Ports) > 0 && !slices.ContainsFunc(r.Ports, func(p policy.PortRange) bool {
		return p.Proto != policy.ProtoTCP && p.Proto != policy.ProtoUDP
	}) {
		// Address ranges and TCP/UDP ports only: one address . protocol .
		// port interval set per family, one lookup per packet. Not for
		// single addresses, nor for more ranges crossed with ports than
		// one set shard holds: a set of addresses, looked up after the
		// port, is then cheaper for a new flow than every address crossed
		// with every port in many shards (a million addresses with two
		// ports: 123 interval shards, about 130 µs a new flow, against 62
		// hash shards, or 62 interval shards for ranges).
		for _, v4 := range []bool{true, false} {
			if s := b.addConcatSet(string(r.ID)+"_tp"+map[bool]string{true: "4", false: "6"}[v4], v4, r.Name+" destinations and ports", prefixes, r.Ports); s != nil {
				for _, shard := range b.shard(s) {
					b.add(c, ri, accept(), addrProtoPortInSet(v4, shard))
				}
			}
		}
		return
	}
	var dsts []dst
	if len(r.To) == 0 {
		dsts = []dst{{}}
	}
	for _, v4 := range []bool{true, false} {
		fam := map[bool]string{true: "4", false: "6"}[v4]
		if has[v4] {
			s := b.addRanges(string(r.ID)+"_to"+fam, v4, r.Name+" destinations", len(r.To), prefixes)
			for _, shard := range b.shard(s) {
				dsts = append(dsts, dst{addrInSet(v4, false, false, shard), familyOf(v4)})
			}
		}
		if hasNames {
			s := b.addSet(string(r.ID)+"_names"+fam, v4, r.Name+" addresses its DNS names resolved to", b.resolved(r.To))
			s.dynamic = true
			dsts = append(dsts, dst{addrInSet(v4, false, false, s), familyOf(v4)})
		}
	}
	ports := r.Ports
	if len(ports) == 0 {
		ports = []policy.PortRange{{}}
	}
	for _, d := range dsts {
		for _, p := range ports {
			if p.Proto == policy.ProtoICMP && d.family == 6 || p.Proto == policy.ProtoICMPv6 && d.family == 4 {
				continue // ICMP never reaches an IPv6 destination, nor ICMPv6 an IPv4 one
			}
			// The port first: a comparison is cheaper than a set lookup.
			b.add(c, ri, accept(), append(portMatch(p), d.p)...)
		}
	}
}

// addresses are an interface's static addresses and those it learned.
func (b *builder) addresses(ifc policy.CompiledInterface) []netip.Prefix {
	return append(slices.Clone(ifc.Addresses), b.opts.Addresses[ifc.Name]...)
}

// resolved returns host prefixes of the addresses the names among dsts
// resolved to, as Options.Resolved gives them.
func (b *builder) resolved(dsts []policy.Destination) []netip.Prefix {
	var out []netip.Prefix
	for name, addrs := range b.opts.Resolved {
		for _, d := range dsts {
			if d.Name != "" && policy.NameMatches(d.Name, name) {
				for _, a := range addrs {
					a = a.Unmap()
					out = append(out, netip.PrefixFrom(a, a.BitLen()))
				}
				break
			}
		}
	}
	return out
}

// shardRanges bounds the ranges of one allowlist set. The kernel dumps a
// set by walking it from the start for every message, so reading back a set
// of n ranges costs n squared: a million in one set takes minutes to verify,
// in sets of this size about a second. Each shard costs one more set lookup,
// for the first packet of a flow only.
const shardRanges = 16384

// shard splits a large set into sets of at most shardRanges ranges, named
// NAME_0, NAME_1, ...; a small set is returned as it is.
func (b *builder) shard(s *set) []*set {
	if s.size() <= shardRanges {
		return []*set{s}
	}
	var out []*set
	ranges, concat := s.ranges, s.concat
	s.ranges, s.concat = nil, nil
	base := s.name
	for i := 0; i < len(ranges)+len(concat); i += shardRanges {
		part := s
		if i > 0 {
			b.nextID++
			part = &set{id: b.nextID, v4: s.v4, dynamic: s.dynamic, comment: s.comment}
			b.rs.sets = append(b.rs.sets, part)
		}
		part.name = fmt.Sprintf("%s_%d", base, i/shardRanges)
		if len(ranges) > 0 {
			part.ranges = ranges[i:min(i+shardRanges, len(ranges))]
		} else {
			part.concat = concat[i:min(i+shardRanges, len(concat))]
		}
		out = append(out, part)
	}
	return out
}

func familyOf(v4 bool) uint8 {
	if v4 {
		return 4
	}
	return 6
}

// portMatch matches a policy port range; Proto 0 matches anything.
func portMatch(p policy.PortRange) []piece {
	switch p.Proto {
	case 0:
		return nil
	case policy.ProtoICMP, policy.ProtoICMPv6:
		if p.Lo == 0 && p.Hi == 255 {
			return []piece{l4proto(p.Proto)}
		}
	default:
		if p.Lo == 0 && p.Hi == 65535 {
			return []piece{l4proto(p.Proto)}
		}
	}
	return []piece{portRange(p.Proto, p.Lo, p.Hi, true)}
}

// badTCPFlags are the (mask, value) pairs no TCP stack sends; they mirror
// the evaluator's check.
var badTCPFlags = [][2]uint8{
	{fin | syn | rst | psh | ack | urg, 0},
	{syn | fin, syn | fin},
	{syn | rst, syn | rst},
	{fin | rst, fin | rst},
	{fin | ack, fin},
	{psh | ack, psh},
	{urg | ack, urg},
}

type icmpTypes struct {
	proto  uint8
	lo, hi uint16
}

// The essential ICMP of RFC 4890 and RFC 1122, as the evaluator has them.
var (
	essentialICMPErrors = []icmpTypes{
		{unix.IPPROTO_ICMP, 3, 3}, {unix.IPPROTO_ICMP, 11, 12},
		{unix.IPPROTO_ICMPV6, 1, 4},
	}
	essentialICMPLocal = append(slices.Clone(essentialICMPErrors),
		icmpTypes{unix.IPPROTO_ICMPV6, 130, 136}, icmpTypes{unix.IPPROTO_ICMPV6, 141, 143}, icmpTypes{unix.IPPROTO_ICMPV6, 148, 149})
)

// bogonRanges turns the special-purpose registry into disjoint address
// ranges that are bogon sources, with the most specific entry deciding each
// address (so 192.0.0.9/32 is carved out of 192.0.0.0/24).
func bogonRanges() (v4, v6 []addrRange) {
	reg := policy.SpecialPurposeRegistry()
	tbl := new(bart.Table[bool])
	var bounds []netip.Addr
	for _, sp := range reg {
		tbl.Insert(sp.Prefix, sp.BogonSource())
		r := prefixRange(sp.Prefix)
		bounds = append(bounds, r.lo)
		if n := r.hi.Next(); n.IsValid() && n.Is4() == r.hi.Is4() {
			bounds = append(bounds, n)
		}
	}
	slices.SortFunc(bounds, func(a, b netip.Addr) int { return a.Compare(b) })
	bounds = slices.Compact(bounds)
	for i, lo := range bounds {
		var hi netip.Addr
		if i+1 < len(bounds) && bounds[i+1].Is4() == lo.Is4() {
			hi = bounds[i+1].Prev()
		} else {
			hi = lastOfFamily(lo)
		}
		if bogon, ok := tbl.Lookup(lo); ok && bogon {
			if lo.Is4() {
				v4 = append(v4, addrRange{lo, hi})
			} else {
				v6 = append(v6, addrRange{lo, hi})
			}
		}
	}
	return mergeRanges(v4), mergeRanges(v6)
}

func lastOfFamily(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.MustParseAddr("255.255.255.255")
	}
	return netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
}

func prefixRange(p netip.Prefix) addrRange {
	if p.IsSingleIP() {
		return addrRange{p.Addr(), p.Addr()}
	}
	p = p.Masked()
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	hi, _ := netip.AddrFromSlice(b)
	return addrRange{p.Addr(), hi}
}

// mergeRanges sorts ranges and merges overlapping or adjacent ones, in
// place. Lists that come sorted (many large ones do) are not sorted again.
func mergeRanges(rs []addrRange) []addrRange {
	byLo := func(a, b addrRange) int { return a.lo.Compare(b.lo) }
	if !slices.IsSortedFunc(rs, byLo) {
		slices.SortFunc(rs, byLo)
	}
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if next := last.hi.Next(); !next.IsValid() || !next.Less(r.lo) {
				if last.hi.Less(r.hi) {
					last.hi = r.hi
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

func (r addrRange) String() string {
	for bits := 0; bits <= r.lo.BitLen(); bits++ {
		p := netip.PrefixFrom(r.lo, bits)
		if p.Masked().Addr() == r.lo && prefixRange(p).hi == r.hi {
			if bits == r.lo.BitLen() {
				return r.lo.String()
			}
			return p.String()
		}
	}
	return fmt.Sprintf("%s-%s", r.lo, r.hi)
}
