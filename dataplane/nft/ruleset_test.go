package nft

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicefw/sluice/dataplane/policy"
)

func TestMergeRanges(t *testing.T) {
	r := func(lo, hi string) addrRange { return addrRange{netip.MustParseAddr(lo), netip.MustParseAddr(hi)} }
	tests := []struct {
		name     string
		in, want []addrRange
	}{
		{"disjoint stay apart", []addrRange{r("10.0.0.0", "10.0.0.255"), r("0.0.0.0", "0.0.0.0")}, []addrRange{r("0.0.0.0", "0.0.0.0"), r("10.0.0.0", "10.0.0.255")}},
		{"adjacent merge", []addrRange{r("10.0.0.0", "10.0.0.255"), r("10.0.1.0", "10.0.1.255")}, []addrRange{r("10.0.0.0", "10.0.1.255")}},
		{"contained merge", []addrRange{r("10.0.0.0", "10.255.255.255"), r("10.1.0.0", "10.1.0.255")}, []addrRange{r("10.0.0.0", "10.255.255.255")}},
		{"overlap merge", []addrRange{r("10.0.0.0", "10.0.0.200"), r("10.0.0.100", "10.0.1.0")}, []addrRange{r("10.0.0.0", "10.0.1.0")}},
		{"top of space", []addrRange{r("255.255.255.255", "255.255.255.255"), r("240.0.0.0", "255.255.255.254")}, []addrRange{r("240.0.0.0", "255.255.255.255")}},
		{"gap of one", []addrRange{r("::1", "::1"), r("::3", "::3")}, []addrRange{r("::1", "::1"), r("::3", "::3")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mergeRanges(tc.in)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(addrRange{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("mergeRanges (-want +got):\n%s", diff)
			}
		})
	}
}

// The bogon ranges carve the registry's globally reachable rows out of the
// reserved blocks that hold them.
func TestBogonRanges(t *testing.T) {
	v4, v6 := bogonRanges()
	in := func(rs []addrRange, s string) bool {
		a := netip.MustParseAddr(s)
		for _, r := range rs {
			if !a.Less(r.lo) && !r.hi.Less(a) {
				return true
			}
		}
		return false
	}
	for _, tc := range []struct {
		addr  string
		bogon bool
	}{
		{"0.0.0.0", true}, {"10.1.2.3", true}, {"100.64.0.1", true}, {"127.0.0.1", true},
		{"192.0.0.8", true}, {"192.0.0.9", false}, {"192.0.0.10", false}, {"192.0.0.11", true},
		{"198.51.100.7", true}, {"224.0.0.1", true}, {"255.255.255.255", true},
		{"8.8.8.8", false}, {"1.1.1.1", false}, {"100.128.0.1", false},
		{"::1", true}, {"fe80::1", true}, {"fd00::1", true}, {"2001:db8::1", true},
		{"2001:4:112::1", false}, {"2001:1::1", false}, {"2001:2::1", true}, {"ff02::1", true},
		{"2606:4700::1", false}, {"64:ff9b::808:808", false},
	} {
		if got := in(v4, tc.addr) || in(v6, tc.addr); got != tc.bogon {
			t.Errorf("%s in the bogon ranges = %v, want %v", tc.addr, got, tc.bogon)
		}
	}
}

// An allow entry of address ranges and TCP/UDP ports is one concatenated
// interval set while it fits one shard; single addresses, and more ranges
// crossed with ports than a shard holds, get sets of addresses instead,
// matched after the port (cheaper for a new flow than many shards of
// every address crossed with every port).
func TestEgressSetKinds(t *testing.T) {
	ports := []policy.PortRange{{Proto: policy.ProtoTCP, Lo: 443, Hi: 443}, {Proto: policy.ProtoUDP, Lo: 443, Hi: 443}}
	for _, tc := range []struct {
		name   string
		n      int // destinations
		bits   int // of each
		concat bool
	}{
		{"few ranges", 100, 31, true},
		{"few hosts", 100, 32, false},
		{"ranges past a shard", shardRanges, 31, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol, err := bigAllowlistPolicy(0)
			if err != nil {
				t.Fatal(err)
			}
			entry := &pol.Zones[1].Egress.Allow[0]
			entry.To, entry.Ports = nil, ports
			for a, i := netip.MustParseAddr("11.0.0.0"), 0; i < tc.n; i++ {
				entry.To = append(entry.To, policy.Destination{Prefix: netip.PrefixFrom(a, tc.bits)})
				a = a.Next().Next().Next().Next()
			}
			prog, err := policy.Compile(pol)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := Build(prog, policy.Options{})
			if err != nil {
				t.Fatal(err)
			}
			concat, addrs := 0, 0
			for _, s := range rs.sets {
				switch {
				case s.concat != nil:
					concat += len(s.concat)
				case strings.Contains(s.name, "_to4"):
					addrs += s.size()
				}
			}
			if tc.concat && (concat != 2*tc.n || addrs != 0) || !tc.concat && (concat != 0 || addrs != tc.n) {
				t.Errorf("concatenated elements %d, address ranges %d; want concatenated sets: %v", concat, addrs, tc.concat)
			}
		})
	}
}
