package policy

import "net/netip"

// SpecialPurpose is one entry of the IANA IPv4 or IPv6 Special-Purpose
// Address Registry (RFC 6890 as updated by RFC 8190 and the RFCs that added
// later rows), plus the two multicast blocks that a source filter also needs.
//
// The table mirrors the registries as last updated by IANA on 2025-10-09:
// https://www.iana.org/assignments/iana-ipv4-special-registry/ and
// https://www.iana.org/assignments/iana-ipv6-special-registry/.
//
// The registries are not a partition: a more specific row overrides the
// row that covers it (192.0.0.9/32 is globally reachable inside the
// non-reachable 192.0.0.0/24, for example), so look up the most specific
// entry containing an address.
//
// A boolean column that the registry gives as "N/A" (Teredo and 6to4 under
// Globally Reachable) is false here. So is every column of the two
// terminated rows, 192.88.99.0/24 and 2001:10::/28, whose flag cells the
// registry leaves empty.
type SpecialPurpose struct {
	Prefix            netip.Prefix
	Name              string // registry "Address Block" name, e.g. "Private-Use"
	RFC               string // the defining document(s), e.g. "RFC 1918" or "RFC 6890, RFC 8190"
	Source            bool   // registry column "Source"
	Destination       bool   // registry column "Destination"
	Forwardable       bool   // registry column "Forwardable"
	GloballyReachable bool   // "Globally Reachable"; N/A counts as false
}

// SpecialPurposeRegistry returns a fresh copy of the table: every row of the
// IANA IPv4 and IPv6 Special-Purpose Address Registries, then the IPv4 and
// IPv6 multicast blocks, which are not registry rows. The registry lists
// 192.0.0.170/32 and 192.0.0.171/32 in a single row; here they are two
// entries. The caller owns the returned slice.
func SpecialPurposeRegistry() []SpecialPurpose {
	return []SpecialPurpose{
		// IANA IPv4 Special-Purpose Address Registry.

		// "This network", RFC 791 section 3.2.
		{netip.MustParsePrefix("0.0.0.0/8"), `"This network"`, "RFC 791", true, false, false, false},
		// "This host on this network", RFC 1122 section 3.2.1.3.
		{netip.MustParsePrefix("0.0.0.0/32"), `"This host on this network"`, "RFC 1122", true, false, false, false},
		// Private-Use, RFC 1918.
		{netip.MustParsePrefix("10.0.0.0/8"), "Private-Use", "RFC 1918", true, true, true, false},
		// Shared Address Space (carrier-grade NAT), RFC 6598.
		{netip.MustParsePrefix("100.64.0.0/10"), "Shared Address Space", "RFC 6598", true, true, true, false},
		// Loopback, RFC 1122 section 3.2.1.3 (registry footnote: some protocols, e.g. RFC 8029 and RFC 5884, have exceptions).
		{netip.MustParsePrefix("127.0.0.0/8"), "Loopback", "RFC 1122", false, false, false, false},
		// Link Local, RFC 3927.
		{netip.MustParsePrefix("169.254.0.0/16"), "Link Local", "RFC 3927", true, true, false, false},
		// Private-Use, RFC 1918.
		{netip.MustParsePrefix("172.16.0.0/12"), "Private-Use", "RFC 1918", true, true, true, false},
		// IETF Protocol Assignments, RFC 6890 section 2.1 (not usable except through a more specific row).
		{netip.MustParsePrefix("192.0.0.0/24"), "IETF Protocol Assignments", "RFC 6890", false, false, false, false},
		// IPv4 Service Continuity Prefix (formerly DS-Lite), RFC 7335.
		{netip.MustParsePrefix("192.0.0.0/29"), "IPv4 Service Continuity Prefix", "RFC 7335", true, true, true, false},
		// IPv4 dummy address, RFC 7600.
		{netip.MustParsePrefix("192.0.0.8/32"), "IPv4 dummy address", "RFC 7600", true, false, false, false},
		// Port Control Protocol Anycast, RFC 7723.
		{netip.MustParsePrefix("192.0.0.9/32"), "Port Control Protocol Anycast", "RFC 7723", true, true, true, true},
		// Traversal Using Relays around NAT Anycast, RFC 8155.
		{netip.MustParsePrefix("192.0.0.10/32"), "Traversal Using Relays around NAT Anycast", "RFC 8155", true, true, true, true},
		// NAT64/DNS64 Discovery, RFC 8880 and RFC 7050 section 2.2.
		{netip.MustParsePrefix("192.0.0.170/32"), "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050", false, false, false, false},
		// NAT64/DNS64 Discovery, RFC 8880 and RFC 7050 section 2.2 (same registry row as 192.0.0.170/32).
		{netip.MustParsePrefix("192.0.0.171/32"), "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050", false, false, false, false},
		// Documentation (TEST-NET-1), RFC 5737.
		{netip.MustParsePrefix("192.0.2.0/24"), "Documentation (TEST-NET-1)", "RFC 5737", false, false, false, false},
		// AS112-v4, RFC 7535.
		{netip.MustParsePrefix("192.31.196.0/24"), "AS112-v4", "RFC 7535", true, true, true, true},
		// AMT, RFC 7450.
		{netip.MustParsePrefix("192.52.193.0/24"), "AMT", "RFC 7450", true, true, true, true},
		// Deprecated (6to4 Relay Anycast), RFC 7526; terminated 2015-03, flag cells empty in the registry.
		{netip.MustParsePrefix("192.88.99.0/24"), "Deprecated (6to4 Relay Anycast)", "RFC 7526", false, false, false, false},
		// 6a44-relay anycast address, RFC 6751.
		{netip.MustParsePrefix("192.88.99.2/32"), "6a44-relay anycast address", "RFC 6751", true, true, true, false},
		// Private-Use, RFC 1918.
		{netip.MustParsePrefix("192.168.0.0/16"), "Private-Use", "RFC 1918", true, true, true, false},
		// Direct Delegation AS112 Service, RFC 7534.
		{netip.MustParsePrefix("192.175.48.0/24"), "Direct Delegation AS112 Service", "RFC 7534", true, true, true, true},
		// Benchmarking, RFC 2544.
		{netip.MustParsePrefix("198.18.0.0/15"), "Benchmarking", "RFC 2544", true, true, true, false},
		// Documentation (TEST-NET-2), RFC 5737.
		{netip.MustParsePrefix("198.51.100.0/24"), "Documentation (TEST-NET-2)", "RFC 5737", false, false, false, false},
		// Documentation (TEST-NET-3), RFC 5737.
		{netip.MustParsePrefix("203.0.113.0/24"), "Documentation (TEST-NET-3)", "RFC 5737", false, false, false, false},
		// Reserved (former Class E), RFC 1112 section 4.
		{netip.MustParsePrefix("240.0.0.0/4"), "Reserved", "RFC 1112", false, false, false, false},
		// Limited Broadcast, RFC 8190 and RFC 919 section 7.
		{netip.MustParsePrefix("255.255.255.255/32"), "Limited Broadcast", "RFC 8190, RFC 919", false, true, false, false},

		// IANA IPv6 Special-Purpose Address Registry.

		// Loopback Address, RFC 4291.
		{netip.MustParsePrefix("::1/128"), "Loopback Address", "RFC 4291", false, false, false, false},
		// Unspecified Address, RFC 4291.
		{netip.MustParsePrefix("::/128"), "Unspecified Address", "RFC 4291", true, false, false, false},
		// IPv4-mapped Address, RFC 4291.
		{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped Address", "RFC 4291", false, false, false, false},
		// IPv4-IPv6 Translat. (NAT64 well-known prefix), RFC 6052.
		{netip.MustParsePrefix("64:ff9b::/96"), "IPv4-IPv6 Translat.", "RFC 6052", true, true, true, true},
		// IPv4-IPv6 Translat. (NAT64 local-use prefix), RFC 8215.
		{netip.MustParsePrefix("64:ff9b:1::/48"), "IPv4-IPv6 Translat.", "RFC 8215", true, true, true, false},
		// Discard-Only Address Block, RFC 6666.
		{netip.MustParsePrefix("100::/64"), "Discard-Only Address Block", "RFC 6666", true, true, true, false},
		// Dummy IPv6 Prefix, RFC 9780.
		{netip.MustParsePrefix("100:0:0:1::/64"), "Dummy IPv6 Prefix", "RFC 9780", true, false, false, false},
		// IETF Protocol Assignments, RFC 2928 (all false unless a more specific row allows it).
		{netip.MustParsePrefix("2001::/23"), "IETF Protocol Assignments", "RFC 2928", false, false, false, false},
		// TEREDO, RFC 4380 and RFC 8190; Globally Reachable is N/A in the registry.
		{netip.MustParsePrefix("2001::/32"), "TEREDO", "RFC 4380, RFC 8190", true, true, true, false},
		// Port Control Protocol Anycast, RFC 7723.
		{netip.MustParsePrefix("2001:1::1/128"), "Port Control Protocol Anycast", "RFC 7723", true, true, true, true},
		// Traversal Using Relays around NAT Anycast, RFC 8155.
		{netip.MustParsePrefix("2001:1::2/128"), "Traversal Using Relays around NAT Anycast", "RFC 8155", true, true, true, true},
		// DNS-SD Service Registration Protocol Anycast, RFC 9665.
		{netip.MustParsePrefix("2001:1::3/128"), "DNS-SD Service Registration Protocol Anycast", "RFC 9665", true, true, true, true},
		// Benchmarking, RFC 5180 as corrected by RFC Errata 1752.
		{netip.MustParsePrefix("2001:2::/48"), "Benchmarking", "RFC 5180", true, true, true, false},
		// AMT, RFC 7450.
		{netip.MustParsePrefix("2001:3::/32"), "AMT", "RFC 7450", true, true, true, true},
		// AS112-v6, RFC 7535.
		{netip.MustParsePrefix("2001:4:112::/48"), "AS112-v6", "RFC 7535", true, true, true, true},
		// Deprecated (previously ORCHID), RFC 4843; terminated 2014-03, flag cells empty in the registry.
		{netip.MustParsePrefix("2001:10::/28"), "Deprecated (previously ORCHID)", "RFC 4843", false, false, false, false},
		// ORCHIDv2, RFC 7343.
		{netip.MustParsePrefix("2001:20::/28"), "ORCHIDv2", "RFC 7343", true, true, true, true},
		// Drone Remote ID Protocol Entity Tags (DETs) Prefix, RFC 9374.
		{netip.MustParsePrefix("2001:30::/28"), "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374", true, true, true, true},
		// Documentation, RFC 3849.
		{netip.MustParsePrefix("2001:db8::/32"), "Documentation", "RFC 3849", false, false, false, false},
		// 6to4, RFC 3056; Globally Reachable is N/A in the registry.
		{netip.MustParsePrefix("2002::/16"), "6to4", "RFC 3056", true, true, true, false},
		// Direct Delegation AS112 Service, RFC 7534.
		{netip.MustParsePrefix("2620:4f:8000::/48"), "Direct Delegation AS112 Service", "RFC 7534", true, true, true, true},
		// Documentation, RFC 9637.
		{netip.MustParsePrefix("3fff::/20"), "Documentation", "RFC 9637", false, false, false, false},
		// Segment Routing (SRv6) SIDs, RFC 9602.
		{netip.MustParsePrefix("5f00::/16"), "Segment Routing (SRv6) SIDs", "RFC 9602", true, true, true, false},
		// Unique-Local, RFC 4193 and RFC 8190.
		{netip.MustParsePrefix("fc00::/7"), "Unique-Local", "RFC 4193, RFC 8190", true, true, true, false},
		// Link-Local Unicast, RFC 4291.
		{netip.MustParsePrefix("fe80::/10"), "Link-Local Unicast", "RFC 4291", true, true, false, false},

		// NOT registry rows. Multicast is left out of both special-purpose
		// registries, but a multicast address is never a valid source
		// (RFC 1812 section 5.3.7, RFC 4291 section 2.7), so a source filter
		// needs these entries. Only Source=false is the point; the other
		// flags are this package's choice, not IANA's.

		// Multicast, RFC 5771 (not a registry row).
		{netip.MustParsePrefix("224.0.0.0/4"), "Multicast", "RFC 5771", false, true, true, false},
		// Multicast, RFC 4291 section 2.7 (not a registry row).
		{netip.MustParsePrefix("ff00::/8"), "Multicast", "RFC 4291", false, true, true, false},
	}
}

// BogonSource reports whether a packet whose source address falls in e, with
// e the most specific entry containing that address, must be treated as a
// spoofed (bogon) source when it arrives from outside. That is the case when
// the block is not valid as a source at all, or is not globally reachable and
// so cannot legitimately come from beyond the local administrative domain.
func (e SpecialPurpose) BogonSource() bool {
	return !e.Source || !e.GloballyReachable
}
