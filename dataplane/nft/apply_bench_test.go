package nft

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// TestApplyChild is not a test: BenchmarkApply runs the test binary with
// SLUICE_APPLY_CHILD=N inside a namespace, so that this process's peak
// memory is that of compiling and applying N allowlist elements alone.
func TestApplyChild(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("SLUICE_APPLY_CHILD"))
	if err != nil {
		t.Skip("helper process of BenchmarkApply")
	}
	rs, err := Build(bigAllowlist(t, n), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(-1, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(c, rs); err != nil {
		t.Fatal(err)
	}
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
				a := argv()
				cmd := ns.Command(a[0], a[1:]...)
				cmd.Env = append(os.Environ(), env...)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %v\n%s", a, err, out)
				}
				if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > maxRSS {
					maxRSS = ru.Maxrss
				}
			}
			b.ReportMetric(float64(maxRSS)/1024, "peak-MiB")
		}
		b.Run(fmt.Sprintf("sluice/%d", n), func(b *testing.B) {
			measure(b, func() []string { return []string{os.Args[0], "-test.run=^TestApplyChild$", "-test.count=1"} }, []string{fmt.Sprintf("SLUICE_APPLY_CHILD=%d", n)})
		})
		b.Run(fmt.Sprintf("nft-f/%d", n), func(b *testing.B) {
			measure(b, func() []string { return []string{"nft", "-f", file} }, nil)
		})
	}
}

var _ = exec.Command
