package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sluicefw/sluice/dataplane/flows"
	"github.com/sluicefw/sluice/dataplane/netconf"
	"github.com/sluicefw/sluice/dataplane/nft"
	"github.com/sluicefw/sluice/dataplane/policy"
)

func runCompile(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("compile", "[FILE]", `Print the nftables ruleset a policy compiles to, in nft syntax. The output
replaces table inet sluice atomically when loaded with "nft -f". With no
FILE, the built-in default policy; "-" reads stdin.`, stderr)
	if code, done := parseFlags(fs, args); done {
		return code
	}
	_, rs, code := loadRuleset("compile", fs.Args(), stdin, stderr)
	if rs == nil {
		return code
	}
	if err := rs.WriteText(stdout); err != nil {
		fmt.Fprintf(stderr, "sluice compile: %v\n", err)
		return 1
	}
	return 0
}

func runApply(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("apply", "[FILE]", `Apply a policy once to this network namespace's kernel and exit: table
inet sluice is replaced in one transaction, and every set is read back.
Exits 0 when applied, 1 when the policy is invalid or the kernel refused
it, leaving the previous ruleset in place. Then every tracked connection
the new policy would not let start is deleted (revoked), and printed;
connections still allowed are untouched. With no FILE, the built-in
default policy; "-" reads stdin. Needs CAP_NET_ADMIN.`, stderr)
	timeout := fs.Duration("timeout", time.Minute, "give up on the kernel after this long")
	keepFlows := fs.Bool("keep-flows", false, "leave existing connections alone, even those the new policy would not allow")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(stderr, "sluice apply: want at most one FILE")
		return 2
	}
	name, src, err := readPolicy(fs.Arg(0), stdin)
	if err != nil {
		fmt.Fprintf(stderr, "sluice apply: %v\n", err)
		return 1
	}
	pol, ok := parseSource(name, src, stderr)
	if !ok {
		return 1
	}
	// What is built from here on stays live until the ruleset is in the
	// kernel: no collections on the way.
	restoreGC := nft.OneShotGC()
	prog, ok := compilePolicy(name, pol, stderr)
	if !ok {
		return 1
	}
	// Addresses a DHCP uplink holds now are the box's own.
	opts := netconf.Learned(prog)
	rs, err := nft.Build(prog, opts)
	if err != nil {
		fmt.Fprintf(stderr, "sluice apply: %v\n", err)
		return 1
	}
	conn, err := nft.Dial(-1, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "sluice apply: %v\n", err)
		return 1
	}
	start := time.Now()
	err = nft.Apply(conn, rs)
	restoreGC()
	if errors.Is(err, nft.ErrShortSet) || errors.Is(err, nft.ErrUnverified) {
		// Sent and committed, but not read back as sent.
		fmt.Fprintf(stderr, "sluice apply: %s: %v; the new ruleset is in force but may be incomplete: apply again\n", prog.File, err)
		return 1
	} else if err != nil {
		fmt.Fprintf(stderr, "sluice apply: %s: %v; the previous ruleset is still in force\n", prog.File, err)
		if where := refusal(prog, rs, *timeout); where != "" {
			fmt.Fprintln(stderr, where)
		}
		return 1
	}
	sets, ranges := rs.Sets()
	fmt.Fprintf(stdout, "%s: applied table inet %s: %d rules, %d sets holding %d ranges, in %v\n",
		prog.File, nft.TableName, len(prog.Rules), sets, ranges, time.Since(start).Round(time.Millisecond))
	if *keepFlows {
		return 0
	}
	// Connections the new policy would not let start are cut; the others
	// go on untouched.
	fc, err := flows.Dial(-1)
	if err != nil {
		fmt.Fprintf(stderr, "sluice apply: the new ruleset is in force; revoking flows: %v\n", err)
		return 1
	}
	defer fc.Close()
	revoked, err := flows.Revoke(fc, prog, opts)
	for _, f := range revoked {
		fmt.Fprintf(stdout, "revoked %s\n", f)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice apply: the new ruleset is in force; revoking flows: %v\n", err)
		return 1
	}
	return 0
}

// loadRuleset reads the policy named by args (at most one FILE) and builds
// its ruleset for command cmd. On failure it has printed why and returns a
// nil Ruleset with the exit code.
func loadRuleset(cmd string, args []string, stdin io.Reader, stderr io.Writer) (*policy.Program, *nft.Ruleset, int) {
	if len(args) > 1 {
		fmt.Fprintf(stderr, "sluice %s: want at most one FILE\n", cmd)
		return nil, nil, 2
	}
	file := ""
	if len(args) == 1 {
		file = args[0]
	}
	prog, ok := loadProgram(cmd, file, stdin, stderr)
	if !ok {
		return nil, nil, 1
	}
	rs, err := nft.Build(prog, policy.Options{})
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
		return nil, nil, 1
	}
	return prog, rs, 0
}

// refusal ties a refused transaction to the policy: it finds the rule the
// kernel refuses (in a scratch namespace) and names the policy line it came
// from, as FILE:LINE:COL: what was refused; what to do. It returns "" when
// no single rule is to blame.
func refusal(prog *policy.Program, rs *nft.Ruleset, timeout time.Duration) string {
	r, err := nft.Locate(rs, timeout)
	if err != nil || r == nil {
		return ""
	}
	if r.Text == "" {
		return fmt.Sprintf("%s: the kernel refused the ruleset's sets or counters: %v; check that the kernel has nf_tables set support", prog.File, r.Err)
	}
	id, _, _ := strings.Cut(r.Comment, " ")
	pos := "1:1"
	name := "a rule sluice adds itself"
	if pr, ok := prog.Rule(policy.RuleID(id)); ok {
		name = string(pr.ID) + " " + pr.Name
		if pr.Pos != (policy.Pos{}) {
			pos = pr.Pos.String()
		}
	}
	return fmt.Sprintf("%s:%s: the kernel refused %s (chain %s: %s): %v; this kernel may lack the feature the rule needs (see the nftables modules it loads)", prog.File, pos, name, r.Chain, r.Text, r.Err)
}
