package appliance

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name      string
		line      string
		wantState byte
		wantPPID  int
		wantOK    bool
	}{
		{"zombie", "312 (mke2fs) Z 1 312 312 0 -1 4227084 0 0", 'Z', 1, true},
		{"running", "1 (sluice) S 0 1 1 0 -1 4194560", 'S', 0, true},
		{"comm with parens and spaces", "77 (a) Z 9 (b)) Z 1 77 77", 'Z', 1, true},
		{"truncated", "77 (x) Z", 0, 0, false},
		{"garbage", "no parens here", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, ppid, ok := parseStat([]byte(tc.line))
			if state != tc.wantState || ppid != tc.wantPPID || ok != tc.wantOK {
				t.Errorf("parseStat = %q, %d, %v; want %q, %d, %v", state, ppid, ok, tc.wantState, tc.wantPPID, tc.wantOK)
			}
		})
	}
}

func TestZombieChildren(t *testing.T) {
	k := newFakeKernel(t)
	k.file("/proc/1/stat", "1 (sluice) S 0 1 1 0")
	k.file("/proc/40/stat", "40 (sh) Z 1 40 40 0")
	k.file("/proc/41/stat", "41 (sh) Z 40 40 40 0") // its parent's, not ours
	k.file("/proc/9/stat", "9 (orphan) Z 1 9 9 0")
	k.file("/proc/50/stat", "50 (daemon) S 1 50 50 0")
	k.file("/proc/self/stat", "1 (sluice) S 0 1 1 0")
	k.file("/proc/cmdline", "quiet")
	got := zombieChildren(k.root+"/proc", 1)
	if diff := cmp.Diff([]int{9, 40}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestReapPass(t *testing.T) {
	var waited []int
	wait4 := func(pid int) (int, error) { waited = append(waited, pid); return pid, nil }

	// First sight: nothing reaped, a waiting os/exec caller gets its chance.
	seen, n := reapPass(map[int]bool{}, []int{9, 40}, wait4)
	if n != 0 || len(waited) != 0 {
		t.Errorf("first pass reaped %v", waited)
	}
	// A grace period later 40 was reaped by its waiter; 9 is an orphan.
	// 12 is new and waits its turn.
	seen, n = reapPass(seen, []int{9, 12}, wait4)
	if n != 1 || !cmp.Equal(waited, []int{9}) {
		t.Errorf("second pass reaped %v (n=%d), want [9]", waited, n)
	}
	if diff := cmp.Diff(map[int]bool{12: true}, seen); diff != "" {
		t.Errorf("still watched (-want +got):\n%s", diff)
	}
}
