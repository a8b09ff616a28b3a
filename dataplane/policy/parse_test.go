package policy

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// base is a small valid policy that the error cases below edit.
const base = `interfaces:
  wan: {device: eth0, zone: wan, addresses: [dhcp]}
  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}
zones:
  wan: {antispoof: {bogons: drop}}
  lan: {}
forward:
  - {from: lan, to: wan}
`

func diagStrings(ds Diagnostics) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

func TestParseDiagnostics(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"valid", base, []string{}},
		{
			name: "all errors at once",
			src: `interfaces:
  wan: {device: eth0, zone: wan, addresses: [dhcp], mtu: 1500}
  lan: {device: eth1, zone: lna, addresses: [192.168.1.1/24]}
zones:
  wan:
    antispoof: {reverse_path: strikt, bogons: drop}
  lan:
    services: [tcp/70000]
    egress:
      allow:
        - {name: a, to: [10.0.0.300/24]}
forward:
  - {from: lan, to: wan}
`,
			want: []string{
				`p.yaml:2:53: unknown key "mtu" in interface wan; expected one of: device, zone, addresses, gateway`,
				`p.yaml:3:29: interface lan names zone "lna", which is not defined; define it under zones: or use one of: wan, lan`,
				`p.yaml:6:31: reverse_path "strikt" is not valid; write one of: strict, loose, off`,
				`p.yaml:8:16: port "tcp/70000" is out of range or not a number; ` + portFix,
				`p.yaml:11:26: "10.0.0.300/24" is not a valid CIDR prefix; write a CIDR such as 192.0.2.0/24 or 2001:db8::/32`,
			},
		},
		{
			name: "undefined references",
			src: `interfaces:
  lan: {device: eth1, zone: lna, addresses: [192.168.1.1/24]}
zones:
  lan: {}
forward:
  - {from: lan, to: [wan]}
port_forwards:
  - {name: web, from: outside, port: tcp/80, to: 192.168.1.10}
`,
			want: []string{
				`p.yaml:2:29: interface lan names zone "lna", which is not defined; define it under zones: or use one of: lan`,
				`p.yaml:6:22: forward names zone "wan", which is not defined; define it under zones: or use one of: lan`,
				`p.yaml:8:23: port forward web names zone "outside", which is not defined; define it under zones: or use one of: lan`,
			},
		},
		{
			name: "duplicates",
			src: `interfaces:
  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}
  lan2: {device: eth1, zone: lan, addresses: [192.168.2.1/24]}
zones:
  lan:
    services: [ssh, ssh]
    egress:
      allow:
        - {name: web, ports: [tcp/443]}
        - {name: web, ports: [tcp/80]}
`,
			want: []string{
				`p.yaml:3:18: interfaces lan and lan2 both use device eth1; give each interface its own device`,
				`p.yaml:6:21: service ssh is listed twice in zone lan; remove it; the first is at line 6`,
				`p.yaml:10:11: duplicate allow entry name "web" in zone lan; rename one; the first is at line 9`,
			},
		},
		{
			name: "shadowed and redundant entries warn",
			src: base + `  - {from: lan, to: wan}
`,
			want: []string{`p.yaml:9:21: warning: forward from lan to wan is listed twice; remove it; line 8 already allows it`},
		},
		{
			name: "allowlist shadowing",
			src: `interfaces:
  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24, "fd00::1/64"]}
zones:
  lan:
    antispoof: {sources: [192.168.1.0/24, 192.168.1.128/25, "fd00::/64"]}
    egress:
      allow:
        - {name: cloud, to: ["*.example.com", 10.0.0.0/8], ports: [tcp/443, tcp/8000-9000]}
        - {name: api, to: [api.example.com, 10.1.0.0/16], ports: [tcp/8080]}
        - {name: other, to: [example.com], ports: [tcp/443]}
        - {name: dup, to: [10.2.0.0/16, 10.2.3.0/24]}
`,
			want: []string{
				`p.yaml:5:43: warning: source 192.168.1.128/25 is already covered by 192.168.1.0/24 (line 5); remove it`,
				`p.yaml:9:11: warning: allow entry api is shadowed by cloud (line 8): it can never match first; remove it, or move it above cloud`,
				`p.yaml:11:41: warning: destination 10.2.3.0/24 is already covered by 10.2.0.0/16 in the same entry; remove it`,
			},
		},
		{
			name: "duplicate key",
			src:  base + "zones:\n  dmz: {}\n",
			want: []string{`p.yaml:9:1: duplicate key "zones" in the policy; remove it or merge it with the one at line 4`},
		},
		{
			name: "duplicate keys do not hide other problems",
			src: `interfaces:
  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24], device: eth2}
zones:
  lan: {inbound: maybe}
  lan: {}
`,
			want: []string{
				`p.yaml:2:63: duplicate key "device" in interface lan; remove it or merge it with the one at line 2`,
				`p.yaml:4:18: zone lan inbound "maybe" is not valid; write one of: allow, deny`,
				`p.yaml:5:3: duplicate key "lan" in zones; remove it or merge it with the one at line 4`,
			},
		},
		{
			name: "empty lists do not mean any",
			src: `interfaces:
  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24]}
zones:
  lan:
    antispoof: {sources: []}
    services: [{name: admin, ports: []}]
    egress: {default: deny, allow: [{name: a, to: [], ports: [tcp/443]}, {name: b, to: [10.0.0.0/8], ports: }]}
`,
			want: []string{
				`p.yaml:5:17: zone lan antispoof sources is empty; list the allowed source prefixes, or remove sources: to allow any`,
				`p.yaml:6:30: service ports is empty; list protocols and ports, such as [tcp/443], or remove ports: to match any`,
				`p.yaml:7:47: allow entry to is empty; list destinations, or remove to: to match any destination`,
				`p.yaml:7:102: allow entry ports is empty; list protocols and ports, such as [tcp/443], or remove ports: to match any`,
			},
		},
		{
			name: "IPv4-mapped addresses refused",
			src: `interfaces:
  lan: {device: eth1, zone: lan, addresses: ["::ffff:192.168.1.1/120"]}
zones:
  lan:
    antispoof: {sources: ["::ffff:192.168.1.0/120"]}
    egress: {allow: [{name: a, to: ["::ffff:93.184.216.34"]}]}
`,
			want: []string{
				`p.yaml:2:46: "::ffff:192.168.1.1/120" is an IPv4-mapped IPv6 address; write the IPv4 address as 192.168.1.1`,
				`p.yaml:5:27: "::ffff:192.168.1.0/120" is an IPv4-mapped IPv6 address; write the IPv4 address as 192.168.1.0`,
				`p.yaml:6:37: "::ffff:93.184.216.34" is an IPv4-mapped IPv6 address; write the IPv4 address as 93.184.216.34`,
			},
		},
		{
			name: "addresses no interface can hold",
			src: `interfaces:
  a: {device: eth0, zone: z, addresses: [224.0.0.1/24, 127.0.0.1/8, "::1/128", 0.0.0.0/32, 10.0.0.1/0, 192.168.5.255/24]}
  b: {device: eth1, zone: z, addresses: [198.51.100.2/24, "2001:db8::2/64"], gateway: [198.51.100.2, "fe80::1", "fe80::2"]}
  c: {device: eth2, zone: z, addresses: [10.9.0.1/24], gateway: 10.9.0.254}
zones: {z: {antispoof: {bogons: drop}}}
port_forwards:
  - {name: self, from: z, port: tcp/22, to: "10.9.0.1:22"}
  - {name: loop, from: z, port: tcp/23, to: "127.0.0.1:22"}
`,
			want: []string{
				`p.yaml:2:42: address "224.0.0.1/24" cannot be an interface address; use a unicast address, such as 192.168.1.1/24`,
				`p.yaml:2:56: address "127.0.0.1/8" cannot be an interface address; use a unicast address, such as 192.168.1.1/24`,
				`p.yaml:2:69: address "::1/128" cannot be an interface address; use a unicast address, such as 192.168.1.1/24`,
				`p.yaml:2:80: address "0.0.0.0/32" cannot be an interface address; use a unicast address, such as 192.168.1.1/24`,
				`p.yaml:2:92: address "10.0.0.1/0" has a /0 prefix; give the prefix length of the attached network, such as /24`,
				`p.yaml:2:104: address 192.168.5.255/24 is the broadcast address of its prefix; use a host address in the prefix, such as 192.168.5.254/24`,
				`p.yaml:3:88: interface b gateway 198.51.100.2 is the interface's own address; name the next router, not the box`,
				`p.yaml:3:113: interface b has a second IPv6 gateway; give at most one IPv4 and one IPv6 gateway`,
				`p.yaml:4:3: interfaces b, c all carry a default route; sluice supports one uplink; keep dhcp or gateway on one interface only`,
				`p.yaml:7:5: port forward self target 10.9.0.1 is the box's own address; point it at an inside host`,
				`p.yaml:8:5: port forward loop target 127.0.0.1 is not a unicast host address; point it at an inside host`,
			},
		},
		{
			name: "syntax error",
			src:  "interfaces: [a, b\nzones: }\n",
			want: []string{`p.yaml:2:1: YAML syntax error: ',' or ']' must be specified; fix the YAML syntax`},
		},
		{
			name: "empty file",
			src:  "",
			want: []string{`p.yaml:1:1: the policy file is empty; write a policy with at least interfaces: and zones:`},
		},
		{
			name: "not a mapping",
			src:  "- a\n- b\n",
			want: []string{`p.yaml:1:1: a policy must be a mapping, not a list; start with keys such as hostname:, interfaces: and zones:`},
		},
		{
			name: "anchors refused",
			src: `interfaces:
  lan: {device: eth1, zone: lan, addresses: &a [192.168.1.1/24]}
zones:
  lan: {}
`,
			want: []string{`p.yaml:2:45: YAML anchors and aliases are not supported in a policy; write the value out in full`},
		},
		{
			name: "bad values",
			src: `hostname: "bad host"
interfaces:
  wan: {device: eth0, zone: wan, addresses: [198.51.100.2/24], gateway: 203.0.113.1}
  lan: {device: "eth1/x", zone: lan, addresses: [192.168.1.1, 192.168.1.0/24]}
zones:
  wan: {antispoof: {bogons: drop}, inbound: maybe}
  lan:
    services: [telnet, {name: admin, ports: [tcp/9000-8000]}]
    egress: {allow: [{name: x, to: [not_a_name!], ports: [sctp/1]}]}
log: {drops: yes, rate: 0/second}
`,
			want: []string{
				`p.yaml:1:11: hostname "bad host" is not a valid host name; use letters, digits and hyphens, at most 63 per label, such as edge or edge.example`,
				`p.yaml:3:73: interface wan gateway 203.0.113.1 is not on any of its prefixes; the gateway must be inside one of the interface's prefixes (or IPv6 link-local)`,
				`p.yaml:4:17: device "eth1/x" is not a valid kernel interface name; a kernel interface name has 1 to 15 characters, no spaces, slashes or colons`,
				`p.yaml:4:50: address "192.168.1.1" has no prefix length; add the prefix length, e.g. 192.168.1.1/24`,
				`p.yaml:4:63: address 192.168.1.0/24 is the network address of its prefix; use a host address in the prefix, such as 192.168.1.1/24`,
				`p.yaml:6:45: zone wan inbound "maybe" is not valid; write one of: allow, deny`,
				`p.yaml:8:16: unknown service "telnet" in zone lan; name a known service (ssh, dns, dhcp, ntp, http, https, metrics, ping), write proto/port such as tcp/8443, or {name: x, ports: [tcp/8443]}`,
				`p.yaml:8:46: port range "tcp/9000-8000" runs backwards; write tcp/8000-9000`,
				`p.yaml:9:37: "not_a_name!" is not a valid destination; write a CIDR, an address, a DNS name such as api.example.com, or a wildcard such as *.example.com`,
				`p.yaml:9:59: unknown protocol "sctp" in "sctp/1"; ` + portFix,
				`p.yaml:10:14: log drops "yes" is not valid; write one of: true, false`,
				`p.yaml:10:25: log rate "0/second" is not valid; write N/second, N/minute or N/hour with N at least 1, such as 10/second`,
			},
		},
		{
			name: "typo suggestion",
			src:  strings.Replace(base, "forward:", "foward:", 1),
			want: []string{`p.yaml:7:1: unknown key "foward" in the policy; did you mean "forward"? (expected one of: hostname, interfaces, zones, forward, port_forwards, log, icmp)`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := Parse("p.yaml", []byte(tc.src))
			got := diagStrings(diags)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse diagnostics (-want +got):\n%s", diff)
			}
		})
	}
}

func TestShippedPoliciesAreValid(t *testing.T) {
	for _, file := range []string{"../../examples/home.yaml", "../../examples/office.yaml"} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		_, diags := Parse(file, src)
		if len(diags) != 0 {
			t.Errorf("%s: want no diagnostics, got:\n%s", file, strings.Join(diagStrings(diags), "\n"))
		}
	}
	pol, diags := Parse(DefaultFile, Default())
	if len(diags) != 0 {
		t.Fatalf("built-in default: %v", diagStrings(diags))
	}
	if _, err := Compile(pol); err != nil {
		t.Fatal(err)
	}
}

// The built-in default and examples/home.yaml are the same policy, so the
// commented example is what a box without a policy runs.
func TestDefaultIsHomeExample(t *testing.T) {
	home, err := os.ReadFile("../../examples/home.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(home), string(Default())); diff != "" {
		t.Errorf("examples/home.yaml differs from the built-in default (-home +default):\n%s", diff)
	}
}

func TestDefaultPolicyShape(t *testing.T) {
	pol, _ := Parse(DefaultFile, Default())
	want := map[string]string{"wan": "eth0", "lan": "eth1"}
	for _, ifc := range pol.Interfaces {
		if want[ifc.Name] != ifc.Device || ifc.Zone != ifc.Name {
			t.Errorf("interface %s: device %s zone %s", ifc.Name, ifc.Device, ifc.Zone)
		}
	}
	wan, lan := pol.Zones[0], pol.Zones[1]
	if !pol.Interfaces[0].DHCP || wan.Antispoof.ReversePath != RPFStrict || !wan.Antispoof.Bogons || wan.Inbound || len(wan.Services) != 0 {
		t.Errorf("wan zone = %+v, want dhcp, strict, bogons dropped, inbound denied, no services", wan)
	}
	if got := len(lan.Antispoof.Sources); got != 2 || !lan.Egress.DefaultAllow || lan.Services[0].Name != "ssh" {
		t.Errorf("lan zone = %+v, want two source prefixes, egress allowed, ssh", lan)
	}
}
