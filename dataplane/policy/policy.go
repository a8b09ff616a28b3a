package policy

import (
	"fmt"
	"net/netip"
	"time"
)

// Policy is a policy file as written: every value with the position it came
// from, before any rule is derived from it. The zero Policy is empty and
// invalid (it has no interfaces).
type Policy struct {
	File         string
	Hostname     string
	Interfaces   []Interface // in file order
	Zones        []Zone      // in file order
	Forward      []Forward
	PortForwards []PortForward
	Log          Log
	ICMP         ICMP
}

// Interface is one network port of the box.
type Interface struct {
	Name       string // the policy's name for it, used by packets and rules
	Pos        Pos
	Device     string // the kernel's name, e.g. eth0
	DevicePos  Pos
	Zone       string
	ZonePos    Pos
	DHCP       bool           // the IPv4 address comes from DHCP
	Addresses  []netip.Prefix // static addresses with their prefix length (host bits kept)
	AddressPos []Pos
	Gateways   []netip.Addr // next hops of static default routes, at most one per family
	GatewayPos []Pos
}

// Uplink reports whether the box's default route leaves through this
// interface: it uses DHCP or names a gateway.
func (i Interface) Uplink() bool { return i.DHCP || len(i.Gateways) > 0 }

// ReversePath is the reverse-path (uRPF) mode of a zone.
type ReversePath uint8

const (
	// RPFStrict accepts a source only if the route back to it leaves through the
	// interface the packet came in on (RFC 3704 strict mode). It is the default.
	RPFStrict ReversePath = iota
	// RPFLoose accepts a source if there is any route back to it.
	RPFLoose
	// RPFOff does no reverse-path check.
	RPFOff
)

var reversePathNames = [...]string{RPFStrict: "strict", RPFLoose: "loose", RPFOff: "off"}

func (r ReversePath) String() string {
	if int(r) < len(reversePathNames) {
		return reversePathNames[r]
	}
	return "invalid"
}

// Antispoof is what a zone checks about the source of every packet entering
// from it.
type Antispoof struct {
	Pos         Pos
	ReversePath ReversePath
	Bogons      bool           // drop special-purpose (RFC 6890) sources
	Sources     []netip.Prefix // when set, the only sources allowed (BCP 38)
	SourcesPos  []Pos
}

// Zone is a set of interfaces that share one policy.
type Zone struct {
	Name      string
	Pos       Pos
	Antispoof Antispoof
	Inbound   bool // traffic from this zone to the box beyond its services is allowed
	Services  []Service
	Egress    Egress
	Limits    Limits
}

// Limits cap the new connections and pings a zone may send, against
// floods. A zero Rate is no limit. What exceeds a limit is dropped; the
// evaluator, which sees one packet at a time, decides as if under it.
type Limits struct {
	Pos  Pos
	SYN  Rate // new TCP connections (SYN), to the box and through it
	ICMP Rate // ICMP and ICMPv6 echo requests, per address family
}

// Service is something on the box a zone may reach.
type Service struct {
	Name  string
	Pos   Pos
	Ports []PortRange
}

// Egress is what a zone may send out of itself through the box.
type Egress struct {
	Pos          Pos
	DefaultAllow bool
	Allow        []AllowEntry
}

// AllowEntry is one named entry of an egress allowlist. An entry without
// destinations matches any destination; one without ports matches any
// protocol and port.
type AllowEntry struct {
	Name  string
	Pos   Pos
	To    []Destination
	Ports []PortRange
}

// Destination is one "to" item of an allowlist entry: a prefix, or a DNS name
// ("example.com", or "*.example.com" for every name below it).
type Destination struct {
	Prefix netip.Prefix
	Name   string
	Pos    Pos
}

// PortRange is a protocol with an inclusive range of ports. For ICMP and ICMPv6
// the range is of message types. Proto 0 means any protocol, and then the range
// is unused.
type PortRange struct {
	Proto  uint8
	Lo, Hi uint16
	Pos    Pos
}

// Forward allows traffic from one zone to others, through the box.
type Forward struct {
	From    string
	FromPos Pos
	To      []string
	ToPos   []Pos
	Pos     Pos
}

// PortForward sends connections to a port of the box, arriving from a zone, on
// to an inside host (destination NAT).
type PortForward struct {
	Name    string
	Pos     Pos
	From    string
	FromPos Pos
	Port    PortRange      // protocol and the box's port(s)
	To      netip.AddrPort // inside host; port 0 keeps the original port
}

// Log says how drops are logged.
type Log struct {
	Drops bool
	Rate  Rate
}

// Rate is a number of events per interval.
type Rate struct {
	N   uint32
	Per time.Duration
}

// String writes the rate the way a policy does: 10/second.
func (r Rate) String() string {
	unit := map[time.Duration]string{time.Second: "second", time.Minute: "minute", time.Hour: "hour"}[r.Per]
	return fmt.Sprintf("%d/%s", r.N, unit)
}

// ICMP says whether the ICMP and ICMPv6 messages a network needs to work are
// allowed (RFC 4890, RFC 1122). It is allowed unless the policy says otherwise.
type ICMP struct {
	Pos       Pos
	Essential bool
}

// Protocol numbers sluice names.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)
