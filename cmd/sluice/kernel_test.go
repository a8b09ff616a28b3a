package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicefw/sluice/internal/netnstest"
)

// sluiceBinary builds the binary into the test's temporary directory.
func sluiceBinary(t *testing.T) string {
	t.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("building the binary needs the go tool: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "sluice")
	if out, err := exec.Command(gotool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -o %s .: %v\n%s", bin, err, out)
	}
	return bin
}

// The compiled text is accepted by the real nft, for the built-in default
// and both examples.
func TestCompileAcceptedByNft(t *testing.T) {
	ns := netnstest.New(t)
	for _, file := range []string{"", homePolicy, officePolicy} {
		args := []string{"compile"}
		if file != "" {
			args = append(args, file)
		}
		got := runSluice(t, "", args...)
		if got.code != 0 {
			t.Fatalf("sluice %v: exit %d: %s", args, got.code, got.stderr)
		}
		cmd := ns.Command("nft", "-c", "-f", "-")
		cmd.Stdin = strings.NewReader(got.stdout)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("nft -c -f rejects sluice %v: %v\n%s", args, err, out)
		}
	}
}

func TestApplyCommand(t *testing.T) {
	bin := sluiceBinary(t)
	ns := netnstest.New(t)
	out, err := ns.Command(bin, "apply", officePolicy).CombinedOutput()
	if err != nil {
		t.Fatalf("sluice apply: %v\n%s", err, out)
	}
	mustMatch(t, "apply output", regexp.QuoteMeta(officePolicy)+`: applied table inet sluice: \d+ rules, \d+ sets holding \d+ ranges, in \S+\n`, string(out))
	before := ns.Run(t, "nft", "list", "ruleset")
	if !strings.Contains(before, `comment "`) || !strings.Contains(before, "chain egress_iot") {
		t.Fatalf("ruleset after apply lacks the office policy:\n%s", before)
	}

	// An invalid policy exits 1 and leaves the ruleset as it was.
	bad := writeFile(t, "bad.yaml", "interfaces: {lan: {device: eth1, zone: nowhere}}\nzones: {}\n")
	out, err = ns.Command(bin, "apply", bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("sluice apply of an invalid policy: %v, want exit 1\n%s", err, out)
	}
	if after := ns.Run(t, "nft", "list", "ruleset"); after != before {
		t.Errorf("a refused apply changed the ruleset")
	}
}
