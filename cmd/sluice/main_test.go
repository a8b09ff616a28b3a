package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	homePolicy   = "../../examples/home.yaml"
	officePolicy = "../../examples/office.yaml"
)

// result is what one run of the command line produced.
type result struct {
	code           int
	stdout, stderr string
}

// runSluice drives run with args and stdin, as main would.
func runSluice(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, strings.NewReader(stdin), &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// mustMatch fails unless s matches the regular expression re in full.
func mustMatch(t *testing.T, what, re, s string) {
	t.Helper()
	if !regexp.MustCompile(`\A(?:` + re + `)\z`).MatchString(s) {
		t.Errorf("%s = %q, want a match for %q", what, s, re)
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, name, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// okLine matches the line check prints for a valid policy.
func okLine(name string) string {
	return regexp.QuoteMeta(name) + `: ok: \d+ interfaces, \d+ zones, \d+ rules, \d+ warnings\n`
}

func TestCheck(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		stdoutRE string // must match all of stdout
		stderrRE string // must match all of stderr
	}{
		{
			name:     "built-in default",
			args:     []string{"check"},
			wantCode: 0,
			stdoutRE: okLine("<built-in>"),
			stderrRE: ``,
		},
		{
			name:     "shipped examples",
			args:     []string{"check", homePolicy, officePolicy},
			wantCode: 0,
			stdoutRE: okLine(homePolicy) + okLine(officePolicy),
			stderrRE: ``,
		},
		{
			name:     "stdin",
			args:     []string{"check", "-"},
			stdin:    readFile(t, homePolicy),
			wantCode: 0,
			stdoutRE: okLine("<stdin>"),
			stderrRE: ``,
		},
		{
			name:     "missing file",
			args:     []string{"check", missing},
			wantCode: 1,
			stdoutRE: ``,
			stderrRE: `sluice check: read policy: open ` + regexp.QuoteMeta(missing) + `: .+\n`,
		},
		{
			name:     "missing file does not stop the others",
			args:     []string{"check", missing, officePolicy},
			wantCode: 1,
			stdoutRE: okLine(officePolicy),
			stderrRE: `sluice check: read policy: open ` + regexp.QuoteMeta(missing) + `: .+\n`,
		},
		{
			name:     "unknown flag",
			args:     []string{"check", "--strict"},
			wantCode: 2,
			stdoutRE: ``,
			stderrRE: `(?s)flag provided but not defined: -strict\nUsage: sluice check .*`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runSluice(t, tt.stdin, tt.args...)
			if got.code != tt.wantCode {
				t.Errorf("sluice %q exit code = %d, want %d; stderr:\n%s", tt.args, got.code, tt.wantCode, got.stderr)
			}
			mustMatch(t, "stdout", tt.stdoutRE, got.stdout)
			mustMatch(t, "stderr", tt.stderrRE, got.stderr)
		})
	}
}

// TestCheckReportsEveryError checks that one run reports every error in a
// file, each as FILE:LINE:COL: message; fix, and not only the first.
func TestCheckReportsEveryError(t *testing.T) {
	// Errors found while decoding (an unknown key, a bad CIDR, a port out of
	// range) and a reference to an undefined zone, all in one file.
	const mixed = `hostname: edge
interfaces:
  wan:
    device: eth0
    zone: wan
    addresses: [dhcp]
  lan:
    device: eth1
    zone: lna
    adresses:
      - 192.168.1.1/24
zones:
  wan:
    antispoof: {bogons: drop}
    inbound: deny
  lan:
    antispoof:
      sources:
        - 10.0.0.300/24
    services: [ssh, tcp/70000]
`
	mixedErrors := []string{
		`FILE:9:11: interface lan names zone "lna", which is not defined; define it under zones: or use one of: wan, lan`,
		`FILE:10:5: unknown key "adresses" in interface lan; did you mean "addresses"? (expected one of: device, zone, addresses, gateway)`,
		`FILE:19:11: "10.0.0.300/24" is not a valid CIDR prefix; write a CIDR such as 192.0.2.0/24 or 2001:db8::/32`,
		`FILE:20:21: port "tcp/70000" is out of range or not a number; write proto/port or proto/low-high with ports 1-65535, such as tcp/443, udp/1000-2000, tcp, icmp/echo-request or any`,
	}
	// Errors only the whole policy shows: references, duplicates, routes.
	const whole = `interfaces:
  wan: {device: eth0, zone: wan, addresses: [dhcp]}
  lan: {device: eth1, zone: lna, addresses: [192.168.1.1/24]}
  dmz: {device: eth1, zone: dmz, addresses: [10.0.0.1/24], gateway: 10.9.9.9}
zones:
  wan: {antispoof: {bogons: drop}}
  dmz: {}
forward:
  - {from: lan, to: wan}
`
	wholeErrors := []string{
		`FILE:3:29: interface lan names zone "lna", which is not defined; define it under zones: or use one of: wan, dmz`,
		`FILE:4:3: interfaces wan, dmz all carry a default route; sluice supports one uplink; keep dhcp or gateway on one interface only`,
		`FILE:4:17: interfaces lan and dmz both use device eth1; give each interface its own device`,
		`FILE:4:69: interface dmz gateway 10.9.9.9 is not on any of its prefixes; the gateway must be inside one of the interface's prefixes (or IPv6 link-local)`,
		`FILE:9:12: forward names zone "lan", which is not defined; define it under zones: or use one of: wan, dmz`,
	}

	tests := []struct {
		name       string
		src        string
		stdin      bool // pass the policy as "-" on stdin
		wantErrors []string
	}{
		{name: "decode and reference errors", src: mixed, wantErrors: mixedErrors},
		{name: "whole-policy errors", src: whole, wantErrors: wholeErrors},
		{name: "stdin", src: mixed, stdin: true, wantErrors: mixedErrors},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got result
			file := "<stdin>"
			if tt.stdin {
				got = runSluice(t, tt.src, "check", "-")
			} else {
				file = writeFile(t, "broken.yaml", tt.src)
				got = runSluice(t, "", "check", file)
			}
			if got.code != 1 {
				t.Errorf("exit code = %d, want 1", got.code)
			}
			if got.stdout != "" {
				t.Errorf("stdout = %q, want nothing for an invalid policy", got.stdout)
			}
			diagLine := regexp.MustCompile(`^` + regexp.QuoteMeta(file) + `:[0-9]+:[0-9]+: .+; .+$`)
			var gotErrors []string
			for _, line := range strings.Split(strings.TrimSuffix(got.stderr, "\n"), "\n") {
				if !diagLine.MatchString(line) {
					t.Errorf("stderr line %q is not FILE:LINE:COL: message; fix", line)
				}
				if !strings.Contains(line, ": warning: ") {
					gotErrors = append(gotErrors, line)
				}
			}
			var wantErrors []string
			for _, w := range tt.wantErrors {
				wantErrors = append(wantErrors, file+strings.TrimPrefix(w, "FILE"))
			}
			if diff := cmp.Diff(wantErrors, gotErrors); diff != "" {
				t.Errorf("errors on stderr (-want +got):\n%s\nfull stderr:\n%s", diff, got.stderr)
			}
		})
	}
}

// explained is the text form of explain's answer.
type explained struct {
	Verdict, Rule, Reason string
}

var ruleID = regexp.MustCompile(`^r[0-9a-f]{10}$`)

// parseExplain reads the verdict:, rule: and reason: lines explain prints.
func parseExplain(t *testing.T, out string) explained {
	t.Helper()
	var got explained
	for _, line := range strings.Split(out, "\n") {
		key, val, _ := strings.Cut(line, ":")
		val = strings.TrimSpace(val)
		switch key {
		case "verdict":
			got.Verdict = val
		case "reason":
			got.Reason = val
		case "rule":
			id, name, _ := strings.Cut(val, " ")
			if !ruleID.MatchString(id) {
				t.Errorf("rule line %q: ID %q does not match %s", line, id, ruleID)
			}
			got.Rule = name
		}
	}
	return got
}

func TestExplain(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  explained
	}{
		{
			name: "lan to the internet",
			args: []string{homePolicy, "tcp 192.168.1.10:40000 -> 93.184.216.34:443 in lan new"},
			want: explained{Verdict: "accept", Rule: "lan egress default allow", Reason: "zone's egress default is allow"},
		},
		{
			name: "bogon source from wan",
			args: []string{homePolicy, "udp 10.0.0.1:53 -> 192.168.1.10:53 in wan"},
			want: explained{Verdict: "drop", Rule: "wan antispoof bogons", Reason: "source is a special-purpose (bogon) address"},
		},
		{
			name: "lan to the box on ssh",
			args: []string{homePolicy, "tcp 192.168.1.10:40000 -> 192.168.1.1:22 in lan"},
			want: explained{Verdict: "accept", Rule: "lan service ssh", Reason: "service on the box allowed from the zone"},
		},
		{
			name: "lan to the box on telnet",
			args: []string{homePolicy, "tcp 192.168.1.10:40000 -> 192.168.1.1:23 in lan"},
			want: explained{Verdict: "drop", Rule: "lan inbound deny", Reason: "zone may not reach the box"},
		},
		{
			name: "ping over IPv6",
			args: []string{homePolicy, "icmpv6 [fd00:53:1::10] -> [fd00:53:1::1] in lan"},
			want: explained{Verdict: "accept", Rule: "lan service ping", Reason: "service on the box allowed from the zone"},
		},
		{
			name: "established flow",
			args: []string{homePolicy, "tcp 93.184.216.34:443 -> 192.168.1.10:40000 in wan established"},
			want: explained{Verdict: "accept", Rule: "conntrack established", Reason: "part of an established or related flow"},
		},
		{
			name:  "policy on stdin",
			args:  []string{"-", "tcp 192.168.1.10:40000 -> 192.168.1.1:22 in lan"},
			stdin: readFile(t, homePolicy),
			want:  explained{Verdict: "accept", Rule: "lan service ssh", Reason: "service on the box allowed from the zone"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runSluice(t, tt.stdin, append([]string{"explain"}, tt.args...)...)
			if res.code != 0 || res.stderr != "" {
				t.Fatalf("exit code %d, stderr %q; want 0 and nothing", res.code, res.stderr)
			}
			got := parseExplain(t, res.stdout)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("explain %q (-want +got):\n%s\nstdout:\n%s", tt.args, diff, res.stdout)
			}
		})
	}
}

func TestExplainJSON(t *testing.T) {
	const packet = "tcp 192.168.1.10:40000 -> 93.184.216.34:443 in lan new"
	res := runSluice(t, "", "explain", "--json", homePolicy, packet)
	if res.code != 0 || res.stderr != "" {
		t.Fatalf("exit code %d, stderr %q; want 0 and nothing", res.code, res.stderr)
	}
	type explainJSON struct {
		Packet  string `json:"packet"`
		Verdict string `json:"verdict"`
		RuleID  string `json:"rule_id"`
		Rule    string `json:"rule"`
		Kind    string `json:"kind"`
		Reason  string `json:"reason"`
		Source  string `json:"source"`
	}
	var got explainJSON
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatalf("decode explain --json output: %v\n%s", err, res.stdout)
	}
	if !ruleID.MatchString(got.RuleID) {
		t.Errorf("rule_id = %q, want a match for %s", got.RuleID, ruleID)
	}
	mustMatch(t, "source", regexp.QuoteMeta(homePolicy)+`:[0-9]+:[0-9]+`, got.Source)
	want := explainJSON{
		Packet:  packet,
		Verdict: "accept",
		RuleID:  got.RuleID, // checked above
		Rule:    "lan egress default allow",
		Kind:    "egress-default",
		Reason:  "zone's egress default is allow",
		Source:  got.Source, // checked above
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("explain --json (-want +got):\n%s", diff)
	}

	// The text form names the same rule.
	text := runSluice(t, "", "explain", homePolicy, packet)
	if !strings.Contains(text.stdout, "rule:    "+got.RuleID+" "+got.Rule+"\n") {
		t.Errorf("text output does not name rule %s %s:\n%s", got.RuleID, got.Rule, text.stdout)
	}
}

// TestExplainPacketArgs checks that a packet reads the same whether it is
// one argument or split over several, as a shell splits it unquoted.
func TestExplainPacketArgs(t *testing.T) {
	want := runSluice(t, "", "explain", homePolicy, "tcp 192.168.1.10:40000 -> 192.168.1.1:22 in lan new")
	if want.code != 0 {
		t.Fatalf("explain with the packet as one argument: exit code %d, stderr %q", want.code, want.stderr)
	}
	tests := []struct {
		name   string
		packet []string
	}{
		{name: "every word its own argument", packet: strings.Fields("tcp 192.168.1.10:40000 -> 192.168.1.1:22 in lan new")},
		{name: "some words together", packet: []string{"tcp", "192.168.1.10:40000 -> 192.168.1.1:22", "in lan", "new"}},
		{name: "extra spaces", packet: []string{"  tcp  192.168.1.10:40000   ->  192.168.1.1:22 in  lan new "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runSluice(t, "", append([]string{"explain", homePolicy}, tt.packet...)...)
			if got.code != 0 {
				t.Fatalf("exit code %d, stderr %q", got.code, got.stderr)
			}
			// The packet is echoed only in --json; the text form must be identical.
			if diff := cmp.Diff(want.stdout, got.stdout); diff != "" {
				t.Errorf("explain %q (-want +got):\n%s", tt.packet, diff)
			}
		})
	}
}

func TestExplainErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	broken := writeFile(t, "broken.yaml", "interfaces: {}\nzones: {}\ncolour: blue\n")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		stderrRE string // must match somewhere in stderr
	}{
		{name: "no arguments", args: nil, wantCode: 2, stderrRE: `^sluice explain: want FILE and PACKET\nUsage: sluice explain `},
		{name: "no packet", args: []string{homePolicy}, wantCode: 2, stderrRE: `^sluice explain: want FILE and PACKET\n`},
		{
			name:     "unknown interface",
			args:     []string{homePolicy, "tcp 192.168.1.10:40000 -> 93.184.216.34:443 in dmz"},
			wantCode: 2,
			stderrRE: `^sluice explain: packet ".*": interface "dmz" is not in the policy \(it has wan, lan\)\n$`,
		},
		{
			name:     "malformed source address",
			args:     []string{homePolicy, "tcp 192.168.1.300:40000 -> 93.184.216.34:443 in lan"},
			wantCode: 2,
			stderrRE: `^sluice explain: packet ".*": source: "192.168.1.300:40000" is not an address`,
		},
		{
			name:     "malformed destination address",
			args:     []string{homePolicy, "udp 192.168.1.10:5353 -> 192.168.1.1:99999 in lan"},
			wantCode: 2,
			stderrRE: `^sluice explain: packet ".*": destination: "192.168.1.1:99999" is not an address`,
		},
		{
			name:     "no arrow",
			args:     []string{homePolicy, "tcp 192.168.1.10:40000 93.184.216.34:443 in lan"},
			wantCode: 2,
			stderrRE: `^sluice explain: packet ".*": want PROTO SRC\[:PORT\] -> DST\[:PORT\] in IFACE`,
		},
		{
			name:     "mixed address families",
			args:     []string{homePolicy, "tcp 192.168.1.10:40000 -> [2001:db8::1]:443 in lan"},
			wantCode: 2,
			stderrRE: `different address families`,
		},
		{
			name:     "unknown state",
			args:     []string{homePolicy, "tcp 192.168.1.10:40000 -> 93.184.216.34:443 in lan opened"},
			wantCode: 2,
			stderrRE: `"opened": want a state`,
		},
		{
			name:     "bad --addr",
			args:     []string{"--addr", "dmz=198.51.100.7/24", homePolicy, "tcp 192.168.1.10:40000 -> 93.184.216.34:443 in lan"},
			wantCode: 2,
			stderrRE: `^sluice explain: --addr "dmz=198.51.100.7/24": want IFACE=ADDR/LEN`,
		},
		{name: "unknown flag", args: []string{"--yaml", homePolicy, "tcp 1.2.3.4:1 -> 5.6.7.8:2 in lan"}, wantCode: 2, stderrRE: `flag provided but not defined: -yaml`},
		{
			name:     "missing policy",
			args:     []string{missing, "tcp 192.168.1.10:40000 -> 93.184.216.34:443 in lan"},
			wantCode: 1,
			stderrRE: regexp.QuoteMeta(missing),
		},
		{
			name:     "invalid policy",
			args:     []string{broken, "tcp 192.168.1.10:40000 -> 93.184.216.34:443 in lan"},
			wantCode: 1,
			stderrRE: `(?m)^` + regexp.QuoteMeta(broken) + `:3:1: unknown key "colour" in the policy; `,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runSluice(t, "", append([]string{"explain"}, tt.args...)...)
			if got.code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", got.code, tt.wantCode)
			}
			if got.stdout != "" {
				t.Errorf("stdout = %q, want nothing", got.stdout)
			}
			if !regexp.MustCompile(tt.stderrRE).MatchString(got.stderr) {
				t.Errorf("stderr = %q, want a match for %q", got.stderr, tt.stderrRE)
			}
		})
	}
}

func TestCommandHelp(t *testing.T) {
	for _, c := range commands() {
		for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				got := runSluice(t, "", args...)
				if got.code != 0 {
					t.Errorf("exit code = %d, want 0", got.code)
				}
				if want := "Usage: sluice " + c.name; !strings.HasPrefix(got.stderr, want) {
					t.Errorf("stderr = %q, want it to start with %q", got.stderr, want)
				}
				if got.stdout != "" {
					t.Errorf("stdout = %q, want nothing", got.stdout)
				}
			})
		}
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout bool // usage on stdout (asked for) rather than stderr (a mistake)
		stderrRE   string
	}{
		{name: "help", args: []string{"help"}, wantCode: 0, wantStdout: true},
		{name: "--help", args: []string{"--help"}, wantCode: 0, wantStdout: true},
		{name: "-h", args: []string{"-h"}, wantCode: 0, wantStdout: true},
		{name: "no command", args: nil, wantCode: 2, stderrRE: `^sluice is an edge router`},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, stderrRE: `^sluice: unknown command "frobnicate"\n\nsluice is an edge router`},
		{name: "help for an unknown command", args: []string{"help", "frobnicate"}, wantCode: 2, stderrRE: `^sluice: unknown command "frobnicate"\n`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runSluice(t, "", tt.args...)
			if got.code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", got.code, tt.wantCode)
			}
			usage, other := got.stderr, got.stdout
			if tt.wantStdout {
				usage, other = got.stdout, got.stderr
			}
			if other != "" {
				t.Errorf("usage went to the wrong stream; the other one holds %q", other)
			}
			for _, c := range commands() {
				if want := "  sluice " + c.name; !strings.Contains(usage, want) {
					t.Errorf("usage does not list %q:\n%s", want, usage)
				}
			}
			if tt.stderrRE != "" && !regexp.MustCompile(tt.stderrRE).MatchString(got.stderr) {
				t.Errorf("stderr = %q, want a match for %q", got.stderr, tt.stderrRE)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		t.Run(args[0], func(t *testing.T) {
			got := runSluice(t, "", args...)
			if got.code != 0 || got.stderr != "" {
				t.Errorf("exit code %d, stderr %q; want 0 and nothing", got.code, got.stderr)
			}
			if !strings.HasPrefix(got.stdout, "sluice ") {
				t.Errorf("stdout = %q, want a line starting with %q", got.stdout, "sluice ")
			}
			mustMatch(t, "stdout", `sluice \S+ go\S+ \S+/\S+\n`, got.stdout)
		})
	}
}

// TestBinary builds the real binary and runs it once, to prove main wires
// os.Args, the standard streams and the exit code to run.
func TestBinary(t *testing.T) {
	bin := sluiceBinary(t)
	cmd := exec.Command(bin, "check", officePolicy)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("sluice check %s: %v\nstderr:\n%s", officePolicy, err, stderr.String())
	}
	if !strings.Contains(stdout.String(), ": ok: ") {
		t.Errorf("sluice check %s: stdout = %q, want it to say ok", officePolicy, stdout.String())
	}
	mustMatch(t, "stdout", okLine(officePolicy), stdout.String())
}
