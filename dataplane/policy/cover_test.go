package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// destCovers is the definition coverIndex answers for: destination a
// matches every address b matches.
func destCovers(a, b Destination) bool {
	switch {
	case a.Name == "" && b.Name == "":
		return a.Prefix.Bits() <= b.Prefix.Bits() && a.Prefix.Contains(b.Prefix.Addr())
	case a.Name != "" && b.Name != "":
		return nameCovers(a.Name, b.Name)
	}
	return false
}

// The index finds a covering earlier destination exactly when a scan of
// every earlier one does, and what it finds does cover.
func TestCoverIndexAgreesWithScan(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	names := []string{"example.com", "*.example.com", "a.example.com", "*.a.example.com", "b.a.example.com", "example.org", "*.org", "x.org"}
	random := func() Destination {
		switch r.IntN(3) {
		case 0:
			return Destination{Name: names[r.IntN(len(names))]}
		case 1:
			a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4)), byte(r.IntN(256))})
			return Destination{Prefix: netip.PrefixFrom(a, 8+r.IntN(25)).Masked()}
		}
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(4)), byte(r.IntN(4))})
		return Destination{Prefix: netip.PrefixFrom(a, 32+r.IntN(97)).Masked()}
	}
	for round := range 200 {
		var idx coverIndex
		var seen []Destination
		for range 50 {
			d := random()
			want := false
			for _, p := range seen {
				want = want || destCovers(p, d)
			}
			i, got := idx.covering(d)
			if got != want {
				t.Fatalf("round %d: %v covered by one of %v: index says %v, scan says %v", round, d, seen, got, want)
			}
			if got && !destCovers(seen[i], d) {
				t.Fatalf("round %d: index says %v covers %v; it does not", round, seen[i], d)
			}
			idx.add(len(seen), d)
			seen = append(seen, d)
		}
	}
}

// Checking an allowlist entry of 200,000 destinations takes linear time
// (it was quadratic: hours for a million).
func TestValidateLargeEntry(t *testing.T) {
	src := []byte(`interfaces:
  wan: {device: eth0, zone: wan, addresses: [dhcp]}
  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}
zones:
  wan: {antispoof: {bogons: drop}}
  lan:
    egress:
      default: deny
      allow:
        - name: big
          to:
`)
	const n = 200_000
	for i := range n {
		src = fmt.Appendf(src, "            - 11.%d.%d.%d\n", i>>16, i>>8&0xff, i&0xff)
	}
	src = append(src, "            - 11.0.0.0/24\n            - 11.0.0.7\n"...)
	src = append(src, "forward:\n  - {from: lan, to: wan}\n"...)
	pol, diags := Parse("big.yaml", src)
	if err := diags.Err(); err != nil {
		t.Fatal(err)
	}
	if got := len(pol.Zones[1].Egress.Allow[0].To); got != n+2 {
		t.Fatalf("%d destinations, want %d", got, n+2)
	}
	warned := 0
	for _, d := range diags {
		if d.Pos.Line == n+13 && strings.Contains(d.Msg, "11.0.0.7/32 is already covered") {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("the repeated 11.0.0.7 (line %d) drew %d warnings, want 1:\n%v", n+13, warned, diags)
	}
}

// writeDestinationsKey writes sortedKey's text for any list.
func TestDestinationsKeyIsSortedKey(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	names := []string{"example.com", "*.example.com", "a.example.com", "a.example.co", "example.org.uk.long.name.example", "x"}
	for round := range 300 {
		var ds []Destination
		for range r.IntN(40) {
			switch r.IntN(3) {
			case 0:
				ds = append(ds, Destination{Name: names[r.IntN(len(names))]})
			case 1:
				a := netip.AddrFrom4([4]byte{byte(r.IntN(3) * 100), 1, byte(r.IntN(3)), byte(r.IntN(256))})
				ds = append(ds, Destination{Prefix: netip.PrefixFrom(a, 8+r.IntN(25)).Masked()})
			default:
				a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(4)), 15: byte(r.IntN(4))})
				ds = append(ds, Destination{Prefix: netip.PrefixFrom(a, 32+r.IntN(97)).Masked()})
			}
		}
		var got strings.Builder
		writeDestinationsKey(&got, ds)
		if want := sortedKey(ds); got.String() != want {
			t.Fatalf("round %d: writeDestinationsKey wrote %q, sortedKey = %q", round, got.String(), want)
		}
	}
}
