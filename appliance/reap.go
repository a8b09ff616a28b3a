package appliance

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"
)

// reapGrace is how long a zombie child of sluice may stay unreaped before
// the reaper takes it.
//
// The reaper does not call wait4(-1): that would also collect children that
// sluice itself started with os/exec and is waiting for, and their Wait
// would fail with ECHILD. A child whose parent (sluice) waits for it is
// reaped by that wait the moment it exits; a zombie still there a second
// later is an orphan nobody waits for, and the reaper waits for that pid.
const reapGrace = time.Second

// zombieChildren returns the pids under procRoot (a /proc) whose state is Z
// and whose parent is ppid, in ascending order.
func zombieChildren(procRoot string, ppid int) []int {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil // no /proc: nothing to reap that can be found
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue // exited and reaped meanwhile
		}
		state, parent, ok := parseStat(b)
		if ok && state == 'Z' && parent == ppid {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

// parseStat returns the state and parent pid from a /proc/PID/stat line,
// "pid (comm) S ppid ...". comm may hold spaces and parentheses, so the
// fields are counted from the last ')'.
func parseStat(b []byte) (state byte, ppid int, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], ppid, true
}

// reapPass reaps every zombie that was also a zombie in the previous pass
// (seen) and returns the zombies to look at again next pass.
func reapPass(seen map[int]bool, zombies []int, wait4 func(pid int) (int, error)) (next map[int]bool, reaped int) {
	next = make(map[int]bool)
	for _, pid := range zombies {
		if !seen[pid] {
			next[pid] = true
			continue
		}
		if got, err := wait4(pid); err == nil && got == pid {
			reaped++
		}
	}
	return next, reaped
}

// reap runs until stop closes: on every SIGCHLD, and again reapGrace after
// a pass that found zombies, it reaps orphaned zombies.
func (m *Machine) reap(sigchld <-chan os.Signal, stop <-chan struct{}) {
	proc := m.cfg.path("/proc")
	self := m.cfg.Getpid()
	seen := map[int]bool{}
	var again <-chan time.Time
	for {
		select {
		case <-stop:
			return
		case <-sigchld:
		case <-again:
		}
		seen, _ = reapPass(seen, zombieChildren(proc, self), m.cfg.Wait4)
		again = nil
		if len(seen) > 0 {
			again = time.After(reapGrace)
		}
	}
}
