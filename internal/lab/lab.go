// Package lab builds a router lab out of network namespaces on this Linux
// host: an "internet" host, the router that runs sluice, and two LAN
// clients behind a switch.
//
//	internet (eth0 81.0.0.1/24, 2a00:1::1/64; also 93.184.216.34, 1.1.1.1,
//	          8.8.8.8, 2606:4700::1 on lo)
//	   |
//	router   eth0 81.0.0.2/24, 2a00:1::2/64   (wan)
//	         eth1 192.168.1.1/24, fd00:53:1::1/64   (lan)
//	   |
//	switch   (a bridge)
//	   |              |
//	lan1 .10, ::10   lan2 .11, ::11
//
// The internet addresses are global-looking on purpose: documentation
// ranges are special-purpose, and a correct router drops them as sources on
// its uplink. They exist only inside the namespaces.
package lab

import (
	_ "embed"
	"fmt"
	"os/exec"
	"strings"
)

//go:embed lab.yaml
var labPolicy []byte

// Policy returns the lab's policy: the built-in default's zones with a
// static uplink on the lab's addresses, a port forward to lan1 and an egress
// allowlist. The caller owns the slice.
func Policy() []byte { return append([]byte(nil), labPolicy...) }

// Addresses of the lab.
const (
	RouterWAN4   = "81.0.0.2"
	RouterWAN6   = "2a00:1::2"
	InternetWAN4 = "81.0.0.1"
	InternetWAN6 = "2a00:1::1"
	RouterLAN4   = "192.168.1.1"
	RouterLAN6   = "fd00:53:1::1"
	LAN1v4       = "192.168.1.10"
	LAN1v6       = "fd00:53:1::10"
	LAN2v4       = "192.168.1.11"
	LAN2v6       = "fd00:53:1::11"
)

// InternetHosts are extra addresses of the internet namespace.
var InternetHosts = []string{"93.184.216.34", "1.1.1.1", "8.8.8.8", "2606:4700::1"}

// Lab names the namespaces of one lab. Namespaces outlive processes: Down
// removes them, and Up removes any left behind under the same prefix first.
type Lab struct {
	Prefix                               string
	Internet, Router, Switch, LAN1, LAN2 string
}

// New names a lab's namespaces with prefix (e.g. "sluice-lab").
func New(prefix string) *Lab {
	return &Lab{
		Prefix:   prefix,
		Internet: prefix + "-inet",
		Router:   prefix + "-router",
		Switch:   prefix + "-sw",
		LAN1:     prefix + "-lan1",
		LAN2:     prefix + "-lan2",
	}
}

func (l *Lab) namespaces() []string {
	return []string{l.Internet, l.Router, l.Switch, l.LAN1, l.LAN2}
}

// Up creates the lab. On failure it removes what it made.
func (l *Lab) Up() error {
	l.Down()
	steps := [][]string{}
	for _, ns := range l.namespaces() {
		steps = append(steps, []string{"ip", "netns", "add", ns})
		steps = append(steps, l.in(ns, "ip", "link", "set", "lo", "up"))
		// No duplicate address detection, set before any link exists so
		// that every link inherits it: addresses, link-local ones included,
		// are usable at once (a tentative link-local breaks neighbour
		// discovery for forwarded packets).
		steps = append(steps,
			l.in(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"),
			l.in(ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"),
		)
	}
	link := func(a, an, b, bn string) {
		steps = append(steps,
			[]string{"ip", "link", "add", "tmp-" + an, "netns", a, "type", "veth", "peer", "name", "tmp-" + bn, "netns", b},
			l.in(a, "ip", "link", "set", "tmp-"+an, "name", an),
			l.in(b, "ip", "link", "set", "tmp-"+bn, "name", bn),
		)
	}
	link(l.Internet, "eth0", l.Router, "eth0")
	link(l.Router, "eth1", l.Switch, "r")
	link(l.LAN1, "eth0", l.Switch, "l1")
	link(l.LAN2, "eth0", l.Switch, "l2")
	steps = append(steps,
		l.in(l.Switch, "ip", "link", "add", "br0", "type", "bridge"),
		l.in(l.Switch, "ip", "link", "set", "br0", "up"),
	)
	for _, port := range []string{"r", "l1", "l2"} {
		steps = append(steps, l.in(l.Switch, "ip", "link", "set", port, "master", "br0"), l.in(l.Switch, "ip", "link", "set", port, "up"))
	}
	addr := func(ns, dev string, addrs ...string) {
		for _, a := range addrs {
			steps = append(steps, l.in(ns, "ip", "addr", "add", a, "dev", dev, "nodad"))
		}
		steps = append(steps, l.in(ns, "ip", "link", "set", dev, "up"))
	}
	addr(l.Internet, "eth0", InternetWAN4+"/24", InternetWAN6+"/64")
	for _, h := range InternetHosts {
		bits := "/32"
		if strings.Contains(h, ":") {
			bits = "/128"
		}
		steps = append(steps, l.in(l.Internet, "ip", "addr", "add", h+bits, "dev", "lo"))
	}
	steps = append(steps, l.in(l.Internet, "ip", "-6", "route", "add", "fd00:53:1::/64", "via", RouterWAN6))
	addr(l.Router, "eth0", RouterWAN4+"/24", RouterWAN6+"/64")
	addr(l.Router, "eth1", RouterLAN4+"/24", RouterLAN6+"/64")
	steps = append(steps,
		l.in(l.Router, "ip", "route", "add", "default", "via", InternetWAN4),
		l.in(l.Router, "ip", "-6", "route", "add", "default", "via", InternetWAN6),
		l.in(l.Router, "sysctl", "-qw", "net.ipv4.ip_forward=1"),
		l.in(l.Router, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"),
		// sluice does the reverse-path check itself, in nftables.
		l.in(l.Router, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"),
		l.in(l.Router, "sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"),
	)
	for _, c := range []struct{ ns, v4, v6 string }{{l.LAN1, LAN1v4, LAN1v6}, {l.LAN2, LAN2v4, LAN2v6}} {
		addr(c.ns, "eth0", c.v4+"/24", c.v6+"/64")
		steps = append(steps,
			l.in(c.ns, "ip", "route", "add", "default", "via", RouterLAN4),
			l.in(c.ns, "ip", "-6", "route", "add", "default", "via", RouterLAN6),
		)
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			l.Down()
			return fmt.Errorf("lab up: %s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// in returns the argv that runs a command inside namespace ns.
func (l *Lab) in(ns string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}

// Command returns a command that runs inside namespace ns.
func (l *Lab) Command(ns string, argv ...string) *exec.Cmd {
	a := l.in(ns, argv...)
	return exec.Command(a[0], a[1:]...)
}

// Down deletes the lab's namespaces; ones that do not exist are fine.
func (l *Lab) Down() {
	for _, ns := range l.namespaces() {
		_ = exec.Command("ip", "netns", "del", ns).Run() // absent is the goal
	}
}
