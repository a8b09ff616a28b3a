package nft

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// TestMain runs the helper process of BenchmarkApply when SLUICE_APPLY_CHILD
// holds a number N: it compiles and applies N allowlist elements in its
// namespace and exits, so that its peak memory is that work's alone.
// Otherwise it runs the tests.
func TestMain(m *testing.M) {
	if v := os.Getenv("SLUICE_APPLY_CHILD"); v != "" {
		if err := applyChild(v); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func applyChild(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("SLUICE_APPLY_CHILD=%q: %w", v, err)
	}
	// From the policy as sluice apply has it after parsing, the same steps.
	// The collector is set as sluice apply sets it once it has parsed; it
	// is set first here so that building the stand-in for the parsed
	// policy, which is not sluice's work, costs as little as it can.
	OneShotGC()
	pol, err := bigAllowlistPolicy(n)
	if err != nil {
		return err
	}
	prog, err := policy.Compile(pol)
	if err != nil {
		return err
	}
	rs, err := Build(prog, policy.Options{})
	if err != nil {
		return err
	}
	c, err := Dial(-1, 10*time.Minute)
	if err != nil {
		return err
	}
	return Apply(c, rs)
}

// BenchmarkApply measures applying 100,000 and 1,000,000 allowlist elements
// (compile, transaction and read-back verification) against nft -f loading
// the same ruleset text, each as its own process in a fresh namespace:
// wall time per apply and the process's peak resident memory.
func BenchmarkApply(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		rs, err := Build(bigAllowlist(b, n), policy.Options{})
		if err != nil {
			b.Fatal(err)
		}
		file := filepath.Join(b.TempDir(), "ruleset.nft")
		f, err := os.Create(file)
		if err != nil {
			b.Fatal(err)
		}
		if err := rs.WriteText(f); err != nil {
			b.Fatal(err)
		}
		f.Close()
		measure := func(b *testing.B, argv func() []string, env []string) {
			var maxRSS int64
			for b.Loop() {
				b.StopTimer()
				ns := netnstest.New(b)
				b.StartTimer()
				// GNU time forks the measured command itself: a child of this
				// process would inherit its resident size as a high-water mark.
				a := append([]string{"/usr/bin/time", "-f", "maxrss=%M"}, argv()...)
				cmd := ns.Command(a[0], a[1:]...)
				cmd.Env = append(os.Environ(), env...)
				out, err := cmd.CombinedOutput()
				if err != nil {
					b.Fatalf("%v: %v\n%s", a, err, out)
				}
				_, kib, ok := strings.Cut(string(out), "maxrss=")
				n, err := strconv.ParseInt(strings.TrimSpace(kib), 10, 64)
				if !ok || err != nil {
					b.Fatalf("no maxrss in the output of %v:\n%s", a, out)
				}
				maxRSS = max(maxRSS, n)
			}
			b.ReportMetric(float64(maxRSS)/1024, "peak-MiB")
		}
		b.Run(fmt.Sprintf("sluice/%d", n), func(b *testing.B) {
			measure(b, func() []string { return []string{os.Args[0]} }, []string{fmt.Sprintf("SLUICE_APPLY_CHILD=%d", n)})
		})
		b.Run(fmt.Sprintf("nft-f/%d", n), func(b *testing.B) {
			measure(b, func() []string { return []string{"nft", "-f", file} }, nil)
		})
	}
}
