package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// A namespace a test process that has ended left behind is deleted; one of
// a running process is not.
func TestSweepStale(t *testing.T) {
	RequireRoot(t)
	dead := 4_000_000 // above any pid_max Linux allows, so no such process
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", dead)); err == nil {
		t.Fatalf("process %d exists", dead)
	}
	stale := fmt.Sprintf("%s%d-leftover-1", namePrefix, dead)
	live := fmt.Sprintf("%s%d-live-1", namePrefix, os.Getppid())
	for _, name := range []string{stale, live} {
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v %s", name, err, out)
		}
	}
	defer exec.Command("ip", "netns", "del", live).Run()
	defer exec.Command("ip", "netns", "del", stale).Run()
	sweepStale()
	if _, err := os.Stat("/run/netns/" + stale); err == nil {
		t.Errorf("%s, of an ended process, is still there", stale)
	}
	if _, err := os.Stat("/run/netns/" + live); err != nil {
		t.Errorf("%s, of a running process, was deleted", live)
	}
}
