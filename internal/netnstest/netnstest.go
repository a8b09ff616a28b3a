// Package netnstest gives tests their own network namespaces, and skips
// (or, under CI=true, fails) tests whose kernel features are missing.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
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

var seq atomic.Int64

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
	name := fmt.Sprintf("sluice-%d-%d", os.Getpid(), seq.Add(1))
	_ = exec.Command("ip", "netns", "del", name).Run() // a leftover of the same name, if any
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
