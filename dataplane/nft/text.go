package nft

import (
	"fmt"
	"io"
	"strings"
)

// WriteText writes the ruleset in nft syntax. The output starts by deleting
// any previous sluice table in the same transaction, so `nft -f` applies it
// atomically, as Apply does.
func (rs *Ruleset) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# sluice ruleset: `nft -f` replaces table inet %s atomically.\n", TableName)
	fmt.Fprintf(&b, "table inet %s {}\ndelete table inet %s\n\n", TableName, TableName)
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, c := range rs.Counters {
		fmt.Fprintf(&b, "\tcounter %s {\n\t}\n", c)
	}
	for _, s := range rs.sets {
		fmt.Fprintf(&b, "\n\tset %s {\n", s.name)
		typ := "ipv6_addr"
		if s.v4 {
			typ = "ipv4_addr"
		}
		if s.concat != nil {
			typ += " . inet_proto . inet_service"
		}
		fmt.Fprintf(&b, "\t\ttype %s\n", typ)
		switch {
		case s.dynamic:
			b.WriteString("\t\tflags interval,timeout\n")
		case !s.hosts():
			b.WriteString("\t\tflags interval\n")
		}
		if s.hosts() {
			fmt.Fprintf(&b, "\t\tsize %d\n", s.size())
		}
		fmt.Fprintf(&b, "\t\tcomment %q\n", s.comment)
		if s.size() > 0 {
			b.WriteString("\t\telements = { ")
			for i := range s.size() {
				if i > 0 {
					b.WriteString(",\n\t\t\t     ")
				}
				if s.concat != nil {
					c := s.concat[i]
					proto := map[uint8]string{6: "tcp", 17: "udp"}[c.proto]
					port := fmt.Sprint(c.lo)
					if c.hi != c.lo {
						port = fmt.Sprintf("%d-%d", c.lo, c.hi)
					}
					fmt.Fprintf(&b, "%s . %s . %s", c.addrs, proto, port)
				} else {
					b.WriteString(s.ranges[i].String())
				}
			}
			b.WriteString(" }\n")
		}
		b.WriteString("\t}\n")
	}
	for _, c := range rs.chains {
		fmt.Fprintf(&b, "\n\tchain %s {\n", c.name)
		if c.base != nil {
			policy := "drop"
			if c.base.accept {
				policy = "accept"
			}
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy %s;\n", c.base.typ, c.base.hookNm, c.base.prio, policy)
		}
		for _, r := range c.rules {
			b.WriteString("\t\t")
			b.WriteString(r.p.text)
			if r.comment != "" {
				fmt.Fprintf(&b, " comment %q", r.comment)
			}
			b.WriteString("\n")
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}
