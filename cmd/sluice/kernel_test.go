package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicefw/sluice/internal/lab"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// sluiceBinary builds the binary into the test's temporary directory.
func sluiceBinary(t testing.TB) string {
	t.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("building the binary needs the go tool: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "sluice")
	if out, err := exec.Command(gotool, "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -trimpath -ldflags '-s -w' -o %s .: %v\n%s", bin, err, out)
	}
	return bin
}

// The compiled text is accepted by the real nft, for the built-in default
// and both examples.
func TestCompileAcceptedByNft(t *testing.T) {
	ns := netnstest.New(t)
	for _, file := range []string{"", homePolicy, officePolicy} {
		args := []string{"compile"}
		if file != "" {
			args = append(args, file)
		}
		got := runSluice(t, "", args...)
		if got.code != 0 {
			t.Fatalf("sluice %v: exit %d: %s", args, got.code, got.stderr)
		}
		cmd := ns.Command("nft", "-c", "-f", "-")
		cmd.Stdin = strings.NewReader(got.stdout)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("nft -c -f rejects sluice %v: %v\n%s", args, err, out)
		}
	}
}

func TestApplyCommand(t *testing.T) {
	bin := sluiceBinary(t)
	ns := netnstest.New(t)
	out, err := ns.Command(bin, "apply", officePolicy).CombinedOutput()
	if err != nil {
		t.Fatalf("sluice apply: %v\n%s", err, out)
	}
	mustMatch(t, "apply output", regexp.QuoteMeta(officePolicy)+`: applied table inet sluice: \d+ rules, \d+ sets holding \d+ ranges, in \S+\n`, string(out))
	before := ns.Run(t, "nft", "list", "ruleset")
	if !strings.Contains(before, `comment "`) || !strings.Contains(before, "chain egress_iot") {
		t.Fatalf("ruleset after apply lacks the office policy:\n%s", before)
	}

	// An invalid policy exits 1 and leaves the ruleset as it was.
	bad := writeFile(t, "bad.yaml", "interfaces: {lan: {device: eth1, zone: nowhere}}\nzones: {}\n")
	out, err = ns.Command(bin, "apply", bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("sluice apply of an invalid policy: %v, want exit 1\n%s", err, out)
	}
	if after := ns.Run(t, "nft", "list", "ruleset"); after != before {
		t.Errorf("a refused apply changed the ruleset")
	}
}

// sluice lab run builds the lab, serves the internet's web and DNS, runs the
// daemon in the router, and removes everything when interrupted.
func TestLabRunCommand(t *testing.T) {
	netnstest.RequireRoot(t)
	bin := sluiceBinary(t)
	prefix := netnstest.Name("labrun")
	cmd := exec.Command(bin, "lab", "run", "--prefix", prefix)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer exec.Command(bin, "lab", "down", "--prefix", prefix).Run()
	lan1 := prefix + "-lan1"
	// Wait for the daemon to say the policy is applied.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), "applied"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sluice lab run did not apply its policy:\n%s", out.String())
		}
	}
	page, err := exec.Command("ip", "netns", "exec", lan1, "curl", "-sS", "--max-time", "3", "http://93.184.216.34/").CombinedOutput()
	if err != nil || !strings.Contains(string(page), "hello from 93.184.216.34, 81.0.0.2:") {
		t.Errorf("lan1 fetching the internet's page through the masquerading router: %v\n%s", err, page)
	}
	// The query's socket is made inside lan1, so it cannot leave the lab.
	var c net.Conn
	if err := lab.Do(lan1, func() (err error) { c, err = net.Dial("udp", "8.8.8.8:53"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion("api.vendor.example.", dns.TypeA)
	dc := &dns.Conn{Conn: c}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if err := dc.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	resp, err := dc.ReadMsg()
	if err != nil || len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != "93.184.216.34" {
		t.Errorf("lan1 resolving api.vendor.example through the lab's DNS: %v %v", resp, err)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("sluice lab run after an interrupt: %v\n%s", err, out.String())
	}
	if list, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(list), prefix+"-") {
		t.Errorf("the lab's namespaces are still there:\n%s", list)
	}
}

// syncBuffer is a bytes.Buffer safe for a process's output goroutines and
// the test to use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sluice apply of a policy that no longer allows a live connection cuts it
// and leaves the others alone.
func TestApplyRevokesFlows(t *testing.T) {
	netnstest.RequireRoot(t)
	bin := sluiceBinary(t)
	l := lab.New(netnstest.Name("revoke"))
	if err := l.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Down)
	labPolicy := writeFile(t, "lab.yaml", string(lab.Policy()))
	if out, err := l.Command(l.Router, bin, "apply", labPolicy).CombinedOutput(); err != nil {
		t.Fatalf("sluice apply: %v\n%s", err, out)
	}
	for _, port := range []string{"80", "443"} {
		ln, err := lab.Listen(l.Internet, "tcp", "93.184.216.34:"+port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				t.Cleanup(func() { c.Close() })
			}
		}()
		var c net.Conn
		if err := lab.Do(l.LAN1, func() (err error) { c, err = net.DialTimeout("tcp", "93.184.216.34:"+port, 3*time.Second); return err }); err != nil {
			t.Fatalf("dial :%s: %v", port, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	only443 := writeFile(t, "only443.yaml", strings.Replace(string(lab.Policy()), "ports: [tcp/80, tcp/443]", "ports: [tcp/443]", 1))
	out, err := l.Command(l.Router, bin, "apply", only443).CombinedOutput()
	if err != nil {
		t.Fatalf("sluice apply: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^revoked tcp 192\.168\.1\.10:\d+ -> 93\.184\.216\.34:80$`).Match(out) || strings.Contains(string(out), ":443") {
		t.Errorf("sluice apply output does not show exactly the :80 connection revoked:\n%s", out)
	}
}

// With a DHCP uplink, the address the uplink holds is the box's own: it is
// in the box's address set, and applying again leaves the box's own
// connections alone.
func TestApplyDHCPUplinkAddresses(t *testing.T) {
	netnstest.RequireRoot(t)
	bin := sluiceBinary(t)
	l := lab.New(netnstest.Name("dhcp"))
	if err := l.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Down)
	apply := func() string {
		out, err := l.Command(l.Router, bin, "apply", homePolicy).CombinedOutput()
		if err != nil {
			t.Fatalf("sluice apply %s: %v\n%s", homePolicy, err, out)
		}
		return string(out)
	}
	apply()
	set, err := l.Command(l.Router, "nft", "list", "set", "inet", "sluice", "box4").Output()
	if err != nil || !strings.Contains(string(set), lab.RouterWAN4) {
		t.Errorf("box4 lacks the uplink's address %s (%v):\n%s", lab.RouterWAN4, err, set)
	}
	ln, err := lab.Listen(l.Internet, "tcp", "93.184.216.34:7777")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	var c net.Conn
	if err := lab.Do(l.Router, func() (err error) { c, err = net.DialTimeout("tcp", "93.184.216.34:7777", 3*time.Second); return err }); err != nil {
		t.Fatalf("the box's own connection: %v", err)
	}
	defer c.Close()
	if out := apply(); strings.Contains(out, "revoked") {
		t.Errorf("applying the same policy again revoked a connection:\n%s", out)
	}
}
