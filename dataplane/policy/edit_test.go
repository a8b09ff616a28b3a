package policy

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const editBase = `# a small policy
interfaces:
  wan: {device: eth0, zone: wan, addresses: [dhcp]}
  lan:
    device: eth1
    zone: lan
    addresses: [192.168.1.1/24]

zones:
  wan:
    inbound: deny   # nothing from outside
  lan:
    services: [ssh, dns]
    egress:
      default: deny
      allow:
        - {name: web, to: [93.184.216.34], ports: [tcp/443]}   # the one site

        # end of the list
forward:
  - {from: lan, to: wan}
`

func TestAddAllow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		src   string
		zone  string
		entry string
		want  string // the whole result
	}{
		{
			name:  "append to block list",
			src:   editBase,
			zone:  "lan",
			entry: "1.1.1.1:443",
			want:  strings.Replace(editBase, "   # the one site\n", "   # the one site\n        - {name: allow-1-1-1-1-tcp-443, to: [1.1.1.1], ports: [tcp/443]}\n", 1),
		},
		{
			name:  "dns name without port",
			src:   editBase,
			zone:  "lan",
			entry: "example.com",
			want:  strings.Replace(editBase, "   # the one site\n", "   # the one site\n        - {name: allow-example-com, to: [example.com]}\n", 1),
		},
		{
			name:  "wildcard with udp port",
			src:   editBase,
			zone:  "lan",
			entry: "*.pool.ntp.org udp/123",
			want:  strings.Replace(editBase, "   # the one site\n", "   # the one site\n        - {name: allow-pool-ntp-org-udp-123, to: [\"*.pool.ntp.org\"], ports: [udp/123]}\n", 1),
		},
		{
			name:  "ipv6 with port",
			src:   editBase,
			zone:  "lan",
			entry: "[2001:db8::1]:443",
			want:  strings.Replace(editBase, "   # the one site\n", "   # the one site\n        - {name: allow-2001-db8-1-tcp-443, to: [\"2001:db8::1\"], ports: [tcp/443]}\n", 1),
		},
		{
			name:  "zone without egress",
			src:   editBase,
			zone:  "wan",
			entry: "example.com:80",
			want:  strings.Replace(editBase, "   # nothing from outside\n", "   # nothing from outside\n    egress:\n      allow:\n        - {name: allow-example-com-tcp-80, to: [example.com], ports: [tcp/80]}\n", 1),
		},
		{
			name:  "flow egress",
			src:   "interfaces:\n  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}\nzones:\n  lan:\n    egress: {default: allow}   # open\n",
			zone:  "lan",
			entry: "example.com",
			want:  "interfaces:\n  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}\nzones:\n  lan:\n    egress: {default: allow, allow: [{name: allow-example-com, to: [example.com]}]}   # open\n",
		},
		{
			name:  "flow allow list",
			src:   "interfaces:\n  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}\nzones:\n  lan:\n    egress:\n      allow: [{name: a, to: [10.0.0.1]}]\n",
			zone:  "lan",
			entry: "10.0.0.0/8",
			want:  "interfaces:\n  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}\nzones:\n  lan:\n    egress:\n      allow: [{name: a, to: [10.0.0.1]}, {name: allow-10-0-0-0-8, to: [10.0.0.0/8]}]\n",
		},
		{
			name:  "empty zone, no trailing newline",
			src:   "interfaces:\n  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}\nzones:\n  lan:",
			zone:  "lan",
			entry: "example.com",
			want:  "interfaces:\n  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}\nzones:\n  lan:\n    egress:\n      allow:\n        - {name: allow-example-com, to: [example.com]}\n",
		},
		{
			name:  "name already taken",
			src:   strings.Replace(editBase, "name: web", "name: allow-example-com", 1),
			zone:  "lan",
			entry: "example.com",
			want:  strings.Replace(strings.Replace(editBase, "name: web", "name: allow-example-com", 1), "   # the one site\n", "   # the one site\n        - {name: allow-example-com-2, to: [example.com]}\n", 1),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := AddAllow([]byte(tc.src), tc.zone, tc.entry)
			if err != nil {
				t.Fatalf("AddAllow(%q, %q): %v", tc.zone, tc.entry, err)
			}
			got := string(out)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("AddAllow(%q, %q) (-want +got):\n%s", tc.zone, tc.entry, diff)
			}
			_, before := Parse("p.yaml", []byte(tc.src))
			_, after := Parse("p.yaml", out)
			if n, m := len(after.Errors()), len(before.Errors()); n > m {
				t.Errorf("result has %d errors, src had %d:\n%v", n, m, after.Err())
			}
		})
	}
}

// TestAddAllowKeepsOtherLines checks on the examples that every line of
// the source is in the result, byte for byte and in order, and that each
// line of the result that is not in the source is part of the new entry.
func TestAddAllowKeepsOtherLines(t *testing.T) {
	added := regexp.MustCompile(`^ *(egress:|allow:|- \{name: allow-1-1-1-1-tcp-443, to: \[1\.1\.1\.1\], ports: \[tcp/443\]\})\n$`)
	for _, file := range []string{"../../examples/home.yaml", "../../examples/office.yaml"} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		_, diags := Parse(file, src)
		for _, z := range mustParse(t, file, src).Zones {
			out, err := AddAllow(src, z.Name, "1.1.1.1:443")
			if err != nil {
				t.Fatalf("%s: AddAllow(%s): %v", file, z.Name, err)
			}
			want := strings.SplitAfter(string(src), "\n")
			var changed []string
			i := 0
			for _, l := range strings.SplitAfter(string(out), "\n") {
				if i < len(want) && l == want[i] {
					i++
					continue
				}
				if !added.MatchString(l) {
					changed = append(changed, l)
					if i < len(want) {
						i++ // a flow-style line that got the entry inside its brackets
					}
				}
			}
			if i != len(want) || len(changed) > 1 {
				t.Errorf("%s zone %s: %d of %d source lines kept, changed lines %q; result:\n%s", file, z.Name, i, len(want), changed, out)
			}
			for _, l := range changed {
				if !strings.Contains(l, "allow: [{name: allow-1-1-1-1-tcp-443") {
					t.Errorf("%s zone %s: line changed without the entry: %q", file, z.Name, l)
				}
			}
			_, after := Parse(file, out)
			if len(after.Errors()) > len(diags.Errors()) {
				t.Errorf("%s zone %s: result has new errors: %v\n%s", file, z.Name, after.Err(), out)
			}
		}
	}
}

func mustParse(t *testing.T, file string, src []byte) *Policy {
	t.Helper()
	p, diags := Parse(file, src)
	if err := diags.Err(); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return p
}

func TestAddAllowErrors(t *testing.T) {
	for _, tc := range []struct {
		name, zone, entry, want string
	}{
		{"unknown zone", "dmz", "1.1.1.1", "no such zone (zones: wan, lan)"},
		{"bad destination", "lan", "bad..name", `"bad..name" is not a valid destination`},
		{"bad port", "lan", "1.1.1.1:99999", "out of range"},
		{"bad protocol", "lan", "example.com sctp/1", `unknown protocol "sctp"`},
		{"empty", "lan", "  ", "empty entry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := AddAllow([]byte(editBase), tc.zone, tc.entry)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("AddAllow(%q, %q) = %v, want an error containing %q", tc.zone, tc.entry, err, tc.want)
			}
		})
	}
}
