package nft

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// OneShotGC sets the garbage collector for building and applying one
// ruleset, as sluice apply does once it has parsed the policy, and returns
// a function that sets it back. What is built stays live until the ruleset
// is in the kernel, so collecting on the way only costs time: for a
// million-element allowlist, collections (and the signals that stop the
// building goroutine for them) took about as long as everything else.
//
// It collects once (the parser's garbage), then turns the collector off
// with a memory limit, above which it collects again: half the RAM, or
// three quarters of the cgroup's memory.max when that is lower. GOGC or
// GOMEMLIMIT in the environment are the operator's choice and are kept.
// The daemon keeps the default collector.
func OneShotGC() (restore func()) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil || info.Totalram == 0 {
		return func() {}
	}
	limit := int64(info.Totalram) * int64(info.Unit) / 2
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if max, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && max > 0 {
			limit = min(limit, max/4*3)
		}
	}
	runtime.GC()
	oldLimit := debug.SetMemoryLimit(limit)
	oldPercent := debug.SetGCPercent(-1)
	return func() {
		debug.SetGCPercent(oldPercent)
		debug.SetMemoryLimit(oldLimit)
	}
}
