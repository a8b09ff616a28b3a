package policy

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
)

// Parse decodes and validates a policy. file names the source in diagnostics.
// It returns every problem found; the policy is usable only when the
// diagnostics hold no error (Diagnostics.Err is nil). No input makes it panic.
func Parse(file string, src []byte) (*Policy, Diagnostics) {
	d := &decoder{file: file}
	src = bytes.TrimPrefix(src, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark, as some editors write
	p := &Policy{File: file, Hostname: "sluice", Log: Log{Rate: Rate{N: 10, Per: time.Second}}, ICMP: ICMP{Essential: true}}
	if root := d.parseYAML(src); root != nil {
		if d.policy(root, p) {
			validate(d, p)
		}
	}
	sortDiagnostics(d.diags)
	return p, d.diags
}

var topKeys = []string{"hostname", "interfaces", "zones", "forward", "port_forwards", "log", "icmp"}

// policy decodes the top level; it returns false when the file is not a
// mapping at all, and there is nothing for validate to look at.
func (d *decoder) policy(root ast.Node, p *Policy) bool {
	if _, ok := mappingValues(root); !ok {
		d.errorf(posOf(root), "start with keys such as hostname:, interfaces: and zones:", "a policy must be a mapping, not %s", describe(root))
		return false
	}
	var sawZones bool
	for _, f := range d.mapping(root, "the policy", topKeys) {
		switch f.key {
		case "hostname":
			if s, pos, ok := d.scalar(f.val, f.keyPos, "hostname"); ok {
				if !validHostname(s) {
					d.errorf(pos, "use letters, digits and hyphens, at most 63 per label, such as edge or edge.example", "hostname %q is not a valid host name", s)
				} else {
					p.Hostname = s
				}
			}
		case "interfaces":
			for _, e := range d.entries(f.val, "interfaces") {
				p.Interfaces = append(p.Interfaces, d.iface(e))
			}
		case "zones":
			sawZones = true
			for _, e := range d.entries(f.val, "zones") {
				p.Zones = append(p.Zones, d.zone(e))
			}
		case "forward":
			for _, item := range d.list(f.val, "forward") {
				p.Forward = append(p.Forward, d.forward(item))
			}
		case "port_forwards":
			for _, item := range d.list(f.val, "port_forwards") {
				p.PortForwards = append(p.PortForwards, d.portForward(item))
			}
		case "log":
			d.log(f, &p.Log)
		case "icmp":
			p.ICMP.Pos = f.keyPos
			for _, g := range d.mapping(f.val, "icmp", []string{"essential"}) {
				if s, ok := d.choice(g, "icmp essential", "allow", "deny"); ok {
					p.ICMP.Essential = s == "allow"
				}
			}
		}
	}
	if !sawZones {
		d.errorf(Pos{Line: 1, Col: 1}, "add zones: with one entry per zone the interfaces name", "the policy has no zones")
	}
	return true
}

func (d *decoder) iface(e field) Interface {
	ifc := Interface{Name: e.key, Pos: e.keyPos}
	if !validName(e.key) {
		d.errorf(e.keyPos, nameFix, "interface name %q is not valid", e.key)
	}
	what := fmt.Sprintf("interface %s", e.key)
	var sawDevice, sawZone, sawAddresses bool
	for _, f := range d.mapping(e.val, what, []string{"device", "zone", "addresses", "gateway"}) {
		switch f.key {
		case "device":
			sawDevice = true
			if s, pos, ok := d.scalar(f.val, f.keyPos, what+" device"); ok {
				if !validDevice(s) {
					d.errorf(pos, "a kernel interface name has 1 to 15 characters, no spaces, slashes or colons", "device %q is not a valid kernel interface name", s)
				}
				ifc.Device, ifc.DevicePos = s, pos
			}
		case "zone":
			sawZone = true
			if s, pos, ok := d.scalar(f.val, f.keyPos, what+" zone"); ok {
				ifc.Zone, ifc.ZonePos = s, pos
			}
		case "addresses":
			sawAddresses = true // an empty list is a deliberate choice
			for _, item := range d.list(f.val, what+" addresses") {
				s, pos, ok := d.scalar(item, f.keyPos, what+" address")
				if !ok {
					continue
				}
				if s == "dhcp" {
					if ifc.DHCP {
						d.errorf(pos, "list dhcp once", "dhcp is listed twice")
					}
					ifc.DHCP = true
					continue
				}
				if pfx, ok := d.ifaceAddress(s, pos); ok {
					ifc.Addresses = append(ifc.Addresses, pfx)
					ifc.AddressPos = append(ifc.AddressPos, pos)
				}
			}
		case "gateway":
			for _, item := range d.list(f.val, what+" gateway") {
				s, pos, ok := d.scalar(item, f.keyPos, what+" gateway")
				if !ok || d.mapped(s, pos) {
					continue
				}
				a, err := netip.ParseAddr(s)
				switch {
				case err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
					d.errorf(pos, "write the next hop's address, such as 198.51.100.1 or fe80::1", "gateway %q is not a usable next-hop address", s)
				case slices.ContainsFunc(ifc.Gateways, func(g netip.Addr) bool { return g.Is4() == a.Is4() }):
					d.errorf(pos, "give at most one IPv4 and one IPv6 gateway", "interface %s has a second %s gateway", e.key, family(a))
				default:
					ifc.Gateways = append(ifc.Gateways, a)
					ifc.GatewayPos = append(ifc.GatewayPos, pos)
				}
			}
		}
	}
	if !sawDevice && !isNull(e.val) {
		d.errorf(e.keyPos, "add device: with the kernel's name for the port, e.g. device: eth0", "interface %s has no device", e.key)
	} else if isNull(e.val) {
		d.errorf(e.keyPos, "add device:, zone: and addresses:", "interface %s is empty", e.key)
	}
	if !sawZone && !isNull(e.val) {
		d.errorf(e.keyPos, "add zone: naming the zone it belongs to", "interface %s has no zone", e.key)
	}
	if !sawAddresses && !isNull(e.val) && !hasKey(e.val, "addresses") {
		d.warnf(e.keyPos, "add addresses: (static ones, or dhcp)", "interface %s has no addresses", e.key)
	}
	return ifc
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// ifaceAddress parses an interface address with its prefix length and
// refuses what no interface can hold.
func (d *decoder) ifaceAddress(s string, pos Pos) (netip.Prefix, bool) {
	if d.mapped(s, pos) {
		return netip.Prefix{}, false
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		if a, aerr := netip.ParseAddr(s); aerr == nil {
			d.errorf(pos, fmt.Sprintf("add the prefix length, e.g. %s/%d", a, map[bool]int{true: 24, false: 64}[a.Is4()]), "address %q has no prefix length", s)
		} else {
			d.errorf(pos, "write an address with its prefix length, such as 192.168.1.1/24 or fd00::1/64, or dhcp", "%q is not an interface address", s)
		}
		return netip.Prefix{}, false
	}
	a := pfx.Addr()
	switch {
	case a.Zone() != "":
		d.errorf(pos, "remove the %"+a.Zone(), "address %q carries a zone", s)
	case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.IPv4Unspecified() || a.Is4() && a.As4()[0] == 0:
		d.errorf(pos, "use a unicast address, such as 192.168.1.1/24", "address %q cannot be an interface address", s)
	case pfx.Bits() == 0:
		d.errorf(pos, "give the prefix length of the attached network, such as /24", "address %q has a /0 prefix", s)
	case a.Is4() && pfx.Bits() < 31 && a == pfx.Masked().Addr():
		d.errorf(pos, fmt.Sprintf("use a host address in the prefix, such as %s/%d", a.Next(), pfx.Bits()), "address %s is the network address of its prefix", pfx)
	case a.Is4() && pfx.Bits() < 31 && a == lastAddr(pfx.Masked()):
		d.errorf(pos, fmt.Sprintf("use a host address in the prefix, such as %s/%d", a.Prev(), pfx.Bits()), "address %s is the broadcast address of its prefix", pfx)
	default:
		return pfx, true
	}
	return netip.Prefix{}, false
}

var zoneKeys = []string{"antispoof", "inbound", "services", "egress", "limits"}

func (d *decoder) zone(e field) Zone {
	z := Zone{Name: e.key, Pos: e.keyPos}
	if !validName(e.key) {
		d.errorf(e.keyPos, nameFix, "zone name %q is not valid", e.key)
	}
	what := "zone " + e.key
	for _, f := range d.mapping(e.val, what, zoneKeys) {
		switch f.key {
		case "antispoof":
			d.antispoof(f, what, &z.Antispoof)
		case "inbound":
			if s, ok := d.choice(f, what+" inbound", "allow", "deny"); ok {
				z.Inbound = s == "allow"
			}
		case "services":
			for _, item := range d.list(f.val, what+" services") {
				if svc, ok := d.service(item, what); ok {
					z.Services = append(z.Services, svc)
				}
			}
		case "egress":
			d.egress(f, what, &z.Egress)
		case "limits":
			z.Limits.Pos = f.keyPos
			for _, g := range d.mapping(f.val, what+" limits", []string{"syn", "icmp"}) {
				if r, ok := d.rate(g, what+" limits "+g.key); ok {
					if g.key == "syn" {
						z.Limits.SYN = r
					} else {
						z.Limits.ICMP = r
					}
				}
			}
		}
	}
	if z.Egress.Pos == (Pos{}) {
		z.Egress.DefaultAllow = true // no egress section: the forward rules alone decide
	}
	return z
}

func (d *decoder) antispoof(f field, what string, a *Antispoof) {
	a.Pos = f.keyPos
	for _, g := range d.mapping(f.val, what+" antispoof", []string{"reverse_path", "bogons", "sources"}) {
		switch g.key {
		case "reverse_path":
			if s, ok := d.choice(g, "reverse_path", "strict", "loose", "off"); ok {
				a.ReversePath = map[string]ReversePath{"strict": RPFStrict, "loose": RPFLoose, "off": RPFOff}[s]
			}
		case "bogons":
			if s, ok := d.choice(g, "bogons", "drop", "allow"); ok {
				a.Bogons = s == "drop"
			}
		case "sources":
			for _, item := range d.nonEmptyList(g, what+" antispoof sources", "list the allowed source prefixes, or remove sources: to allow any") {
				s, pos, ok := d.scalar(item, g.keyPos, "source prefix")
				if !ok {
					continue
				}
				if pfx, ok := d.prefix(s, pos); ok {
					a.Sources = append(a.Sources, pfx)
					a.SourcesPos = append(a.SourcesPos, pos)
				}
			}
		}
	}
}

// prefix parses a CIDR or a single address (a host prefix). A prefix with
// host bits set is an error: it usually means a typo in the length.
func (d *decoder) prefix(s string, pos Pos) (netip.Prefix, bool) {
	if d.mapped(s, pos) {
		return netip.Prefix{}, false
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		d.errorf(pos, "write a CIDR such as 192.0.2.0/24 or 2001:db8::/32", "%q is not a valid CIDR prefix", s)
		return netip.Prefix{}, false
	}
	if pfx.Addr().Zone() != "" {
		d.errorf(pos, "remove the zone", "prefix %q carries a zone", s)
		return netip.Prefix{}, false
	}
	if m := pfx.Masked(); m != pfx {
		d.errorf(pos, fmt.Sprintf("write %s, or fix the length", m), "prefix %q has host bits set", s)
		return netip.Prefix{}, false
	}
	return pfx, true
}

// mapped reports, as an error, an IPv4-mapped IPv6 address (::ffff:a.b.c.d):
// it would never match, since IPv4 packets carry IPv4 addresses.
func (d *decoder) mapped(s string, pos Pos) bool {
	addr, _, _ := strings.Cut(strings.TrimPrefix(s, "["), "/")
	addr, _, _ = strings.Cut(addr, "]")
	if a, err := netip.ParseAddr(addr); err == nil && a.Is4In6() {
		d.errorf(pos, "write the IPv4 address as "+a.Unmap().String(), "%q is an IPv4-mapped IPv6 address", s)
		return true
	}
	return false
}

// wellKnownServices are the services a zone may name without spelling out
// their ports.
var wellKnownServices = map[string][]PortRange{
	"ssh":     {{Proto: ProtoTCP, Lo: 22, Hi: 22}},
	"dns":     {{Proto: ProtoUDP, Lo: 53, Hi: 53}, {Proto: ProtoTCP, Lo: 53, Hi: 53}},
	"dhcp":    {{Proto: ProtoUDP, Lo: 67, Hi: 67}, {Proto: ProtoUDP, Lo: 547, Hi: 547}},
	"ntp":     {{Proto: ProtoUDP, Lo: 123, Hi: 123}},
	"http":    {{Proto: ProtoTCP, Lo: 80, Hi: 80}},
	"https":   {{Proto: ProtoTCP, Lo: 443, Hi: 443}},
	"metrics": {{Proto: ProtoTCP, Lo: 9100, Hi: 9100}},
	"ping":    {{Proto: ProtoICMP, Lo: 8, Hi: 8}, {Proto: ProtoICMPv6, Lo: 128, Hi: 128}},
}

func serviceNames() string {
	return "ssh, dns, dhcp, ntp, http, https, metrics, ping"
}

func (d *decoder) service(item ast.Node, what string) (Service, bool) {
	if s, ok := scalarText(item); ok {
		pos := posOf(item)
		if ports, ok := wellKnownServices[s]; ok {
			return Service{Name: s, Pos: pos, Ports: withPos(ports, pos)}, true
		}
		if strings.Contains(s, "/") {
			pr, ok := d.portRange(s, pos)
			return Service{Name: s, Pos: pos, Ports: []PortRange{pr}}, ok
		}
		fix := "name a known service (" + serviceNames() + "), write proto/port such as tcp/8443, or {name: x, ports: [tcp/8443]}"
		d.errorf(pos, fix, "unknown service %q in %s", s, what)
		return Service{}, false
	}
	svc := Service{Pos: posOf(item)}
	sawPorts := false
	for _, f := range d.mapping(item, what+" service", []string{"name", "ports"}) {
		switch f.key {
		case "name":
			if s, pos, ok := d.scalar(f.val, f.keyPos, "service name"); ok {
				if !validName(s) {
					d.errorf(pos, nameFix, "service name %q is not valid", s)
				}
				svc.Name = s
			}
		case "ports":
			sawPorts = true
			svc.Ports = d.ports(f, "service ports")
		}
	}
	if svc.Name == "" {
		d.errorf(svc.Pos, "add name:", "a service in %s has no name", what)
		return svc, false
	}
	if !sawPorts {
		d.errorf(svc.Pos, "add ports:, such as [tcp/8443]", "service %s has no ports", svc.Name)
		return svc, false
	}
	if len(svc.Ports) == 0 {
		return svc, false // its ports were reported as they failed
	}
	return svc, true
}

func withPos(ports []PortRange, pos Pos) []PortRange {
	out := make([]PortRange, len(ports))
	for i, p := range ports {
		p.Pos = pos
		out[i] = p
	}
	return out
}

func (d *decoder) ports(f field, what string) []PortRange {
	var out []PortRange
	for _, item := range d.nonEmptyList(f, what, "list protocols and ports, such as [tcp/443], or remove ports: to match any") {
		s, pos, ok := d.scalar(item, f.keyPos, what)
		if !ok {
			continue
		}
		if pr, ok := d.portRange(s, pos); ok {
			out = append(out, pr)
		}
	}
	return out
}

var protoNames = map[string]uint8{"tcp": ProtoTCP, "udp": ProtoUDP, "icmp": ProtoICMP, "icmpv6": ProtoICMPv6, "any": 0}

var icmpTypeNames = map[uint8]map[string]uint16{
	ProtoICMP:   {"echo-reply": 0, "destination-unreachable": 3, "echo-request": 8, "time-exceeded": 11, "parameter-problem": 12},
	ProtoICMPv6: {"destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3, "parameter-problem": 4, "echo-request": 128, "echo-reply": 129},
}

const portFix = "write proto/port or proto/low-high with ports 1-65535, such as tcp/443, udp/1000-2000, tcp, icmp/echo-request or any"

// portRange parses tcp/443, udp/1000-2000, tcp (every port), icmp,
// icmp/echo-request, icmpv6/128 or any.
func (d *decoder) portRange(s string, pos Pos) (PortRange, bool) {
	protoS, rest, hasPorts := strings.Cut(strings.ToLower(s), "/")
	proto, ok := protoNames[protoS]
	if !ok {
		d.errorf(pos, portFix, "unknown protocol %q in %q", protoS, s)
		return PortRange{}, false
	}
	pr := PortRange{Proto: proto, Pos: pos}
	isICMP := proto == ProtoICMP || proto == ProtoICMPv6
	switch {
	case proto == 0 && hasPorts:
		d.errorf(pos, "write any alone, or name a protocol such as tcp/443", "%q gives ports without a protocol", s)
		return pr, false
	case !hasPorts:
		if isICMP {
			pr.Lo, pr.Hi = 0, 255
		} else {
			pr.Lo, pr.Hi = 0, 65535
		}
		return pr, true
	case isICMP:
		if t, ok := icmpTypeNames[proto][rest]; ok {
			pr.Lo, pr.Hi = t, t
			return pr, true
		}
		n, err := strconv.ParseUint(rest, 10, 8)
		if err != nil {
			d.errorf(pos, "write an ICMP type 0-255 or a name such as echo-request", "%q is not a valid ICMP type", s)
			return pr, false
		}
		pr.Lo, pr.Hi = uint16(n), uint16(n)
		return pr, true
	}
	loS, hiS, isRange := strings.Cut(rest, "-")
	lo, ok1 := parsePort(loS)
	hi := lo
	ok2 := true
	if isRange {
		hi, ok2 = parsePort(hiS)
	}
	if !ok1 || !ok2 {
		d.errorf(pos, portFix, "port %q is out of range or not a number", s)
		return pr, false
	}
	if lo > hi {
		d.errorf(pos, fmt.Sprintf("write %s/%d-%d", protoS, hi, lo), "port range %q runs backwards", s)
		return pr, false
	}
	pr.Lo, pr.Hi = lo, hi
	return pr, true
}

func parsePort(s string) (uint16, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

func (d *decoder) egress(f field, what string, e *Egress) {
	e.Pos = f.keyPos
	sawDefault := false
	for _, g := range d.mapping(f.val, what+" egress", []string{"default", "allow"}) {
		switch g.key {
		case "default":
			if s, ok := d.choice(g, "egress default", "allow", "deny"); ok {
				sawDefault = true
				e.DefaultAllow = s == "allow"
			}
		case "allow":
			for _, item := range d.list(g.val, what+" egress allow") {
				e.Allow = append(e.Allow, d.allowEntry(item, what))
			}
		}
	}
	if !sawDefault {
		// An allowlist means everything else is denied; an egress section
		// without one allows.
		e.DefaultAllow = len(e.Allow) == 0
	}
}

func (d *decoder) allowEntry(item ast.Node, what string) AllowEntry {
	a := AllowEntry{Pos: posOf(item)}
	for _, f := range d.mapping(item, what+" egress allow entry", []string{"name", "to", "ports"}) {
		switch f.key {
		case "name":
			if s, pos, ok := d.scalar(f.val, f.keyPos, "allow entry name"); ok {
				if !validName(s) {
					d.errorf(pos, nameFix, "allow entry name %q is not valid", s)
				}
				a.Name = s
			}
		case "to":
			list := d.nonEmptyList(f, "allow entry to", "list destinations, or remove to: to match any destination")
			a.To = make([]Destination, 0, len(list))
			for _, t := range list {
				s, pos, ok := d.scalar(t, f.keyPos, "destination")
				if !ok {
					continue
				}
				if dst, ok := d.destination(s, pos); ok {
					a.To = append(a.To, dst)
				}
			}
		case "ports":
			a.Ports = d.ports(f, "allow entry ports")
		}
	}
	if a.Name == "" {
		d.errorf(a.Pos, "add name: so that logs and counters can say which entry matched", "an egress allow entry in %s has no name", what)
	}
	return a
}

// destination parses a CIDR, an address, or a DNS name (with an optional
// leading "*." wildcard).
func (d *decoder) destination(s string, pos Pos) (Destination, bool) {
	if looksLikeAddress(s) {
		pfx, ok := d.prefix(s, pos)
		return Destination{Prefix: pfx, Pos: pos}, ok
	}
	name := strings.TrimSuffix(strings.ToLower(s), ".")
	if !validDNSName(name) {
		d.errorf(pos, "write a CIDR, an address, a DNS name such as api.example.com, or a wildcard such as *.example.com", "%q is not a valid destination", s)
		return Destination{}, false
	}
	return Destination{Name: name, Pos: pos}, true
}

func looksLikeAddress(s string) bool {
	if strings.ContainsAny(s, ":/") {
		return true
	}
	for _, r := range s {
		if (r < '0' || r > '9') && r != '.' {
			return false
		}
	}
	return true
}

func (d *decoder) forward(item ast.Node) Forward {
	fw := Forward{Pos: posOf(item)}
	for _, f := range d.mapping(item, "a forward rule", []string{"from", "to"}) {
		switch f.key {
		case "from":
			if s, pos, ok := d.scalar(f.val, f.keyPos, "forward from"); ok {
				fw.From, fw.FromPos = s, pos
			}
		case "to":
			for _, t := range d.list(f.val, "forward to") {
				if s, pos, ok := d.scalar(t, f.keyPos, "forward to"); ok {
					fw.To = append(fw.To, s)
					fw.ToPos = append(fw.ToPos, pos)
				}
			}
		}
	}
	if fw.From == "" {
		d.errorf(fw.Pos, "add from: with a zone name", "a forward rule has no from")
	}
	if len(fw.To) == 0 {
		d.errorf(fw.Pos, "add to: with one zone or a list of zones", "a forward rule has no to")
	}
	return fw
}

func (d *decoder) portForward(item ast.Node) PortForward {
	pf := PortForward{Pos: posOf(item)}
	var sawPort, sawTo bool
	for _, f := range d.mapping(item, "a port forward", []string{"name", "from", "port", "to"}) {
		switch f.key {
		case "name":
			if s, pos, ok := d.scalar(f.val, f.keyPos, "port forward name"); ok {
				if !validName(s) {
					d.errorf(pos, nameFix, "port forward name %q is not valid", s)
				}
				pf.Name = s
			}
		case "from":
			if s, pos, ok := d.scalar(f.val, f.keyPos, "port forward from"); ok {
				pf.From, pf.FromPos = s, pos
			}
		case "port":
			if s, pos, ok := d.scalar(f.val, f.keyPos, "port forward port"); ok {
				sawPort = true
				if pr, ok := d.portRange(s, pos); ok {
					if pr.Proto != ProtoTCP && pr.Proto != ProtoUDP || !strings.Contains(s, "/") {
						d.errorf(pos, "write tcp/PORT or udp/PORT, such as tcp/8080", "port forward port %q needs tcp or udp and a port", s)
					} else {
						pf.Port = pr
					}
				}
			}
		case "to":
			if s, pos, ok := d.scalar(f.val, f.keyPos, "port forward to"); ok {
				sawTo = true
				if d.mapped(s, pos) {
					continue
				}
				if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
					pf.To = ap
				} else if a, err := netip.ParseAddr(s); err == nil {
					pf.To = netip.AddrPortFrom(a, 0)
				} else {
					d.errorf(pos, "write the inside host as ADDR:PORT or [IPv6]:PORT, such as 192.168.1.10:80, or ADDR alone to keep the port", "port forward target %q is not valid", s)
				}
				if pf.To.Addr().Zone() != "" {
					d.errorf(pos, "remove the zone", "port forward target %q carries a zone", s)
				}
			}
		}
	}
	if pf.Name == "" {
		d.errorf(pf.Pos, "add name:", "a port forward has no name")
	}
	if pf.From == "" {
		d.errorf(pf.Pos, "add from: with the zone connections arrive from, such as wan", "port forward %s has no from", pf.Name)
	}
	if !sawPort {
		d.errorf(pf.Pos, "add port:, such as tcp/8080", "port forward %s has no port", pf.Name)
	}
	if !sawTo {
		d.errorf(pf.Pos, "add to:, such as 192.168.1.10:80", "port forward %s has no to", pf.Name)
	}
	if pf.Port.Lo != pf.Port.Hi && pf.To.Port() != 0 {
		d.errorf(pf.Pos, "forward a single port to ADDR:PORT, or a range to ADDR alone", "port forward %s maps a port range onto one port", pf.Name)
	}
	return pf
}

func (d *decoder) log(f field, l *Log) {
	for _, g := range d.mapping(f.val, "log", []string{"drops", "rate"}) {
		switch g.key {
		case "drops":
			if s, ok := d.choice(g, "log drops", "true", "false"); ok {
				l.Drops = s == "true"
			}
		case "rate":
			if r, ok := d.rate(g, "log rate"); ok {
				l.Rate = r
			}
		}
	}
}

// rate decodes N/second, N/minute or N/hour.
func (d *decoder) rate(f field, what string) (Rate, bool) {
	s, pos, ok := d.scalar(f.val, f.keyPos, what)
	if !ok {
		return Rate{}, false
	}
	nS, unit, _ := strings.Cut(s, "/")
	n, err := strconv.ParseUint(nS, 10, 32)
	per, unitOK := map[string]time.Duration{"second": time.Second, "minute": time.Minute, "hour": time.Hour}[unit]
	if err != nil || n == 0 || !unitOK {
		d.errorf(pos, "write N/second, N/minute or N/hour with N at least 1, such as 10/second", "%s %q is not valid", what, s)
		return Rate{}, false
	}
	return Rate{N: uint32(n), Per: per}, true
}

const nameFix = "use 1 to 32 lowercase letters, digits, '-' or '_', starting with a letter"

func validName(s string) bool {
	if len(s) == 0 || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validDevice(s string) bool {
	if len(s) == 0 || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n%")
}

func validHostname(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !validLabel(label) {
			return false
		}
	}
	return true
}

func validLabel(l string) bool {
	if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ValidDNSName reports whether s is a DNS name a policy accepts as a
// destination: a host name, optionally starting with "*." for every name
// below it.
func ValidDNSName(s string) bool { return validDNSName(strings.TrimSuffix(strings.ToLower(s), ".")) }

// validDNSName accepts a lowercase name, optionally starting with "*." (every
// name strictly below the rest).
func validDNSName(s string) bool {
	rest := strings.TrimPrefix(s, "*.")
	if rest == "" || strings.Contains(rest, "*") {
		return false
	}
	return validHostname(rest)
}
