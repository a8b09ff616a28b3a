package nft

import (
	"runtime/debug"
	"testing"
)

// OneShotGC turns the collector off under a memory limit, and its restore
// function sets both back.
func TestOneShotGC(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	beforeLimit := debug.SetMemoryLimit(-1)
	restore := OneShotGC()
	percent := debug.SetGCPercent(-1) // reads it (and leaves it off)
	limit := debug.SetMemoryLimit(-1)
	restore()
	if percent != -1 || limit <= 0 || limit == beforeLimit {
		t.Errorf("under OneShotGC: GC percent %d, memory limit %d; want -1 and a limit below the default %d", percent, limit, beforeLimit)
	}
	if p := debug.SetGCPercent(-1); p == -1 {
		t.Errorf("after restore: GC percent %d, want the collector back on", p)
	}
	debug.SetGCPercent(100)
	if l := debug.SetMemoryLimit(-1); l != beforeLimit {
		t.Errorf("after restore: memory limit %d, want %d", l, beforeLimit)
	}
}
