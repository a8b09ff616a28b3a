package policy

import (
	"net/netip"
)

// Verdict is what happens to a packet.
type Verdict uint8

const (
	// Drop discards the packet silently.
	Drop Verdict = iota
	// Accept lets the packet through (to the box, or forwarded).
	Accept
)

func (v Verdict) String() string {
	if v == Accept {
		return "accept"
	}
	return "drop"
}

// Kind is what a rule is for. Kinds are listed in evaluation order.
type Kind uint8

const (
	KindDHCPClient    Kind = iota // accept DHCP replies to the box on interfaces that use DHCP
	KindLinkLocal                 // drop link-local or unspecified sources not for the box, and such destinations
	KindLocalSource               // drop a packet from outside claiming the box's address
	KindBogons                    // zone: drop special-purpose sources
	KindReversePath               // zone: drop sources failing the reverse-path check
	KindSources                   // zone: drop sources outside the zone's prefixes
	KindTCPFlags                  // drop impossible TCP flag combinations
	KindInvalid                   // drop packets conntrack calls invalid
	KindEstablished               // accept established and related packets
	KindNewNotSYN                 // drop a new TCP flow that does not start with SYN
	KindSYNLimit                  // zone: drop new TCP connections over the zone's rate
	KindICMPLimit                 // zone: drop echo requests over the zone's rate
	KindPortForward               // accept (and DNAT) a port forward
	KindICMPLocal                 // accept essential ICMP and ICMPv6 to the box
	KindService                   // zone: accept a service on the box
	KindInbound                   // zone: what else may reach the box
	KindICMPForward               // accept essential ICMP errors being forwarded
	KindNoRoute                   // drop a destination with no route
	KindIntraZone                 // accept traffic between interfaces of one zone
	KindForwardDeny               // drop traffic between zones no forward rule allows
	KindEgressAllow               // zone: accept an egress allowlist entry
	KindEgressDefault             // zone: the egress default
	numKinds
)

var kindNames = [numKinds]string{
	KindLocalSource:   "local-source",
	KindDHCPClient:    "dhcp-client",
	KindBogons:        "bogons",
	KindReversePath:   "reverse-path",
	KindSources:       "sources",
	KindTCPFlags:      "tcp-flags",
	KindInvalid:       "ct-invalid",
	KindEstablished:   "ct-established",
	KindNewNotSYN:     "tcp-new-not-syn",
	KindSYNLimit:      "syn-limit",
	KindICMPLimit:     "icmp-limit",
	KindPortForward:   "port-forward",
	KindICMPLocal:     "icmp-local",
	KindService:       "service",
	KindInbound:       "inbound",
	KindLinkLocal:     "link-local",
	KindICMPForward:   "icmp-forward",
	KindNoRoute:       "no-route",
	KindIntraZone:     "intra-zone",
	KindForwardDeny:   "forward-deny",
	KindEgressAllow:   "egress-allow",
	KindEgressDefault: "egress-default",
}

func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "invalid"
}

// Reason is the constant explanation of a decision.
type Reason uint8

const (
	ReasonBogonSource Reason = iota
	ReasonReversePath
	ReasonSourceNotInZone
	ReasonBadTCPFlags
	ReasonInvalidState
	ReasonEstablished
	ReasonNewNotSYN
	ReasonPortForward
	ReasonEssentialICMP
	ReasonService
	ReasonInboundAllowed
	ReasonInboundDenied
	ReasonLinkLocal
	ReasonNoRoute
	ReasonIntraZone
	ReasonZonePairNotForwarded
	ReasonEgressAllowed
	ReasonEgressDefaultAllow
	ReasonEgressDefaultDeny
	ReasonUnknownInterface
	ReasonSameInterface
	ReasonLocalSource
	ReasonDHCPClient
	ReasonOverLimit
	numReasons
)

var reasonText = [numReasons]string{
	ReasonBogonSource:          "source is a special-purpose (bogon) address",
	ReasonReversePath:          "source failed the reverse-path check",
	ReasonSourceNotInZone:      "source is outside the zone's prefixes",
	ReasonBadTCPFlags:          "impossible TCP flag combination",
	ReasonInvalidState:         "conntrack state is invalid",
	ReasonEstablished:          "part of an established or related flow",
	ReasonNewNotSYN:            "new TCP flow does not start with SYN",
	ReasonPortForward:          "port forward to an inside host",
	ReasonEssentialICMP:        "essential ICMP (RFC 4890)",
	ReasonService:              "service on the box allowed from the zone",
	ReasonInboundAllowed:       "zone may reach the box",
	ReasonInboundDenied:        "zone may not reach the box",
	ReasonLinkLocal:            "a link-local or unspecified address never leaves its link",
	ReasonNoRoute:              "no route to the destination",
	ReasonIntraZone:            "between interfaces of the same zone",
	ReasonZonePairNotForwarded: "no forward rule between these zones",
	ReasonEgressAllowed:        "egress allowlist entry",
	ReasonEgressDefaultAllow:   "zone's egress default is allow",
	ReasonEgressDefaultDeny:    "zone's egress default is deny",
	ReasonUnknownInterface:     "packet arrived on an interface the policy does not name",
	ReasonSameInterface:        "would leave by the interface it came in on",
	ReasonLocalSource:          "source is one of the box's own addresses",
	ReasonDHCPClient:           "DHCP reply to the box's DHCP client",
	ReasonOverLimit:            "over the zone's rate limit",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonText[r]
	}
	return "invalid"
}

// RuleID names a rule by a hash of its intent: kind, zone, name and what it
// matches. Editing one rule changes its own ID and no other.
type RuleID string

// Rule is one decision the policy can make. The fields after Pos say what it
// matches, for the compilers that turn the Program into a dataplane.
type Rule struct {
	ID      RuleID
	Kind    Kind
	Name    string // human name, such as "iot egress vendor-cloud"
	Zone    int    // index into Program.Zones, or -1 for a rule of the whole box
	Verdict Verdict
	Reason  Reason
	Pos     Pos // where in the policy the rule comes from; zero for built-in rules

	Ports       []PortRange    // KindService, KindEgressAllow (empty: any)
	To          []Destination  // KindEgressAllow (empty: any); shared with the Policy, which nothing changes after Compile
	Sources     []netip.Prefix // KindSources
	ReversePath ReversePath    // KindReversePath
	Rate        Rate           // KindSYNLimit, KindICMPLimit
	PortForward int            // KindPortForward: index into Program.PortForwards
}

// Program is a compiled policy: the interfaces and zones with their rules, in
// the order the evaluator and the dataplane apply them. It is read-only after
// Compile and safe to share.
//
// Evaluation order for a packet arriving on an interface of zone Z:
//
//  0. DHCP replies (UDP 67 to 68) to the box on an interface that uses DHCP
//     are accepted: the server may have a private address, and before the
//     lease there is no route back to it;
//  1. for every packet: a link-local or unspecified source (they never
//     leave the link) dropped unless the packet is for the box, and otherwise
//     exempt from the rest of this step; a source that is the box's own
//     address dropped; Z's bogon, reverse-path and source checks;
//  2. impossible TCP flags dropped;
//  3. conntrack: invalid dropped, established and related accepted, a new TCP
//     flow that does not start with SYN dropped; Z's SYN and echo request
//     rate limits (which the evaluator, seeing one packet, never exceeds);
//  4. port forwards from Z, to one of the box's own addresses;
//  5. to the box (its addresses, subnet broadcasts, multicast and IPv6
//     link-local destinations): essential ICMP, Z's services, then Z's inbound setting;
//  6. forwarded: link-local destinations dropped, essential ICMP errors accepted, no route
//     dropped, out the interface it came in on dropped, same zone accepted, zone pairs without a forward rule dropped,
//     then Z's egress allowlist in order, then Z's egress default.
type Program struct {
	File         string
	Hostname     string
	Interfaces   []CompiledInterface
	Zones        []CompiledZone
	PortForwards []PortForward
	Rules        []Rule
	Log          Log
	ICMP         ICMP

	// Rules of the whole box, as indexes into Rules; -1 where the policy turns
	// one off.
	LocalSource                               int
	TCPFlags, Invalid, Established, NewNotSYN int
	ICMPLocal, DHCPClient                     int
	LinkLocal, ICMPForward                    int
	NoRoute, IntraZone, ForwardDeny           int
	PortForwardRules                          []int // one per PortForwards entry
}

// CompiledInterface is an interface with its zone resolved.
type CompiledInterface struct {
	Name      string
	Device    string
	Zone      int
	DHCP      bool
	Addresses []netip.Prefix
	Gateways  []netip.Addr // at most one per family
}

// Uplink reports whether the default route leaves through this interface.
func (i CompiledInterface) Uplink() bool { return i.DHCP || len(i.Gateways) > 0 }

// CompiledZone is a zone with its rules, as indexes into Program.Rules; -1
// where the zone has no such rule.
type CompiledZone struct {
	Name        string
	Interfaces  []int
	ForwardTo   []bool // indexed by zone: a forward rule allows Z -> that zone
	Bogons      int
	ReversePath int
	Sources     int
	Services    []int
	Inbound     int
	Egress      []int // allowlist entries in order
	EgressDflt  int
	SYNLimit    int // rule of the zone's SYN rate limit, or -1
	ICMPLimit   int // rule of the zone's echo request rate limit, or -1
}

// Interface returns the index of the interface the policy calls name.
func (p *Program) Interface(name string) (int, bool) {
	for i, ifc := range p.Interfaces {
		if ifc.Name == name {
			return i, true
		}
	}
	return -1, false
}

// Rule returns the rule with the given ID.
func (p *Program) Rule(id RuleID) (Rule, bool) {
	for _, r := range p.Rules {
		if r.ID == id {
			return r, true
		}
	}
	return Rule{}, false
}
