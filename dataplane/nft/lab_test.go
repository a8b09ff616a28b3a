package nft

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/internal/lab"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// labRouter brings up a lab with policy src applied on its router, and
// returns the lab, the compiled program and a connection to the router's
// nf_tables. (internal/labtest does the same for other packages; it cannot
// serve this one, whose tests it would import.)
func labRouter(t *testing.T, src []byte) (*lab.Lab, *policy.Program, *Conn) {
	t.Helper()
	netnstest.RequireRoot(t)
	l := lab.New(netnstest.Name("lab"))
	if err := l.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Down)
	prog := compileSource(t, "lab.yaml", src)
	rs, err := Build(prog, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn, _ := dialNetns(t, l.Router, time.Minute)
	if err := Apply(conn, rs); err != nil {
		t.Fatal(err)
	}
	return l, prog, conn
}

// serveHTTP serves "hello from NAME" on addr inside namespace ns until the
// test ends.
func serveHTTP(t *testing.T, ns, addr, name string) {
	t.Helper()
	ln, err := lab.Listen(ns, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", name)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
}

// acceptTCP listens on addr in ns and accepts (and closes) connections until
// the test ends.
func acceptTCP(t *testing.T, ns, addr string) {
	t.Helper()
	ln, err := lab.Listen(ns, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
}

// counterDelta runs f and returns how many packets each rule's counter
// counted meanwhile, by rule name.
func counterDelta(t *testing.T, conn *Conn, prog *policy.Program, f func()) map[string]uint64 {
	t.Helper()
	if _, err := conn.Counters(true); err != nil {
		t.Fatal(err)
	}
	f()
	after, err := conn.Counters(true)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, r := range prog.Rules {
		if n := after[string(r.ID)]; n > 0 {
			out[r.Name] += n
		}
	}
	return out
}

func run(l *lab.Lab, ns string, argv ...string) (string, error) {
	out, err := l.Command(ns, argv...).CombinedOutput()
	return string(out), err
}

// TestLabTraffic sends real traffic with real tools through a router running
// the lab policy, and checks what passes, what does not, and which rule's
// counter says why.
func TestLabTraffic(t *testing.T) {
	for _, tool := range []string{"curl", "ping"} {
		_, err := exec.LookPath(tool)
		netnstest.Require(t, err == nil, "needs %s (make deps installs it)", tool)
	}
	l, prog, conn := labRouter(t, lab.Policy())
	serveHTTP(t, l.Internet, "93.184.216.34:80", "the internet")
	serveHTTP(t, l.Internet, "[2606:4700::1]:80", "the internet")
	serveHTTP(t, l.Internet, "1.1.1.1:80", "a resolver's web page")
	serveHTTP(t, l.LAN1, ":80", "lan1")
	acceptTCP(t, l.Router, ":22")
	acceptTCP(t, l.Router, ":2323")

	curl := func(ns, url string) (string, error) {
		return run(l, ns, "curl", "-sS", "--max-time", "2", url)
	}
	tests := []struct {
		name     string
		ns       string
		argv     []string
		wantOK   bool
		wantRule string // the rule whose counter must move
	}{
		{"allowed egress v4", l.LAN1, []string{"curl", "-sS", "--max-time", "2", "http://93.184.216.34/"}, true, "lan egress web"},
		{"allowed egress v6", l.LAN1, []string{"curl", "-sS", "--max-time", "2", "http://[2606:4700::1]/"}, true, "lan egress web"},
		{"denied egress", l.LAN1, []string{"curl", "-sS", "--max-time", "1", "http://1.1.1.1/"}, false, "lan egress default deny"},
		{"ping allowed by its entry", l.LAN2, []string{"ping", "-c1", "-W1", "8.8.8.8"}, true, "lan egress ping"},
		{"ping v6", l.LAN2, []string{"ping", "-6", "-c1", "-W1", "2606:4700::1"}, true, "lan egress ping"},
		{"port forward", l.Internet, []string{"curl", "-sS", "--max-time", "2", "http://81.0.0.2:8080/"}, true, "port-forward web"},
		{"ssh from lan", l.LAN1, []string{"curl", "-sS", "--max-time", "1", "telnet://192.168.1.1:22"}, true, "lan service ssh"},
		{"undeclared port from lan", l.LAN1, []string{"curl", "-sS", "--max-time", "1", "telnet://192.168.1.1:2323"}, false, "lan inbound deny"},
		{"ssh from wan", l.Internet, []string{"curl", "-sS", "--max-time", "1", "telnet://81.0.0.2:22"}, false, "wan inbound deny"},
		{"wan cannot start connections inward", l.Internet, []string{"ping", "-c1", "-W1", "192.168.1.10"}, false, "forward deny"},
	}
	// The internet knows no route to the lan's private prefix; give it one,
	// as a hostile neighbour on the uplink would.
	if out, err := run(l, l.Internet, "ip", "route", "add", "192.168.1.0/24", "via", lab.RouterWAN4); err != nil {
		t.Fatalf("route add: %v %s", err, out)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out string
			var err error
			delta := counterDelta(t, conn, prog, func() { out, err = run(l, tc.ns, tc.argv...) })
			// A telnet:// URL that connects and is closed by the server
			// counts as reached.
			reached := err == nil || strings.Contains(tc.argv[len(tc.argv)-1], "telnet://") && !strings.Contains(out, "timed out") && !strings.Contains(out, "Connection refused") && !strings.Contains(out, "Failed to connect")
			if reached != tc.wantOK {
				t.Errorf("%s: reached = %v, want %v (err %v)\n%s", strings.Join(tc.argv, " "), reached, tc.wantOK, err, out)
			}
			if delta[tc.wantRule] == 0 {
				t.Errorf("%s: counter of %q did not move; counters that did: %v", strings.Join(tc.argv, " "), tc.wantRule, delta)
			}
		})
	}
	if out, err := curl(l.Internet, "http://81.0.0.2:8080/"); err != nil || !strings.Contains(out, "hello from lan1") {
		t.Errorf("port forward answered %q (%v), want lan1's page", out, err)
	}

	// Spoofed sources, sent with ping -I from an address the sender adds
	// to itself.
	spoofs := []struct {
		name, ns, src, dst, rule string
	}{
		{"bogon from wan", l.Internet, "10.1.2.3", "81.0.0.2", "wan antispoof bogons"},
		{"lan's own prefix from wan", l.Internet, "192.168.1.77", "192.168.1.10", "wan antispoof bogons"},
		{"no route back through lan", l.LAN1, "8.8.4.4", "93.184.216.34", "lan antispoof reverse-path strict"},
		{"the box's address from lan", l.LAN1, "81.0.0.2", "93.184.216.34", "source is the box"},
	}
	for _, s := range spoofs {
		t.Run(s.name, func(t *testing.T) {
			if out, err := run(l, s.ns, "ip", "addr", "add", s.src+"/32", "dev", "lo"); err != nil {
				t.Fatalf("add %s: %v %s", s.src, err, out)
			}
			defer run(l, s.ns, "ip", "addr", "del", s.src+"/32", "dev", "lo")
			delta := counterDelta(t, conn, prog, func() {
				if out, err := run(l, s.ns, "ping", "-c1", "-W1", "-I", s.src, s.dst); err == nil {
					t.Errorf("a ping from spoofed %s to %s was answered:\n%s", s.src, s.dst, out)
				}
			})
			if delta[s.rule] == 0 {
				t.Errorf("counter of %q did not move; counters that did: %v", s.rule, delta)
			}
		})
	}
}

// A SYN flood from wan beyond the zone's limit is dropped by the limit rule,
// while the connections under it still reach the port forward.
func TestLabSYNLimit(t *testing.T) {
	src := strings.Replace(string(lab.Policy()), "limits: {syn: 2000/second, icmp: 1000/second}", "limits: {syn: 20/second, icmp: 5/second}", 1)
	l, prog, conn := labRouter(t, []byte(src))
	inj, err := l.Injector(l.Internet, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer inj.Close()
	routerMAC, err := lab.MAC(l.Router, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	const flood = 500
	delta := counterDelta(t, conn, prog, func() {
		for i := range flood {
			pk := policy.Packet{Src: netip.MustParseAddr("93.184.216.34"), Dst: netip.MustParseAddr(lab.RouterWAN4), Proto: policy.ProtoTCP,
				SrcPort: uint16(10000 + i), DstPort: 8080, TCPFlags: policy.TCPSyn}
			if err := inj.Send(frame(inj.MAC, routerMAC, pk, uint16(i))); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
	})
	limited, forwarded := delta["wan limit syn"], delta["port-forward web"]
	if limited < flood/2 || forwarded == 0 || forwarded > flood/4 || limited+forwarded != flood {
		t.Errorf("a %d-SYN flood against a 20/second limit: %d dropped by the limit, %d reached the port forward; want most limited, some through, none lost (%v)", flood, limited, forwarded, delta)
	}
}

// dialNetns connects to nf_tables in the named namespace and returns the
// connection and the namespace's descriptor, open until the test ends.
func dialNetns(t testing.TB, name string, timeout time.Duration) (*Conn, int) {
	t.Helper()
	fd := (&netnstest.NS{Name: name}).Open(t)
	conn, err := Dial(fd, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return conn, fd
}
