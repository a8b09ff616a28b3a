package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

func sortDiagnostics(ds Diagnostics) {
	slices.SortStableFunc(ds, func(a, b Diagnostic) int {
		return cmp.Or(cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Pos.Col, b.Pos.Col))
	})
}

// validate checks what only the whole policy can tell: references between
// sections, duplicates, and allowlist entries that can never decide.
func validate(d *decoder, p *Policy) {
	zones := map[string]*Zone{}
	for i := range p.Zones {
		zones[p.Zones[i].Name] = &p.Zones[i]
	}
	zoneList := func() string {
		names := make([]string, 0, len(p.Zones))
		for _, z := range p.Zones {
			names = append(names, z.Name)
		}
		if len(names) == 0 {
			return "define it under zones:"
		}
		return "define it under zones: or use one of: " + strings.Join(names, ", ")
	}
	danglingZone := false
	refZone := func(name string, pos Pos, what string) bool {
		if _, ok := zones[name]; !ok {
			danglingZone = true
			d.errorf(pos, zoneList(), "%s names zone %q, which is not defined", what, name)
			return false
		}
		return true
	}

	if len(p.Interfaces) == 0 {
		d.errorf(Pos{Line: 1, Col: 1}, "add interfaces: with at least one interface, e.g. lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}", "the policy has no interfaces")
	}
	devices := map[string]string{}
	used := map[string]bool{}
	var uplinks []string
	var uplinkPos Pos
	type owned struct {
		iface string
		pfx   netip.Prefix
	}
	var prefixes []owned
	for _, ifc := range p.Interfaces {
		if ifc.Zone != "" && refZone(ifc.Zone, ifc.ZonePos, "interface "+ifc.Name) {
			used[ifc.Zone] = true
		}
		if ifc.Device != "" {
			if other, dup := devices[ifc.Device]; dup {
				d.errorf(ifc.DevicePos, "give each interface its own device", "interfaces %s and %s both use device %s", other, ifc.Name, ifc.Device)
			}
			devices[ifc.Device] = ifc.Name
		}
		if ifc.Uplink() {
			uplinks = append(uplinks, ifc.Name)
			if len(uplinks) == 2 {
				uplinkPos = ifc.Pos
			}
		}
		for i, a := range ifc.Addresses {
			for _, o := range prefixes {
				if o.pfx.Overlaps(a.Masked()) {
					d.errorf(ifc.AddressPos[i], "give each interface its own prefix", "interface %s address %s overlaps %s on interface %s", ifc.Name, a, o.pfx, o.iface)
				}
			}
			prefixes = append(prefixes, owned{ifc.Name, a.Masked()})
		}
		for i, g := range ifc.Gateways {
			onLink := g.IsLinkLocalUnicast() // an IPv6 router's usual next-hop address
			for _, a := range ifc.Addresses {
				if a.Masked().Contains(g) {
					onLink = true
					if a.Addr() == g {
						d.errorf(ifc.GatewayPos[i], "name the next router, not the box", "interface %s gateway %s is the interface's own address", ifc.Name, g)
					}
				}
			}
			if !onLink {
				d.errorf(ifc.GatewayPos[i], "the gateway must be inside one of the interface's prefixes (or IPv6 link-local)", "interface %s gateway %s is not on any of its prefixes", ifc.Name, g)
			}
		}
	}
	if len(uplinks) > 1 {
		d.errorf(uplinkPos, "keep dhcp or gateway on one interface only", "interfaces %s all carry a default route; sluice supports one uplink", strings.Join(uplinks, ", "))
	}

	for _, z := range p.Zones {
		if !used[z.Name] && !danglingZone {
			d.warnf(z.Pos, "assign it to an interface or remove it", "zone %s has no interfaces", z.Name)
		}
		validateZone(d, p, z)
	}

	pairs := map[[2]string]Pos{}
	for _, fw := range p.Forward {
		if fw.From != "" {
			refZone(fw.From, fw.FromPos, "forward")
		}
		for i, to := range fw.To {
			if !refZone(to, fw.ToPos[i], "forward") {
				continue
			}
			if to == fw.From {
				d.warnf(fw.ToPos[i], "remove it", "forwarding from zone %s to itself is always allowed", to)
			}
			key := [2]string{fw.From, to}
			if first, dup := pairs[key]; dup {
				d.warnf(fw.ToPos[i], fmt.Sprintf("remove it; line %d already allows it", first.Line), "forward from %s to %s is listed twice", fw.From, to)
			}
			pairs[key] = fw.ToPos[i]
		}
	}

	pfNames := map[string]Pos{}
	for i, pf := range p.PortForwards {
		if pf.Name != "" {
			if first, dup := pfNames[pf.Name]; dup {
				d.errorf(pf.Pos, fmt.Sprintf("rename one; the first is at line %d", first.Line), "duplicate port forward name %q", pf.Name)
			}
			pfNames[pf.Name] = pf.Pos
		}
		if pf.From != "" {
			refZone(pf.From, pf.FromPos, "port forward "+pf.Name)
		}
		if !pf.To.IsValid() {
			continue
		}
		if a := pf.To.Addr(); a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
			d.errorf(pf.Pos, "point it at an inside host", "port forward %s target %s is not a unicast host address", pf.Name, a)
			continue
		}
		if slices.ContainsFunc(p.Interfaces, func(i Interface) bool {
			return slices.ContainsFunc(i.Addresses, func(a netip.Prefix) bool { return a.Addr() == pf.To.Addr() })
		}) {
			d.errorf(pf.Pos, "point it at an inside host", "port forward %s target %s is the box's own address", pf.Name, pf.To.Addr())
			continue
		}
		inside := false
		for _, o := range prefixes {
			inside = inside || o.pfx.Contains(pf.To.Addr())
		}
		if !inside {
			d.warnf(pf.Pos, "point it at a host on one of the interfaces' prefixes", "port forward %s target %s is not on any interface's prefix", pf.Name, pf.To.Addr())
		}
		for _, other := range p.PortForwards[:i] {
			if other.From == pf.From && other.Port.Proto == pf.Port.Proto && other.Port.Lo <= pf.Port.Hi && pf.Port.Lo <= other.Port.Hi &&
				other.To.Addr().Is4() == pf.To.Addr().Is4() {
				d.errorf(pf.Pos, "give each port forward its own port", "port forward %s overlaps port forward %s (line %d)", pf.Name, other.Name, other.Pos.Line)
			}
		}
	}

	if !p.ICMP.Essential {
		d.warnf(p.ICMP.Pos, "allow it unless you mean to break IPv6 and path MTU discovery", "essential ICMP is denied: IPv6 neighbour discovery and path MTU discovery will fail")
	}
}

func validateZone(d *decoder, p *Policy, z Zone) {
	uplink := false
	for _, ifc := range p.Interfaces {
		if ifc.Zone != z.Name {
			continue
		}
		uplink = uplink || ifc.Uplink()
		if len(z.Antispoof.Sources) == 0 {
			continue
		}
		for _, a := range ifc.Addresses {
			covered := false
			for _, s := range z.Antispoof.Sources {
				covered = covered || (s.Bits() <= a.Bits() && s.Contains(a.Addr()))
			}
			if !covered {
				d.warnf(z.Antispoof.Pos, fmt.Sprintf("add %s to sources", a.Masked()), "zone %s only allows sources that do not cover its own interface %s prefix %s", z.Name, ifc.Name, a.Masked())
			}
		}
	}
	if uplink && !z.Antispoof.Bogons {
		d.warnf(z.Pos, "add antispoof: {bogons: drop}", "zone %s holds the uplink and does not drop bogon sources", z.Name)
	}
	var sources coverIndex
	for i, s := range z.Antispoof.Sources {
		if j, ok := sources.covering(prefixDestination(s)); ok {
			d.warnf(z.Antispoof.SourcesPos[i], "remove it", "source %s is already covered by %s (line %d)", s, z.Antispoof.Sources[j], z.Antispoof.SourcesPos[j].Line)
			continue
		}
		sources.add(i, prefixDestination(s))
	}

	svcNames := map[string]Pos{}
	for _, s := range z.Services {
		if first, dup := svcNames[s.Name]; dup {
			d.errorf(s.Pos, fmt.Sprintf("remove it; the first is at line %d", first.Line), "service %s is listed twice in zone %s", s.Name, z.Name)
		}
		svcNames[s.Name] = s.Pos
	}

	names := map[string]Pos{}
	covers := make([]coverIndex, len(z.Egress.Allow))
	for i, a := range z.Egress.Allow {
		if a.Name != "" {
			if first, dup := names[a.Name]; dup {
				d.errorf(a.Pos, fmt.Sprintf("rename one; the first is at line %d", first.Line), "duplicate allow entry name %q in zone %s", a.Name, z.Name)
			}
			names[a.Name] = a.Pos
		}
		for j, dst := range a.To {
			if k, ok := covers[i].covering(dst); ok {
				d.warnf(dst.Pos, "remove it", "destination %s is already covered by %s in the same entry", dst, a.To[k])
				continue
			}
			covers[i].add(j, dst)
		}
		for k, prev := range z.Egress.Allow[:i] {
			if entryCovers(prev, &covers[k], a) {
				d.warnf(a.Pos, fmt.Sprintf("remove it, or move it above %s", prev.Name), "allow entry %s is shadowed by %s (line %d): it can never match first", a.Name, prev.Name, prev.Pos.Line)
				break
			}
		}
	}
}

func (dst Destination) String() string {
	if dst.Name != "" {
		return dst.Name
	}
	return dst.Prefix.String()
}

// NameMatches reports whether an allowlist name pattern (an exact name, or
// "*.example.com" for every name below example.com) matches the DNS name
// name, which may be written with a trailing dot or in any case.
func NameMatches(pattern, name string) bool {
	return nameCovers(pattern, strings.TrimSuffix(strings.ToLower(name), "."))
}

// nameCovers reports whether pattern a matches every name pattern b matches.
func nameCovers(a, b string) bool {
	if a == b {
		return true
	}
	if suffix, ok := strings.CutPrefix(a, "*."); ok {
		return strings.HasSuffix(b, "."+suffix)
	}
	return false
}

// entryCovers reports whether allow entry a, whose destinations aTo
// indexes, matches every packet b matches, so that b can never be the
// first match.
func entryCovers(a AllowEntry, aTo *coverIndex, b AllowEntry) bool {
	if len(a.To) > 0 && (len(b.To) == 0 || !aTo.coversAll(b.To)) {
		return false
	}
	if len(a.Ports) == 0 || slices.ContainsFunc(a.Ports, func(p PortRange) bool { return p.Proto == 0 }) {
		return true
	}
	if len(b.Ports) == 0 {
		return false
	}
	for _, bp := range b.Ports {
		if bp.Proto == 0 {
			return false
		}
		if !slices.ContainsFunc(a.Ports, func(ap PortRange) bool { return ap.Proto == bp.Proto && ap.Lo <= bp.Lo && bp.Hi <= ap.Hi }) {
			return false
		}
	}
	return true
}
