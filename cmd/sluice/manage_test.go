package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicefw/sluice/internal/lab"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// tmux drives terminal programs the way an operator does: keys in, screen
// out. Each test gets its own server socket, killed when it ends.
type tmux struct {
	t      *testing.T
	socket string
}

func newTmux(t *testing.T) *tmux {
	t.Helper()
	_, err := exec.LookPath("tmux")
	netnstest.Require(t, err == nil, "needs tmux")
	tm := &tmux{t: t, socket: netnstest.Name("tmux")}
	t.Cleanup(func() { exec.Command("tmux", "-L", tm.socket, "kill-server").Run() })
	return tm
}

func (tm *tmux) run(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", tm.socket}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// start opens a window of 120x40 running argv.
func (tm *tmux) start(name string, argv ...string) {
	tm.t.Helper()
	tm.run(append([]string{"new-session", "-d", "-s", name, "-x", "120", "-y", "40"}, strings.Join(quoteAll(argv), " "))...)
	tm.run("set-option", "-t", name, "remain-on-exit", "on")
}

func quoteAll(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return out
}

func (tm *tmux) keys(name string, keys ...string) {
	tm.t.Helper()
	tm.run(append([]string{"send-keys", "-t", name}, keys...)...)
}

func (tm *tmux) screen(name string) string {
	tm.t.Helper()
	return tm.run("capture-pane", "-p", "-t", name)
}

// wait returns the screen once it contains every one of want, and fails
// the test with the last screen after 15 s.
func (tm *tmux) wait(name string, want ...string) string {
	tm.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := tm.screen(name)
		missing := ""
		for _, w := range want {
			if !strings.Contains(s, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return s
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("window %s never showed %q; the screen:\n%s", name, missing, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mgmtPolicy is the lab policy with the echo service on the internet
// allowed, so a connection can stay open while the test looks at it.
func mgmtPolicy() string {
	return strings.Replace(string(lab.Policy()), "ports: [tcp/80, tcp/443]}", "ports: [tcp/80, tcp/443, tcp/7]}", 1)
}

// TestManagementEndToEnd runs sluice run in a lab router with SSH and the
// recovery console, and manages it with the real OpenSSH client under tmux:
// the TUI shows a live connection; a commit that is not confirmed rolls
// back in the kernel; a commit that would cut the session is refused; a
// wrong key and a password are refused; the console works on a pty.
func TestManagementEndToEnd(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, tool := range []string{"ssh", "ssh-keygen", "socat", "nft"} {
		_, err := exec.LookPath(tool)
		netnstest.Require(t, err == nil, "needs %s", tool)
	}
	tm := newTmux(t)
	bin := sluiceBinary(t)
	dir := t.TempDir()
	l := lab.New(netnstest.Name("mgmt"))
	if err := l.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Down)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Serve(ctx)

	for _, k := range []string{"admin", "stranger"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", k+"@test", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	st := filepath.Join(dir, "state")
	if out, err := exec.Command(bin, "key", "add", "--state", st, filepath.Join(dir, "admin.pub")).CombinedOutput(); err != nil {
		t.Fatalf("sluice key add: %v\n%s", err, out)
	}
	config := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(config, []byte(mgmtPolicy()), 0o644); err != nil {
		t.Fatal(err)
	}

	// The serial console: socat makes a pty and relays it to a tmux
	// window, as a terminal emulator on a serial line would.
	tty := filepath.Join(dir, "ttyS0")
	tm.start("console", "socat", "STDIO,rawer", "PTY,link="+tty)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(tty); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("socat made no pty at %s:\n%s", tty, tm.screen("console"))
		}
	}

	daemon := l.Command(l.Router, bin, "run", "--config", config, "--state", st, "--ssh", ":22",
		"--console", tty, "--confirm", "4s", "--check", "1s", "--metrics", ":9100")
	out := &syncBuffer{}
	daemon.Stdout, daemon.Stderr = out, out
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		daemon.Process.Signal(os.Interrupt)
		daemon.Wait()
		if t.Failed() {
			t.Logf("sluice run's output:\n%s", out.String())
		}
	})
	// SSH listens once the policy is in force.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), "ssh: listening"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sluice run did not apply its policy:\n%s", out.String())
		}
	}

	sshArgs := func(key string, extra ...string) []string {
		return append([]string{"ip", "netns", "exec", l.LAN1, "ssh", "-F", "/dev/null",
			"-i", filepath.Join(dir, key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
			"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5"}, extra...)
	}
	ssh := func(stdin string, args ...string) (string, error) {
		argv := append(sshArgs("admin", "-o", "BatchMode=yes", lab.RouterLAN4), args...)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdin = strings.NewReader(stdin)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}

	// A live connection from lan1 to the internet's echo server, held
	// open while the Flows page is looked at.
	echo := l.Command(l.LAN1, "nc", "93.184.216.34", "7")
	echoIn, err := echo.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := echo.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { echoIn.Close(); echo.Process.Kill(); echo.Wait() }()
	fmt.Fprintln(echoIn, "hello")

	// Metrics answer on the box itself; the lan may not reach them, as
	// the policy's services do not include metrics.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, err := l.Command(l.Router, "curl", "-sS", "-m", "2", "http://127.0.0.1:9100/metrics").CombinedOutput()
		if err == nil && strings.Contains(string(b), "sluice_rule_packets_total{") && strings.Contains(string(b), "sluice_policy_version 0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics on the router: %v\n%.2000s", err, b)
		}
	}
	if b, err := l.Command(l.LAN1, "curl", "-sS", "-m", "2", "http://192.168.1.1:9100/metrics").CombinedOutput(); err == nil {
		t.Errorf("lan1 reached the metrics, which the policy does not serve to lan:\n%.500s", b)
	}

	// A denied connection is logged with the rule that dropped it.
	l.Command(l.LAN1, "curl", "-sS", "-m", "1", "http://1.1.1.1/").Run()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		logged := false
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, "drop: tcp 192.168.1.10:") && strings.Contains(line, "-> 1.1.1.1:80") &&
				strings.Contains(line, " in eth1 by r") && strings.HasSuffix(line, " lan egress default deny") {
				logged = true
			}
		}
		if logged {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no drop logged for lan1's connection to 1.1.1.1:80:\n%s", out.String())
		}
	}

	// Log in with the key: the TUI opens on the overview, and the Flows
	// page shows the echo connection.
	tm.start("tui", sshArgs("admin", "-t", lab.RouterLAN4)...)
	tm.wait("tui", "Overview", "sluice-lab", "admin@test (admin)")
	tm.keys("tui", "2")
	tm.wait("tui", "93.184.216.34:7", "ESTABLISHED")

	// A commit that would drop this very session is refused, naming the
	// rule, and nothing changes in the kernel.
	noSSH := strings.Replace(mgmtPolicy(), "services: [ssh, dns, ping]", "services: [dns, ping]", 1)
	got, err := ssh(noSSH, "policy", "commit", "--why", "tidy")
	if err == nil || !strings.Contains(got, "would drop your session tcp 192.168.1.10:") || !strings.Contains(got, "lan inbound deny") {
		t.Errorf("lockout commit: %v\n%s", err, got)
	}

	// A commit that is not confirmed: its rule is in the kernel, the TUI
	// counts down, and after the confirm window the old ruleset is back.
	withDHCP := strings.Replace(mgmtPolicy(), "services: [ssh, dns, ping]", "services: [ssh, dns, ping, dhcp]", 1)
	if got, err := ssh(withDHCP, "policy", "commit", "--why", "'serve dhcp'"); err != nil || !strings.Contains(got, "committed v1") {
		t.Fatalf("commit: %v\n%s", err, got)
	}
	ruleset := func() string {
		b, err := l.Command(l.Router, "nft", "list", "table", "inet", "sluice").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list table inet sluice: %v\n%s", err, b)
		}
		return string(b)
	}
	if rs := ruleset(); !strings.Contains(rs, "lan service dhcp") {
		t.Errorf("after the commit the kernel has no dhcp service rule:\n%s", rs)
	}
	tm.wait("tui", "commit v1 by admin@test", "rolls back to v0")
	deadline := time.Now().Add(15 * time.Second)
	for strings.Contains(ruleset(), "lan service dhcp") {
		if time.Now().After(deadline) {
			t.Fatalf("the unconfirmed commit is still in the kernel 15 s after its 4 s window")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got, _ := ssh("", "audit"); !strings.Contains(got, "sluice  rollback  v1 was not confirmed within 4s") {
		t.Errorf("audit log after the lapse:\n%s", got)
	}

	// A commit that is confirmed stays.
	if got, err := ssh(withDHCP, "policy", "commit", "--why", "'serve dhcp'"); err != nil || !strings.Contains(got, "committed v2") {
		t.Fatalf("commit: %v\n%s", err, got)
	}
	if got, err := ssh("", "confirm"); err != nil || got != "confirmed v2\n" {
		t.Fatalf("confirm: %v\n%s", err, got)
	}
	time.Sleep(5 * time.Second)
	if rs := ruleset(); !strings.Contains(rs, "lan service dhcp") {
		t.Errorf("the confirmed commit is gone from the kernel:\n%s", rs)
	}

	// Refused logins: an unknown key, and a password.
	for name, argv := range map[string][]string{
		"stranger's key": sshArgs("stranger", "-o", "BatchMode=yes", lab.RouterLAN4, "status"),
		"password":       sshArgs("admin", "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive", lab.RouterLAN4, "status"),
	} {
		b, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 255 || !strings.Contains(string(b), "Permission denied") {
			t.Errorf("%s: %v\n%s", name, err, b)
		}
	}
	if got, _ := ssh("", "audit"); !strings.Contains(got, "login-failed") {
		t.Errorf("audit log has no failed login:\n%s", got)
	}

	// The serial console: status, then a rollback to the built-in
	// default... here, to the --config policy (version 0).
	tm.keys("console", "Enter")
	tm.wait("console", "sluice recovery console", "policy v2")
	tm.keys("console", "2", "Enter")
	tm.wait("console", "eth1", "192.168.1.1/24")
	tm.keys("console", "3", "Enter")
	tm.wait("console", "v2")
	tm.keys("console", "1", "Enter")
	tm.keys("console", "y", "Enter")
	deadline = time.Now().Add(15 * time.Second)
	for !strings.Contains(func() string { g, _ := ssh("", "status"); return g }(), "policy   v1 by") {
		if time.Now().After(deadline) {
			g, _ := ssh("", "status")
			t.Fatalf("the console's rollback to v1 did not take:\n%s\nconsole:\n%s", g, tm.screen("console"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got, _ := ssh("", "audit"); !strings.Contains(got, "console  rollback  to v1") {
		t.Errorf("audit log after the console's rollback:\n%s", got)
	}
}
