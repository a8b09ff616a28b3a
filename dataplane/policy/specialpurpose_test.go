package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// specialPurposeLookup returns the most specific entry of table containing a
// (a plain linear longest-prefix match) and whether there was one.
func specialPurposeLookup(table []SpecialPurpose, a netip.Addr) (SpecialPurpose, bool) {
	var best SpecialPurpose
	found := false
	for _, e := range table {
		if e.Prefix.Contains(a) && (!found || e.Prefix.Bits() > best.Prefix.Bits()) {
			best, found = e, true
		}
	}
	return best, found
}

func TestSpecialPurposeRegistryPrefixes(t *testing.T) {
	seen := make(map[netip.Prefix]string)
	for _, e := range SpecialPurposeRegistry() {
		if !e.Prefix.IsValid() {
			t.Errorf("%q: invalid prefix %v", e.Name, e.Prefix)
			continue
		}
		if e.Prefix != e.Prefix.Masked() {
			t.Errorf("%q: prefix %v is not masked (want %v)", e.Name, e.Prefix, e.Prefix.Masked())
		}
		if prev, dup := seen[e.Prefix]; dup {
			t.Errorf("duplicate prefix %v (%q and %q)", e.Prefix, prev, e.Name)
		}
		seen[e.Prefix] = e.Name
		if e.Name == "" {
			t.Errorf("%v: empty Name", e.Prefix)
		}
		if !strings.HasPrefix(e.RFC, "RFC ") {
			t.Errorf("%v: RFC field %q does not start with \"RFC \"", e.Prefix, e.RFC)
		}
	}
}

func TestSpecialPurposeRegistryCounts(t *testing.T) {
	// As of the 2025-10-09 registries: 25 IPv4 rows (one of them holding both
	// 192.0.0.170/32 and 192.0.0.171/32) and 25 IPv6 rows, plus one multicast
	// block per family.
	const want4, want6 = 25 + 1 + 1, 25 + 1
	var got4, got6 int
	for _, e := range SpecialPurposeRegistry() {
		if e.Prefix.Addr().Is4() {
			got4++
		} else {
			got6++
		}
	}
	if got4 != want4 || got6 != want6 {
		t.Errorf("got %d IPv4 and %d IPv6 entries, want %d and %d", got4, got6, want4, want6)
	}
}

func TestSpecialPurposeRegistryFreshCopy(t *testing.T) {
	a := SpecialPurposeRegistry()
	orig := a[0]
	a[0].Source = !a[0].Source
	a[0].Name = "clobbered"
	if b := SpecialPurposeRegistry(); b[0] != orig {
		t.Errorf("mutating one result changed the next: got %+v, want %+v", b[0], orig)
	}
}

// A few rows in full, so that a transposed flag shows up somewhere other than
// BogonSource.
func TestSpecialPurposeRegistryRows(t *testing.T) {
	type flags struct{ src, dst, fwd, global bool }
	tests := []struct {
		prefix string
		name   string
		want   flags
	}{
		{"0.0.0.0/8", `"This network"`, flags{true, false, false, false}},
		{"169.254.0.0/16", "Link Local", flags{true, true, false, false}},
		{"192.0.0.8/32", "IPv4 dummy address", flags{true, false, false, false}},
		{"192.0.0.10/32", "Traversal Using Relays around NAT Anycast", flags{true, true, true, true}},
		{"192.88.99.2/32", "6a44-relay anycast address", flags{true, true, true, false}},
		{"255.255.255.255/32", "Limited Broadcast", flags{false, true, false, false}},
		{"::/128", "Unspecified Address", flags{true, false, false, false}},
		{"100:0:0:1::/64", "Dummy IPv6 Prefix", flags{true, false, false, false}},
		{"2001::/32", "TEREDO", flags{true, true, true, false}},
		{"2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", flags{true, true, true, true}},
		{"5f00::/16", "Segment Routing (SRv6) SIDs", flags{true, true, true, false}},
		{"fe80::/10", "Link-Local Unicast", flags{true, true, false, false}},
		{"224.0.0.0/4", "Multicast", flags{false, true, true, false}},
		{"ff00::/8", "Multicast", flags{false, true, true, false}},
	}
	table := SpecialPurposeRegistry()
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			p := netip.MustParsePrefix(tt.prefix)
			for _, e := range table {
				if e.Prefix != p {
					continue
				}
				if e.Name != tt.name {
					t.Errorf("Name = %q, want %q", e.Name, tt.name)
				}
				got := flags{e.Source, e.Destination, e.Forwardable, e.GloballyReachable}
				if got != tt.want {
					t.Errorf("flags (src, dst, fwd, global) = %+v, want %+v", got, tt.want)
				}
				return
			}
			t.Fatalf("no entry for %v", p)
		})
	}
}

func TestSpecialPurposeBogonSource(t *testing.T) {
	tests := []struct {
		name   string
		addr   string
		prefix string // most specific entry; "" when no entry contains addr
		bogon  bool
	}{
		{"private 10/8", "10.1.2.3", "10.0.0.0/8", true},
		{"shared address space", "100.64.1.1", "100.64.0.0/10", true},
		{"PCP anycast inside 192.0.0.0/24", "192.0.0.9", "192.0.0.9/32", false},
		{"service continuity /29 inside 192.0.0.0/24", "192.0.0.1", "192.0.0.0/29", true},
		{"unassigned part of 192.0.0.0/24", "192.0.0.100", "192.0.0.0/24", true},
		{"NAT64 discovery", "192.0.0.171", "192.0.0.171/32", true},
		{"this host on this network", "0.0.0.0", "0.0.0.0/32", true},
		{"loopback", "127.0.0.1", "127.0.0.0/8", true},
		{"AS112-v4", "192.31.196.1", "192.31.196.0/24", false},
		{"deprecated 6to4 relay anycast", "192.88.99.1", "192.88.99.0/24", true},
		{"6a44 relay anycast", "192.88.99.2", "192.88.99.2/32", true},
		{"limited broadcast inside 240/4", "255.255.255.255", "255.255.255.255/32", true},
		{"reserved 240/4", "250.1.2.3", "240.0.0.0/4", true},
		{"multicast 224/4", "224.0.0.1", "224.0.0.0/4", true},
		{"public IPv4", "8.8.8.8", "", false},
		{"AS112-v6 inside 2001::/23", "2001:4:112::1", "2001:4:112::/48", false},
		{"DNS-SD SRP anycast", "2001:1::3", "2001:1::3/128", false},
		{"ORCHIDv2", "2001:20::1", "2001:20::/28", false},
		{"deprecated ORCHID", "2001:10::1", "2001:10::/28", true},
		{"Teredo (global N/A)", "2001::1", "2001::/32", true},
		{"unassigned part of 2001::/23", "2001:5::1", "2001::/23", true},
		{"6to4 (global N/A)", "2002:808:808::1", "2002::/16", true},
		{"documentation 2001:db8::/32", "2001:db8::1", "2001:db8::/32", true},
		{"documentation 3fff::/20", "3fff::1", "3fff::/20", true},
		{"SRv6 SIDs", "5f00::1", "5f00::/16", true},
		{"dummy IPv6 prefix", "100:0:0:1::1", "100:0:0:1::/64", true},
		{"IPv6 loopback", "::1", "::1/128", true},
		{"IPv6 unspecified", "::", "::/128", true},
		{"IPv4-mapped", "::ffff:8.8.8.8", "::ffff:0:0/96", true},
		{"unique local", "fd00::1", "fc00::/7", true},
		{"link-local", "fe80::1", "fe80::/10", true},
		{"IPv6 multicast", "ff02::1", "ff00::/8", true},
		{"public IPv6", "2606:4700::1", "", false},
		{"NAT64 well-known prefix", "64:ff9b::1.2.3.4", "64:ff9b::/96", false},
		{"NAT64 local-use prefix", "64:ff9b:1::1.2.3.4", "64:ff9b:1::/48", true},
	}
	table := SpecialPurposeRegistry()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := netip.MustParseAddr(tt.addr)
			e, ok := specialPurposeLookup(table, a)
			if tt.prefix == "" {
				if ok {
					t.Fatalf("%v: matched %v (%q), want no entry", a, e.Prefix, e.Name)
				}
				return
			}
			if !ok {
				t.Fatalf("%v: no entry, want %v", a, tt.prefix)
			}
			if want := netip.MustParsePrefix(tt.prefix); e.Prefix != want {
				t.Fatalf("%v: most specific entry %v (%q), want %v", a, e.Prefix, e.Name, want)
			}
			if got := e.BogonSource(); got != tt.bogon {
				t.Errorf("%v in %v (%q): BogonSource() = %v, want %v", a, e.Prefix, e.Name, got, tt.bogon)
			}
		})
	}
}
