package nft

import (
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// OneShotGC sets the garbage collector for a process that builds and
// applies one ruleset and then exits, as sluice apply does. Almost all it
// allocates stays live until the end, so collecting on the way only costs
// time: for a million-element allowlist, collections (and the signals that
// stop the building goroutine for them) took about as long as everything
// else together. The collector is turned off, with a memory limit of half
// the machine's RAM, above which it collects again. The daemon keeps the
// default collector.
func OneShotGC() {
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil || info.Totalram == 0 {
		return
	}
	debug.SetMemoryLimit(int64(info.Totalram) * int64(info.Unit) / 2)
	debug.SetGCPercent(-1)
}
