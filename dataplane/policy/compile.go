package policy

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Compile turns a policy into a Program. It re-checks the policy and returns
// an *InvalidError carrying every error when the policy is not valid.
func Compile(p *Policy) (*Program, error) {
	if p == nil {
		return nil, fmt.Errorf("compile: no policy")
	}
	c := &compiler{
		prog: &Program{File: p.File, Hostname: p.Hostname, Log: p.Log, ICMP: p.ICMP, PortForwards: slices.Clone(p.PortForwards)},
		ids:  map[RuleID]string{},
	}
	zoneIdx := map[string]int{}
	for i, z := range p.Zones {
		zoneIdx[z.Name] = i
		c.prog.Zones = append(c.prog.Zones, CompiledZone{Name: z.Name, ForwardTo: make([]bool, len(p.Zones))})
	}
	for i, ifc := range p.Interfaces {
		zi, ok := zoneIdx[ifc.Zone]
		if !ok {
			return nil, fmt.Errorf("compile %s: interface %s names undefined zone %q", p.File, ifc.Name, ifc.Zone)
		}
		c.prog.Interfaces = append(c.prog.Interfaces, CompiledInterface{
			Name: ifc.Name, Device: ifc.Device, Zone: zi, DHCP: ifc.DHCP,
			Addresses: slices.Clone(ifc.Addresses), Gateways: slices.Clone(ifc.Gateways),
		})
		c.prog.Zones[zi].Interfaces = append(c.prog.Zones[zi].Interfaces, i)
	}
	for _, fw := range p.Forward {
		from, ok := zoneIdx[fw.From]
		if !ok {
			return nil, fmt.Errorf("compile %s: forward from undefined zone %q", p.File, fw.From)
		}
		for _, to := range fw.To {
			ti, ok := zoneIdx[to]
			if !ok {
				return nil, fmt.Errorf("compile %s: forward to undefined zone %q", p.File, to)
			}
			c.prog.Zones[from].ForwardTo[ti] = true
		}
	}

	// Rules are added in evaluation order, so that Program.Rules reads as the
	// policy's decision list.
	c.prog.DHCPClient = -1
	if slices.ContainsFunc(p.Interfaces, func(i Interface) bool { return i.DHCP }) {
		c.prog.DHCPClient = c.add(Rule{Kind: KindDHCPClient, Zone: -1, Name: "dhcp client", Verdict: Accept, Reason: ReasonDHCPClient})
	}
	c.prog.LinkLocal = c.add(Rule{Kind: KindLinkLocal, Zone: -1, Name: "link-local", Reason: ReasonLinkLocal})
	c.prog.LocalSource = c.add(Rule{Kind: KindLocalSource, Zone: -1, Name: "source is the box", Reason: ReasonLocalSource})
	for zi, z := range p.Zones {
		cz := &c.prog.Zones[zi]
		cz.Bogons, cz.ReversePath, cz.Sources = -1, -1, -1
		if z.Antispoof.Bogons {
			cz.Bogons = c.add(Rule{Kind: KindBogons, Zone: zi, Name: z.Name + " antispoof bogons", Reason: ReasonBogonSource, Pos: z.Antispoof.Pos}, z.Name)
		}
		if z.Antispoof.ReversePath != RPFOff {
			cz.ReversePath = c.add(Rule{Kind: KindReversePath, Zone: zi, Name: z.Name + " antispoof reverse-path " + z.Antispoof.ReversePath.String(),
				Reason: ReasonReversePath, Pos: z.Antispoof.Pos, ReversePath: z.Antispoof.ReversePath}, z.Name, z.Antispoof.ReversePath.String())
		}
		if len(z.Antispoof.Sources) > 0 {
			cz.Sources = c.add(Rule{Kind: KindSources, Zone: zi, Name: z.Name + " antispoof sources", Reason: ReasonSourceNotInZone,
				Pos: z.Antispoof.Pos, Sources: slices.Clone(z.Antispoof.Sources)}, z.Name, sortedKey(z.Antispoof.Sources))
		}
	}
	c.prog.TCPFlags = c.add(Rule{Kind: KindTCPFlags, Zone: -1, Name: "tcp flags", Reason: ReasonBadTCPFlags})
	c.prog.Invalid = c.add(Rule{Kind: KindInvalid, Zone: -1, Name: "conntrack invalid", Reason: ReasonInvalidState})
	c.prog.Established = c.add(Rule{Kind: KindEstablished, Zone: -1, Name: "conntrack established", Verdict: Accept, Reason: ReasonEstablished})
	c.prog.NewNotSYN = c.add(Rule{Kind: KindNewNotSYN, Zone: -1, Name: "tcp new not syn", Reason: ReasonNewNotSYN})
	for zi, z := range p.Zones {
		cz := &c.prog.Zones[zi]
		cz.SYNLimit, cz.ICMPLimit = -1, -1
		if r := z.Limits.SYN; r.N > 0 {
			cz.SYNLimit = c.add(Rule{Kind: KindSYNLimit, Zone: zi, Name: z.Name + " limit syn", Reason: ReasonOverLimit, Pos: z.Limits.Pos, Rate: r}, z.Name, r.String())
		}
		if r := z.Limits.ICMP; r.N > 0 {
			cz.ICMPLimit = c.add(Rule{Kind: KindICMPLimit, Zone: zi, Name: z.Name + " limit icmp", Reason: ReasonOverLimit, Pos: z.Limits.Pos, Rate: r}, z.Name, r.String())
		}
	}
	for i, pf := range p.PortForwards {
		zi := zoneIdx[pf.From]
		c.prog.PortForwardRules = append(c.prog.PortForwardRules, c.add(Rule{Kind: KindPortForward, Zone: zi, Name: "port-forward " + pf.Name,
			Verdict: Accept, Reason: ReasonPortForward, Pos: pf.Pos, PortForward: i, Ports: []PortRange{pf.Port}},
			pf.Name, pf.From, sortedKey([]PortRange{pf.Port}), pf.To.String()))
	}
	c.prog.ICMPLocal, c.prog.ICMPForward = -1, -1
	if p.ICMP.Essential {
		c.prog.ICMPLocal = c.add(Rule{Kind: KindICMPLocal, Zone: -1, Name: "icmp essential to box", Verdict: Accept, Reason: ReasonEssentialICMP, Pos: p.ICMP.Pos})
	}
	for zi, z := range p.Zones {
		cz := &c.prog.Zones[zi]
		for _, s := range z.Services {
			cz.Services = append(cz.Services, c.add(Rule{Kind: KindService, Zone: zi, Name: z.Name + " service " + s.Name,
				Verdict: Accept, Reason: ReasonService, Pos: s.Pos, Ports: slices.Clone(s.Ports)}, z.Name, s.Name, sortedKey(s.Ports)))
		}
		r := Rule{Kind: KindInbound, Zone: zi, Name: z.Name + " inbound deny", Reason: ReasonInboundDenied, Pos: z.Pos}
		if z.Inbound {
			r.Name, r.Verdict, r.Reason = z.Name+" inbound allow", Accept, ReasonInboundAllowed
		}
		cz.Inbound = c.add(r, z.Name, r.Verdict.String())
	}
	if p.ICMP.Essential {
		c.prog.ICMPForward = c.add(Rule{Kind: KindICMPForward, Zone: -1, Name: "icmp essential forwarded", Verdict: Accept, Reason: ReasonEssentialICMP, Pos: p.ICMP.Pos})
	}
	c.prog.NoRoute = c.add(Rule{Kind: KindNoRoute, Zone: -1, Name: "no route", Reason: ReasonNoRoute})
	c.prog.IntraZone = c.add(Rule{Kind: KindIntraZone, Zone: -1, Name: "intra-zone", Verdict: Accept, Reason: ReasonIntraZone})
	c.prog.ForwardDeny = c.add(Rule{Kind: KindForwardDeny, Zone: -1, Name: "forward deny", Reason: ReasonZonePairNotForwarded})
	for zi, z := range p.Zones {
		cz := &c.prog.Zones[zi]
		for _, a := range z.Egress.Allow {
			r := Rule{Kind: KindEgressAllow, Zone: zi, Name: z.Name + " egress " + a.Name,
				Verdict: Accept, Reason: ReasonEgressAllowed, Pos: a.Pos, Ports: slices.Clone(a.Ports), To: a.To[:len(a.To):len(a.To)]}
			cz.Egress = append(cz.Egress, c.addHashed(r, func(w io.Writer) {
				writeIntent(w, z.Name)
				writeIntent(w, a.Name)
				w.Write([]byte{0})
				writeDestinationsKey(w, a.To)
				writeIntent(w, sortedKey(a.Ports))
			}))
		}
		r := Rule{Kind: KindEgressDefault, Zone: zi, Name: z.Name + " egress default deny", Reason: ReasonEgressDefaultDeny, Pos: z.Egress.Pos}
		if z.Egress.DefaultAllow {
			r.Name, r.Verdict, r.Reason = z.Name+" egress default allow", Accept, ReasonEgressDefaultAllow
		}
		if r.Pos == (Pos{}) {
			r.Pos = z.Pos
		}
		cz.EgressDflt = c.add(r, z.Name, r.Verdict.String())
	}
	if c.err != nil {
		return nil, c.err
	}
	return c.prog, nil
}

type compiler struct {
	prog *Program
	ids  map[RuleID]string // ID -> rule name, to catch collisions
	err  error
}

// add appends r with an ID hashed from its kind and intent, and returns its
// index.
func (c *compiler) add(r Rule, intent ...string) int {
	return c.addHashed(r, func(w io.Writer) {
		for _, s := range intent {
			writeIntent(w, s)
		}
	})
}

// writeIntent writes one part of a rule's intent, after a zero byte.
func writeIntent(w io.Writer, s string) {
	w.Write([]byte{0})
	io.WriteString(w, s)
}

// addHashed is add with the intent written to the hash by intent.
func (c *compiler) addHashed(r Rule, intent func(w io.Writer)) int {
	h := sha256.New()
	h.Write([]byte(r.Kind.String()))
	intent(h)
	r.ID = RuleID("r" + hex.EncodeToString(h.Sum(nil))[:10])
	if other, dup := c.ids[r.ID]; dup && c.err == nil {
		c.err = fmt.Errorf("compile: rules %q and %q hash to the same ID %s; rename one", other, r.Name, r.ID)
	}
	c.ids[r.ID] = r.Name
	c.prog.Rules = append(c.prog.Rules, r)
	return len(c.prog.Rules) - 1
}

// sortedKey joins the items' texts in sorted order, so that an intent does
// not depend on the order its parts are written in.
func sortedKey[T fmt.Stringer](items []T) string {
	s := make([]string, len(items))
	for i, it := range items {
		s[i] = it.String()
	}
	slices.Sort(s)
	return strings.Join(s, ",")
}

// writeDestinationsKey writes what sortedKey would make of destinations,
// whose lists run to millions, without a string per destination or for
// the whole: the texts go into one buffer and are sorted by their first 16
// bytes as two integers, the rest compared only on a tie, which gives the
// order of the texts themselves (no text holds a zero byte); the joined
// key is written out in pieces.
func writeDestinationsKey(w io.Writer, ds []Destination) {
	type item struct {
		hi, lo   uint64
		off, end uint32
	}
	text := make([]byte, 0, 20*len(ds))
	items := make([]item, len(ds))
	for i, d := range ds {
		off := len(text)
		if d.Name != "" {
			text = append(text, d.Name...)
		} else {
			text = d.Prefix.AppendTo(text)
		}
		var head [16]byte
		copy(head[:], text[off:])
		items[i] = item{binary.BigEndian.Uint64(head[:8]), binary.BigEndian.Uint64(head[8:]), uint32(off), uint32(len(text))}
	}
	slices.SortFunc(items, func(a, b item) int {
		if a.hi != b.hi {
			return cmp.Compare(a.hi, b.hi)
		}
		if a.lo != b.lo {
			return cmp.Compare(a.lo, b.lo)
		}
		return bytes.Compare(text[a.off:a.end], text[b.off:b.end])
	})
	buf := make([]byte, 0, 64<<10)
	for i, it := range items {
		if len(buf) > cap(buf)-int(it.end-it.off)-1 {
			w.Write(buf)
			buf = buf[:0]
		}
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, text[it.off:it.end]...)
	}
	w.Write(buf)
}

// ProtoName is the name a policy gives IP protocol p (tcp, udp, icmp,
// icmpv6); false for a protocol without one.
func ProtoName(p uint8) (string, bool) {
	switch p {
	case ProtoTCP:
		return "tcp", true
	case ProtoUDP:
		return "udp", true
	case ProtoICMP:
		return "icmp", true
	case ProtoICMPv6:
		return "icmpv6", true
	}
	return "", false
}

// String writes the range the way a policy does: tcp/443, udp/1000-2000,
// icmp/8, tcp (every port) or any.
func (p PortRange) String() string {
	if p.Proto == 0 {
		return "any"
	}
	name, ok := ProtoName(p.Proto)
	if !ok {
		return fmt.Sprintf("proto-%d", p.Proto)
	}
	maxHi := uint16(65535)
	if p.Proto == ProtoICMP || p.Proto == ProtoICMPv6 {
		maxHi = 255
	}
	switch {
	case p.Lo == 0 && p.Hi == maxHi:
		return name
	case p.Lo == p.Hi:
		return fmt.Sprintf("%s/%d", name, p.Lo)
	}
	return fmt.Sprintf("%s/%d-%d", name, p.Lo, p.Hi)
}
