package policy

import (
	"net/netip"

	"github.com/gaissmai/bart"
)

// coverIndex answers which earlier destination covers a new one, in time
// that does not grow with how many came before: allowlists of a million
// destinations are checked in seconds, not days. Prefixes live in a
// routing table (a covering prefix is a route for the new one); names in
// a map of exact names and "*.suffix" patterns.
type coverIndex struct {
	prefixes bart.Table[int]
	names    map[string]int
}

// add records destination i.
func (c *coverIndex) add(i int, d Destination) {
	if d.Name != "" {
		if c.names == nil {
			c.names = map[string]int{}
		}
		if _, ok := c.names[d.Name]; !ok {
			c.names[d.Name] = i
		}
		return
	}
	if _, ok := c.prefixes.Get(d.Prefix); !ok {
		c.prefixes.Insert(d.Prefix, i)
	}
}

// covering returns the index of a recorded destination that matches every
// address d matches, as destCovers decides.
func (c *coverIndex) covering(d Destination) (int, bool) {
	if d.Name == "" {
		return c.prefixes.LookupPrefix(d.Prefix)
	}
	if i, ok := c.names[d.Name]; ok {
		return i, true
	}
	// "*.S" covers every name ending in ".S".
	for k := 0; k < len(d.Name); k++ {
		if d.Name[k] != '.' {
			continue
		}
		if i, ok := c.names["*."+d.Name[k+1:]]; ok {
			return i, true
		}
	}
	return 0, false
}

// coversAll reports whether every destination in ds is covered.
func (c *coverIndex) coversAll(ds []Destination) bool {
	for _, d := range ds {
		if _, ok := c.covering(d); !ok {
			return false
		}
	}
	return true
}

// prefixDestination makes a plain prefix, such as a zone's source, a
// destination for a coverIndex.
func prefixDestination(p netip.Prefix) Destination { return Destination{Prefix: p} }
