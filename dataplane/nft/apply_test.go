package nft

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables/expr"

	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/internal/netnstest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var policies = map[string]string{
	"home":       "../../examples/home.yaml",
	"office":     "../../examples/office.yaml",
	"every-rule": "../policy/testdata/every-rule.yaml",
}

func build(t testing.TB, file string) *Ruleset {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Build(compileSource(t, file, src), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// compileSource parses and compiles a policy, failing the test with the
// policy's text when it is not valid.
func compileSource(t testing.TB, name string, src []byte) *policy.Program {
	t.Helper()
	pol, diags := policy.Parse(name, src)
	if err := diags.Err(); err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	prog, err := policy.Compile(pol)
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

func text(t testing.TB, rs *Ruleset) string {
	t.Helper()
	var b bytes.Buffer
	if err := rs.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func apply(t testing.TB, ns *netnstest.NS, rs *Ruleset) error {
	t.Helper()
	c, err := Dial(ns.Open(t), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return Apply(c, rs)
}

// The netlink transaction and the nft text are two renderings of one
// ruleset: loaded into two namespaces, the kernel must list the same thing.
func TestNetlinkMatchesText(t *testing.T) {
	for name, file := range policies {
		t.Run(name, func(t *testing.T) {
			rs := build(t, file)
			viaNetlink, viaText := netnstest.New(t), netnstest.New(t)
			if err := apply(t, viaNetlink, rs); err != nil {
				t.Fatal(err)
			}
			cmd := viaText.Command("nft", "-f", "-")
			cmd.Stdin = strings.NewReader(text(t, rs))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("nft -f of the compiled text: %v\n%s", err, out)
			}
			got := viaNetlink.Run(t, "nft", "list", "ruleset")
			want := viaText.Run(t, "nft", "list", "ruleset")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ruleset applied through netlink differs from nft -f of the text (-text +netlink):\n%s", diff)
			}
		})
	}
}

// Applying is idempotent and touches nothing but table inet sluice; what the
// kernel holds is kept in a golden file per policy.
func TestApplyGolden(t *testing.T) {
	for name, file := range policies {
		t.Run(name, func(t *testing.T) {
			rs := build(t, file)
			ns := netnstest.New(t)
			ns.Run(t, "nft", "add table inet other; add chain inet other keep { type filter hook input priority 10; }")
			if err := apply(t, ns, rs); err != nil {
				t.Fatal(err)
			}
			first := ns.Run(t, "nft", "list", "table", "inet", TableName)
			if err := apply(t, ns, rs); err != nil {
				t.Fatalf("second apply: %v", err)
			}
			second := ns.Run(t, "nft", "list", "table", "inet", TableName)
			if diff := cmp.Diff(first, second); diff != "" {
				t.Errorf("applying twice changed the ruleset (-first +second):\n%s", diff)
			}
			if other := ns.Run(t, "nft", "list", "table", "inet", "other"); !strings.Contains(other, "chain keep") {
				t.Errorf("table inet other was changed:\n%s", other)
			}
			golden := filepath.Join("testdata", name+".nft.golden")
			if *update {
				if err := os.WriteFile(golden, []byte(second), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to record it)", err)
			}
			if diff := cmp.Diff(string(want), second); diff != "" {
				t.Errorf("nft list table differs from %s (-golden +got):\n%s", golden, diff)
			}
		})
	}
}

// A failed transaction leaves the previous ruleset in force.
func TestApplyFailureKeepsPrevious(t *testing.T) {
	ns := netnstest.New(t)
	good := build(t, policies["home"])
	if err := apply(t, ns, good); err != nil {
		t.Fatal(err)
	}
	before := ns.Run(t, "nft", "list", "ruleset")
	bad := build(t, policies["home"])
	bad.chains[len(bad.chains)-1].rules = append(bad.chains[len(bad.chains)-1].rules, rule{p: verdict(expr.VerdictJump, "no_such_chain")})
	err := apply(t, ns, bad)
	if err == nil {
		t.Fatal("applying a rule that jumps to a missing chain succeeded")
	}
	if after := ns.Run(t, "nft", "list", "ruleset"); after != before {
		t.Errorf("a failed apply changed the ruleset:\n%s", cmp.Diff(before, after))
	}
}

// One million allowlist elements sent means one million in the kernel.
func TestApplyMillionElements(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the million-element apply takes seconds")
	}
	const n = 1_000_000
	prog := bigAllowlist(t, n)
	rs, err := Build(prog, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ns := netnstest.New(t)
	start := time.Now()
	if err := apply(t, ns, rs); err != nil {
		t.Fatal(err)
	}
	t.Logf("applied and verified %d elements in %v", n, time.Since(start))
	c, err := Dial(ns.Open(t), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	id := string(prog.Rules[prog.Zones[1].Egress[0]].ID)
	total := 0
	for i := 0; ; i++ {
		got, err := c.CountElements(fmt.Sprintf("%s_to4_%d", id, i))
		if err != nil {
			break // past the last shard
		}
		total += got
	}
	if total != n {
		t.Errorf("kernel holds %d elements of the allowlist, want %d", total, n)
	}
}

// bigAllowlist is the default two-port policy with one lan egress entry of
// n IPv4 host addresses, none adjacent to another.
func bigAllowlist(t testing.TB, n int) *policy.Program {
	t.Helper()
	prog, err := bigAllowlistProgram(n)
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

func bigAllowlistProgram(n int) (*policy.Program, error) {
	pol, err := bigAllowlistPolicy(n)
	if err != nil {
		return nil, err
	}
	return policy.Compile(pol)
}

// bigAllowlistPolicy is the built-in policy with lan's egress allowlist
// holding n IPv4 host addresses, as the parser would return it.
func bigAllowlistPolicy(n int) (*policy.Policy, error) {
	pol, diags := policy.Parse(policy.DefaultFile, policy.Default())
	if err := diags.Err(); err != nil {
		return nil, err
	}
	entry := policy.AllowEntry{Name: "big", To: make([]policy.Destination, 0, n)}
	for a, i := netip.MustParseAddr("11.0.0.0"), 0; i < n; i++ {
		entry.To = append(entry.To, policy.Destination{Prefix: netip.PrefixFrom(a, 32)})
		a = a.Next().Next()
	}
	pol.Zones[1].Egress = policy.Egress{DefaultAllow: false, Allow: []policy.AllowEntry{entry}}
	return pol, nil
}

// Locate finds the rule the kernel refuses, in a scratch namespace.
func TestLocateRefusedRule(t *testing.T) {
	netnstest.RequireRoot(t)
	bad := build(t, policies["office"])
	c := bad.chains[len(bad.chains)-2]
	c.rules = append(c.rules[:1], append([]rule{{p: verdict(expr.VerdictJump, "no_such_chain"), comment: "rX the bad one"}}, c.rules[1:]...)...)
	got, err := Locate(bad, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Comment != "rX the bad one" || got.Chain != c.name || got.Err == nil {
		t.Errorf("Locate = %+v, want the jump to no_such_chain in %s", got, c.name)
	}
	good, err := Locate(build(t, policies["office"]), time.Minute)
	if err != nil || good != nil {
		t.Errorf("Locate of a good ruleset = %+v, %v; want nil, nil", good, err)
	}
}

// The read-back catches a set that holds as many elements as were sent but
// not the ones sent, and one that lost an element; sets filled at run time
// may hold more.
func TestVerifyCatchesChangedSets(t *testing.T) {
	netnstest.RequireRoot(t)
	prog := bigAllowlist(t, 1000)
	rs, err := Build(prog, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ns := netnstest.New(t)
	c, err := Dial(ns.Open(t), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(c, rs); err != nil {
		t.Fatal(err)
	}
	if err := c.verify(rs); err != nil {
		t.Fatalf("verify of the ruleset just applied: %v", err)
	}
	set := string(prog.Rules[prog.Zones[1].Egress[0]].ID) + "_to4"
	// 11.0.0.0 is the first address sent; 11.0.0.1 never was.
	ns.Run(t, "nft", "delete", "element", "inet", TableName, set, "{ 11.0.0.0 }")
	ns.Run(t, "nft", "add", "element", "inet", TableName, set, "{ 11.0.0.1 }")
	if err := c.verify(rs); !errors.Is(err, ErrShortSet) {
		t.Errorf("verify of a set with one element swapped = %v, want ErrShortSet", err)
	}
	ns.Run(t, "nft", "delete", "element", "inet", TableName, set, "{ 11.0.0.1 }")
	if err := c.verify(rs); !errors.Is(err, ErrShortSet) {
		t.Errorf("verify of a set one element short = %v, want ErrShortSet", err)
	}
}
