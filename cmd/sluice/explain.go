package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/sluicefw/sluice/dataplane/policy"
)

// explanation is what explain prints, and its JSON form.
type explanation struct {
	Packet   string `json:"packet"`
	Verdict  string `json:"verdict"`
	RuleID   string `json:"rule_id"`
	RuleName string `json:"rule"`
	Kind     string `json:"kind"`
	Reason   string `json:"reason"`
	Source   string `json:"source,omitempty"` // FILE:LINE:COL of the rule
}

func runExplain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("explain", "[flags] FILE PACKET", `Print the verdict for one packet, the ID and name of the rule that decided it,
and the reason. PACKET is written as

  PROTO SRC[:PORT] -> DST[:PORT] in IFACE [STATE] [flags=FLAGS]

for example: tcp 192.168.1.10:40000 -> 93.184.216.34:443 in lan new
PROTO is tcp, udp, icmp or icmpv6 (icmp/TYPE for another ICMP type than echo
request); IPv6 addresses with a port are bracketed; IFACE is an interface name
from the policy; STATE is new (default), established, related or invalid.
FILE "-" reads the policy from stdin.`, stderr)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	var addrs, resolved listFlag
	fs.Var(&addrs, "addr", "IFACE=ADDR/LEN: an address the interface has at run time (repeatable), e.g. wan=198.51.100.7/24 for a DHCP uplink")
	fs.Var(&resolved, "resolve", "NAME=ADDR: treat DNS name NAME as resolved to ADDR (repeatable), for name-based allowlists")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() < 2 {
		fmt.Fprintln(stderr, "sluice explain: want FILE and PACKET")
		fs.Usage()
		return 2
	}
	prog, ok := loadProgram("explain", fs.Arg(0), stdin, stderr)
	if !ok {
		return 1
	}
	opts := policy.Options{Addresses: map[string][]netip.Prefix{}, Resolved: map[string][]netip.Addr{}}
	for _, a := range addrs {
		name, v, _ := strings.Cut(a, "=")
		pfx, err := netip.ParsePrefix(v)
		if _, known := prog.Interface(name); err != nil || !known {
			fmt.Fprintf(stderr, "sluice explain: --addr %q: want IFACE=ADDR/LEN with an interface of the policy\n", a)
			return 2
		}
		opts.Addresses[name] = append(opts.Addresses[name], pfx)
	}
	for _, r := range resolved {
		name, v, _ := strings.Cut(r, "=")
		addr, err := netip.ParseAddr(v)
		if err != nil || !policy.ValidDNSName(name) || strings.HasPrefix(name, "*") || addr.Zone() != "" {
			fmt.Fprintf(stderr, "sluice explain: --resolve %q: want NAME=ADDR with a DNS name (no wildcard) and an address\n", r)
			return 2
		}
		opts.Resolved[name] = append(opts.Resolved[name], addr)
	}
	text := strings.Join(fs.Args()[1:], " ")
	pk, err := prog.ParsePacket(text)
	if err != nil {
		fmt.Fprintf(stderr, "sluice explain: %v\n", err)
		return 2
	}
	d := policy.NewEvaluator(prog, opts).Evaluate(&pk)
	ex := explanation{Packet: text, Verdict: d.Verdict.String(), Reason: d.Reason.String()}
	if d.Rule >= 0 {
		r := prog.Rules[d.Rule]
		ex.RuleID, ex.RuleName, ex.Kind = string(r.ID), r.Name, r.Kind.String()
		if r.Pos != (policy.Pos{}) {
			ex.Source = fmt.Sprintf("%s:%s", prog.File, r.Pos)
		} else {
			ex.Source = "built-in"
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(ex); err != nil {
			fmt.Fprintf(stderr, "sluice explain: %v\n", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stdout, "verdict: %s\nrule:    %s %s\nreason:  %s\nfrom:    %s\n", ex.Verdict, ex.RuleID, ex.RuleName, ex.Reason, ex.Source)
	return 0
}
