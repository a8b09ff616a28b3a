package policy

import (
	"os"
	"strings"
	"testing"
)

func ruleIDs(t *testing.T, src string) map[string]RuleID {
	t.Helper()
	prog := compileSource(t, "p.yaml", []byte(src))
	ids := map[string]RuleID{}
	for _, r := range prog.Rules {
		if _, dup := ids[r.Name]; dup {
			t.Fatalf("two rules named %q", r.Name)
		}
		ids[r.Name] = r.ID
	}
	return ids
}

// Editing one rule changes its own ID and no other; moving rules around or
// adding one leaves the existing IDs alone.
func TestRuleIDsAreStable(t *testing.T) {
	b, err := os.ReadFile("testdata/every-rule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	orig := string(b)
	before := ruleIDs(t, orig)
	seen := map[RuleID]string{}
	for name, id := range before {
		if other, dup := seen[id]; dup {
			t.Errorf("rules %q and %q share ID %s", name, other, id)
		}
		seen[id] = name
	}

	edits := []struct {
		name    string
		from    string
		to      string
		changed []string // rule names whose ID must change (renamed rules count as removed)
	}{
		{"edit one allow entry", "ports: [udp/123]", "ports: [udp/123, tcp/123]", []string{"iot egress time"}},
		{"edit one service list", "services: [ssh, dns, ping]", "services: [ssh, dns, ping, ntp]", nil},
		{"change a zone's reverse path", "reverse_path: loose", "reverse_path: strict", []string{"iot antispoof reverse-path loose"}},
		{"reorder allow entries", "        - {name: vendor-cloud, to: [\"*.vendor.example\"], ports: [tcp/443]}\n        - {name: time, to: [pool.ntp.org], ports: [udp/123]}\n",
			"        - {name: time, to: [pool.ntp.org], ports: [udp/123]}\n        - {name: vendor-cloud, to: [\"*.vendor.example\"], ports: [tcp/443]}\n", nil},
		{"edit a port forward", "port: tcp/8080", "port: tcp/8081", []string{"port-forward web"}},
	}
	for _, e := range edits {
		t.Run(e.name, func(t *testing.T) {
			if !strings.Contains(orig, e.from) {
				t.Fatalf("testdata does not contain %q", e.from)
			}
			after := ruleIDs(t, strings.Replace(orig, e.from, e.to, 1))
			for name, id := range before {
				want := true
				for _, c := range e.changed {
					want = want && c != name
				}
				got, ok := after[name]
				if want && (!ok || got != id) {
					t.Errorf("rule %q: ID %s became %s, want unchanged", name, id, got)
				}
				if !want && ok && got == id {
					t.Errorf("rule %q: ID %s unchanged, want a new ID for an edited rule", name, id)
				}
			}
		})
	}
}
