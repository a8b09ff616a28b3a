// Package netnstest gives tests their own network namespaces, and skips
// (or, under CI=true, fails) tests whose kernel features are missing.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Require skips the test with the reason when ok is false; under CI=true it
// fails instead, because CI runs as root and must run every kernel test.
func Require(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	reason := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and a kernel test cannot run: %s", reason)
	}
	t.Skip(reason)
}

// RequireRoot requires root and the ip and nft tools.
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root to make network namespaces")
	for _, tool := range []string{"ip", "nft"} {
		_, err := exec.LookPath(tool)
		Require(t, err == nil, "needs the %s tool (make deps installs it)", tool)
	}
}

var (
	seq   atomic.Int64
	sweep sync.Once
)

// namePrefix starts the name of every namespace a test makes, followed by
// the test process's ID, so that namespaces a killed test run left behind
// can be told apart and removed.
const namePrefix = "sluicet-"

// Name returns a namespace name unique to this process, tag and call, such
// as sluicet-4242-lab-3. The first call also deletes the namespaces earlier
// test processes, no longer running, left behind.
func Name(tag string) string {
	sweep.Do(sweepStale)
	return fmt.Sprintf("%s%d-%s-%d", namePrefix, os.Getpid(), tag, seq.Add(1))
}

// sweepStale deletes namespaces named by Name whose process has ended.
func sweepStale() {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return // no namespaces at all
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), namePrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // still running
		}
		_ = exec.Command("ip", "netns", "del", e.Name()).Run() // best effort: a leftover
	}
}

// NS is a network namespace that exists for one test.
type NS struct {
	Name string
}

// New makes a namespace with a name unique to this process and test, with
// loopback up, and deletes it when the test ends. A namespace left behind
// by an earlier run of the same name is deleted first.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	name := Name("ns")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Path is the namespace's file, for setns or nftables.WithNetNSFd.
func (ns *NS) Path() string { return "/run/netns/" + ns.Name }

// Open returns a file descriptor of the namespace, closed when the test
// ends.
func (ns *NS) Open(t testing.TB) int {
	t.Helper()
	f, err := os.Open(ns.Path())
	if err != nil {
		t.Fatalf("open netns %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// Run runs a command inside the namespace and returns its standard output;
// a failure fails the test.
func (ns *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := ns.Command(name, args...).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("%s %s in netns %s: %v: %s", name, strings.Join(args, " "), ns.Name, err, msg)
	}
	return string(out)
}

// Command returns a command that runs inside the namespace.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}
