package nft

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/internal/lab"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// officeResolved is what the office example's DNS names resolved to, so
// that its name sets hold addresses for probes to hit; other.example
// matches no name and must stay out of every set.
var officeResolved = map[string][]netip.Addr{
	"api.vendor.example":     addrs("52.1.2.3", "2600:1f18::10"),
	"updates.vendor.example": addrs("52.1.2.4"),
	"pool.ntp.org":           addrs("162.159.200.1"),
	"2.pool.ntp.org":         addrs("162.159.200.123", "2606:4700:f1::123"),
	"deb.debian.org":         addrs("151.101.2.132", "2a04:4e42::644"),
	"security.debian.org":    addrs("151.101.66.132"),
	"other.example":          addrs("52.9.9.9", "2600:1f18::99"),
}

// shapedCorpus is the corpus of TestDifferentialShaped: the examples, then
// generated policies of four interfaces in three zones, one zone on two of
// them.
func shapedCorpus(t *testing.T, generated int) []diffPolicy {
	t.Helper()
	var corpus []diffPolicy
	for _, ex := range []struct {
		name string
		opts policy.Options
	}{
		{"office", policy.Options{Resolved: officeResolved}},
		{"home", labAddresses},
	} {
		src, err := os.ReadFile("../../examples/" + ex.name + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		corpus = append(corpus, diffPolicy{name: ex.name, src: src, opts: ex.opts})
	}
	rng := rand.New(rand.NewPCG(2026, 1126))
	for i := range generated {
		src, opts := generateShapedPolicy(rng)
		corpus = append(corpus, diffPolicy{name: fmt.Sprintf("shaped-%d", i), src: []byte(src), opts: opts})
	}
	return corpus
}

// generateShapedPolicy writes a random policy of four interfaces: the
// uplink (static or by DHCP, then with labAddresses as its lease), lan on
// eth1, dmz on eth3, and eth2 in lan or dmz, so that one zone always has two
// interfaces with prefixes of their own. Zones get random anti-spoof modes
// and sources, services, egress allowlists and forwards; port forwards lead
// into the two-interface zone, to both of its interfaces.
func generateShapedPolicy(rng *rand.Rand) (string, policy.Options) {
	var b strings.Builder
	var opts policy.Options
	second := pick(rng, "lan", "dmz") // the zone eth2 joins
	v6 := rng.IntN(3) > 0             // eth2 has an IPv6 prefix too
	b.WriteString("interfaces:\n")
	if rng.IntN(3) == 0 {
		b.WriteString("  wan: {device: eth0, zone: wan, addresses: [dhcp]}\n")
		opts = labAddresses
	} else {
		b.WriteString("  wan: {device: eth0, zone: wan, addresses: [81.0.0.2/24, \"2a00:1::2/64\"], gateway: [81.0.0.1, \"2a00:1::1\"]}\n")
	}
	b.WriteString("  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24, \"fd00:53:1::1/64\"]}\n")
	eth2v4, eth2v6, eth2host4, eth2host6 := "192.168.2.1/24", "fd00:53:2::1/64", "192.168.2.10", "fd00:53:2::10"
	if second == "dmz" {
		eth2v4, eth2v6, eth2host4, eth2host6 = "172.16.31.1/24", "fd00:53:31::1/64", "172.16.31.10", "fd00:53:31::10"
	}
	if v6 {
		fmt.Fprintf(&b, "  %s2: {device: eth2, zone: %s, addresses: [%s, %q]}\n", second, second, eth2v4, eth2v6)
	} else {
		fmt.Fprintf(&b, "  %s2: {device: eth2, zone: %s, addresses: [%s]}\n", second, second, eth2v4)
	}
	b.WriteString("  dmz: {device: eth3, zone: dmz, addresses: [172.16.30.1/24, \"fd00:53:30::1/64\"]}\n")

	sources := map[string][]string{
		"wan": {`[0.0.0.0/1, "2000::/3"]`},
		"lan": {`[192.168.1.0/24, 192.168.2.0/24, "fd00:53:1::/64", "fd00:53:2::/64"]`, `[192.168.0.0/16, "fd00:53::/32"]`, `[192.168.1.0/25, 192.168.2.128/25, "fd00:53:1::/64"]`},
		"dmz": {`[172.16.30.0/24, 172.16.31.0/24, "fd00:53:30::/63"]`, `[172.16.0.0/12, "fd00:53:30::/64"]`, `[172.16.30.0/25, "fd00:53:31::/64"]`},
	}
	b.WriteString("zones:\n")
	for _, z := range []string{"wan", "lan", "dmz"} {
		fmt.Fprintf(&b, "  %s:\n    antispoof: {reverse_path: %s, bogons: %s", z, pick(rng, "strict", "loose", "off"), pick(rng, "drop", "allow"))
		if rng.IntN(3) > 0 {
			fmt.Fprintf(&b, ", sources: %s", pick(rng, sources[z]...))
		}
		b.WriteString("}\n")
		fmt.Fprintf(&b, "    inbound: %s\n", pick(rng, "deny", "deny", "allow"))
		if z == "wan" && rng.IntN(2) == 0 {
			b.WriteString("    limits: {syn: 2000/second, icmp: 1000/second}\n") // generous: the test sends fast
		}
		var svcs []string
		for _, s := range []string{"ssh", "dns", "dhcp", "ntp", "ping", "tcp/8000-8010", "udp/5353"} {
			if rng.IntN(3) == 0 {
				svcs = append(svcs, s)
			}
		}
		if len(svcs) > 0 {
			fmt.Fprintf(&b, "    services: [%s]\n", strings.Join(svcs, ", "))
		}
		fmt.Fprintf(&b, "    egress:\n      default: %s\n", pick(rng, "allow", "deny"))
		if n := rng.IntN(5); n > 0 {
			b.WriteString("      allow:\n")
			for e := range n {
				to := pick(rng, `[93.184.216.0/24]`, `["2606:4700::/32"]`, `[1.1.1.1, 8.8.8.8, "2606:4700::1"]`, `[192.168.2.0/24, "fd00:53:2::/64"]`,
					`[172.16.30.0/24, "fd00:53:30::/64"]`, `[81.0.0.0/24, "2a00:1::/64"]`, `[172.16.31.128/25, 192.168.1.0/25]`, `[0.0.0.0/1, "2000::/3"]`)
				ports := pick(rng, `[tcp/80, tcp/443]`, `[udp/53, tcp/53]`, `[tcp/1000-2000]`, `[icmp/echo-request, icmpv6/echo-request]`, `[udp]`, `[any]`,
					`[tcp/8443-8445, udp/27000-27010]`, `[tcp/22]`)
				if rng.IntN(4) == 0 {
					fmt.Fprintf(&b, "        - {name: e%d, ports: %s}\n", e, ports)
				} else {
					fmt.Fprintf(&b, "        - {name: e%d, to: %s, ports: %s}\n", e, to, ports)
				}
			}
		}
	}
	b.WriteString("forward:\n  - {from: lan, to: wan}\n")
	for _, f := range [][2]string{{"lan", "dmz"}, {"dmz", "wan"}, {"wan", "dmz"}, {"dmz", "lan"}, {"wan", "lan"}} {
		if rng.IntN(2) == 0 {
			fmt.Fprintf(&b, "  - {from: %s, to: %s}\n", f[0], f[1])
		}
	}
	if rng.IntN(4) > 0 {
		b.WriteString("port_forwards:\n")
		fmt.Fprintf(&b, "  - {name: web, from: wan, port: tcp/8080, to: \"%s:80\"}\n", eth2host4)
		fmt.Fprintf(&b, "  - {name: games, from: wan, port: udp/27000-27010, to: %s}\n", pick(rng, "192.168.1.11", "172.16.30.11"))
		if v6 {
			fmt.Fprintf(&b, "  - {name: web6, from: wan, port: tcp/8443, to: \"[%s]:443\"}\n", eth2host6)
		}
		if rng.IntN(2) == 0 {
			b.WriteString("  - {name: admin, from: dmz, port: tcp/2222, to: \"192.168.1.10:22\"}\n")
		}
	}
	fmt.Fprintf(&b, "icmp: {essential: %s}\n", pick(rng, "allow", "allow", "deny"))
	return b.String(), opts
}

// shapedRouter is a router namespace built from a policy's interfaces:
// each device is one end of a veth pair whose other end, eth0, sits alone
// in a peer namespace. Peers have no addresses and IPv6 off, so the router
// hears nothing but the probes: no router solicitations, no multicast
// listener reports, no answers to its own neighbour discovery.
type shapedRouter struct {
	name string
	conn *Conn
	inj  []*lab.Injector    // by interface index in the Program
	mac  []net.HardwareAddr // the router's end of each interface
}

// uplinkGateway is the next hop a DHCP lease on prefix would give: the
// prefix's first host that is not the box.
func uplinkGateway(pfx netip.Prefix) netip.Addr {
	gw := pfx.Masked().Addr().Next()
	if gw == pfx.Addr() {
		gw = gw.Next()
	}
	return gw
}

// newShapedRouter makes the namespaces for prog and applies rs in the
// router. Everything is removed when the test ends.
func newShapedRouter(t *testing.T, prog *policy.Program, opts policy.Options, rs *Ruleset) *shapedRouter {
	t.Helper()
	base := netnstest.Name("shaped")
	r := &shapedRouter{name: base + "-r"}
	peers := make([]string, len(prog.Interfaces))
	for i := range peers {
		peers[i] = fmt.Sprintf("%s-p%d", base, i)
	}
	all := append([]string{r.name}, peers...)
	remove := func() {
		for _, ns := range all {
			_ = exec.Command("ip", "netns", "del", ns).Run() // absent is the goal
		}
	}
	remove()
	t.Cleanup(remove)

	var steps [][]string
	in := func(ns string, argv ...string) {
		steps = append(steps, append([]string{"ip", "netns", "exec", ns}, argv...))
	}
	for _, ns := range all {
		steps = append(steps, []string{"ip", "netns", "add", ns})
		in(ns, "ip", "link", "set", "lo", "up")
		// Set before any link exists, so that every link inherits it.
		in(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	for _, ns := range peers {
		in(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	// sluice does the reverse-path check itself, in nftables.
	in(r.name, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	for i, ifc := range prog.Interfaces {
		steps = append(steps, []string{"ip", "-n", r.name, "link", "add", ifc.Device, "type", "veth", "peer", "name", "eth0", "netns", peers[i]})
		pfxs := append(slices.Clone(ifc.Addresses), opts.Addresses[ifc.Name]...)
		for _, a := range pfxs {
			argv := []string{"ip", "-n", r.name, "addr", "add", a.String(), "dev", ifc.Device, "nodad"}
			if a.Addr().Is4() {
				argv = []string{"ip", "-n", r.name, "addr", "add", a.String(), "brd", "+", "dev", ifc.Device} // as netconf adds it
			}
			steps = append(steps, argv)
		}
		steps = append(steps, []string{"ip", "-n", r.name, "link", "set", ifc.Device, "up"}, []string{"ip", "-n", peers[i], "link", "set", "eth0", "up"})
		gws := slices.Clone(ifc.Gateways)
		if ifc.DHCP {
			for _, a := range opts.Addresses[ifc.Name] {
				gws = append(gws, uplinkGateway(a))
			}
		}
		for _, gw := range gws {
			steps = append(steps, []string{"ip", "-n", r.name, "route", "add", "default", "via", gw.String(), "dev", ifc.Device})
		}
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("shape router: %s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}

	var l lab.Lab // Injector only uses its arguments
	for i, ifc := range prog.Interfaces {
		inj, err := l.Injector(peers[i], "eth0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { inj.Close() })
		mac, err := lab.MAC(r.name, ifc.Device)
		if err != nil {
			t.Fatalf("mac of %s in %s: %v", ifc.Device, r.name, err)
		}
		r.inj, r.mac = append(r.inj, inj), append(r.mac, mac)
	}
	r.conn, _ = dialNetns(t, r.name, time.Minute)
	if err := Apply(r.conn, rs); err != nil {
		t.Fatal(err)
	}
	// Conntrack exists once a ruleset uses it.
	if out, err := exec.Command("ip", "netns", "exec", r.name, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0").CombinedOutput(); err != nil {
		t.Fatalf("nf_conntrack_tcp_loose: %v: %s", err, out)
	}
	return r
}

// probeSpace holds the addresses and ports probes of one policy are drawn
// from, all derived from its compiled program.
type probeSpace struct {
	prog        *policy.Program
	ifaceHosts  [][]netip.Addr // hosts of each interface's own prefixes, the box excluded
	box         []netip.Addr   // the box's own addresses
	zoneEdges   [][]netip.Addr // by zone: first, last and just outside its source prefixes
	special     []netip.Addr   // special-purpose and bogon samples
	linkLocal   []netip.Addr
	internet    []netip.Addr
	broadcast   []netip.Addr     // limited and subnet broadcasts, IPv4 network addresses
	subnetBcast []netip.Addr     // the box's IPv4 subnet broadcasts
	allowEdges  []netip.Addr     // first, last and just outside every allowlist prefix
	resolved    []netip.Addr     // what DNS names resolved to, matching or not
	pfTargets   []netip.Addr     // inside hosts of port forwards
	ports       []uint16         // edges of every port range, and common ports
	pfPorts     []uint16         // edges of port forward ranges
	ownLL       []netip.Addr     // by interface: the router's IPv6 link-local address on it
	prefixes    [][]netip.Prefix // by interface: its addresses, static and learned
	aimList     []aim
}

var (
	// specialSources are special-purpose samples the kernel lets reach
	// nftables. Left out on purpose: IPv6 multicast, loopback and
	// IPv4-mapped sources, which ip6_rcv_core drops before any hook.
	specialSources = addrs("10.1.2.3", "100.64.1.1", "172.16.5.5", "192.168.99.9", "192.0.0.9", "192.0.0.170", "192.0.2.44", "198.18.0.1",
		"198.51.100.7", "203.0.113.200", "240.0.0.1", "127.0.0.5", "0.1.2.3", "192.88.99.1",
		"2001:db8::1", "fc00::1", "fd12:3456::1", "100::1", "2001:2::1", "2001:4:112::1", "64:ff9b::1.2.3.4", "2002:c000:204::1", "2001::1", "2001:10::1")
	linkLocalAddrs = addrs("169.254.7.7", "169.254.0.0", "0.0.0.0", "fe80::1234", "fe80::1", "::")
	internetAddrs  = addrs("93.184.216.34", "93.184.216.35", "1.1.1.1", "8.8.8.8", "5.6.7.8", "81.0.0.1", "81.0.0.77",
		"2606:4700::1", "2606:4700::5", "2a00:1::1", "2a00:1::77", "2a03:2880::1", "2a00:2::1")
	commonPorts = []uint16{22, 53, 67, 80, 123, 443, 547, 5353, 8080}
)

// hostsOf returns a few addresses of pfx: its first (the IPv4 network
// address, the IPv6 subnet-router anycast address), the 1st, 2nd, 10th and
// 11th above it, and its last two.
func hostsOf(pfx netip.Prefix) []netip.Addr {
	r := prefixRange(pfx)
	out := []netip.Addr{r.lo, r.hi, r.hi.Prev()}
	a := r.lo
	for i := 1; i <= 11; i++ {
		if a = a.Next(); !pfx.Contains(a) {
			break
		}
		if i <= 2 || i >= 10 {
			out = append(out, a)
		}
	}
	return out
}

// edges returns the first and last address of pfx and those just
// outside it.
func edges(pfx netip.Prefix) []netip.Addr {
	r := prefixRange(pfx)
	out := []netip.Addr{r.lo, r.hi}
	for _, a := range []netip.Addr{r.lo.Prev(), r.hi.Next()} {
		if a.IsValid() && a.Is4() == r.lo.Is4() {
			out = append(out, a)
		}
	}
	return out
}

// newProbeSpace derives the probe space of prog, with the addresses opts
// gives interfaces and DNS names.
func newProbeSpace(prog *policy.Program, opts policy.Options) *probeSpace {
	s := &probeSpace{prog: prog, special: specialSources, linkLocal: linkLocalAddrs, internet: internetAddrs, ports: slices.Clone(commonPorts)}
	s.broadcast = addrs("255.255.255.255")
	for _, ifc := range prog.Interfaces {
		var hosts []netip.Addr
		s.prefixes = append(s.prefixes, append(slices.Clone(ifc.Addresses), opts.Addresses[ifc.Name]...))
		for _, a := range s.prefixes[len(s.prefixes)-1] {
			s.box = append(s.box, a.Addr())
			for _, h := range hostsOf(a.Masked()) {
				if h != a.Addr() {
					hosts = append(hosts, h)
				}
			}
			if a.Addr().Is4() {
				r := prefixRange(a.Masked())
				s.broadcast = append(s.broadcast, r.lo, r.hi)
				s.subnetBcast = append(s.subnetBcast, r.hi)
			}
		}
		s.ifaceHosts = append(s.ifaceHosts, hosts)
	}
	s.zoneEdges = make([][]netip.Addr, len(prog.Zones))
	for zi, z := range prog.Zones {
		if z.Sources >= 0 {
			for _, p := range prog.Rules[z.Sources].Sources {
				s.zoneEdges[zi] = append(s.zoneEdges[zi], edges(p)...)
			}
		}
	}
	addPorts := func(ps []policy.PortRange) {
		for _, p := range ps {
			if p.Proto != policy.ProtoTCP && p.Proto != policy.ProtoUDP {
				continue
			}
			for _, v := range []int{int(p.Lo), int(p.Hi), int(p.Lo) - 1, int(p.Hi) + 1} {
				if v >= 1 && v <= 65535 {
					s.ports = append(s.ports, uint16(v))
				}
			}
		}
	}
	for _, r := range prog.Rules {
		addPorts(r.Ports)
		for _, d := range r.To {
			if d.Name == "" {
				s.allowEdges = append(s.allowEdges, edges(d.Prefix)...)
			}
		}
	}
	for _, pf := range prog.PortForwards {
		addPorts([]policy.PortRange{pf.Port})
		for _, v := range []int{int(pf.Port.Lo), int(pf.Port.Hi), int(pf.Port.Lo) - 1, int(pf.Port.Hi) + 1} {
			if v >= 1 && v <= 65535 {
				s.pfPorts = append(s.pfPorts, uint16(v))
			}
		}
		s.pfTargets = append(s.pfTargets, pf.To.Addr())
		if pf.To.Port() != 0 {
			s.ports = append(s.ports, pf.To.Port())
		}
	}
	for _, as := range opts.Resolved {
		s.resolved = append(s.resolved, as...)
	}
	slices.SortFunc(s.resolved, netip.Addr.Compare) // map order must not change the probes
	slices.Sort(s.ports)
	s.ports = slices.Compact(s.ports)
	s.aimList = s.aims(opts)
	return s
}

// pickFamily picks an address of the family of like (or of any family when
// like is invalid) from pool; false when pool has none.
func pickFamily(rng *rand.Rand, like netip.Addr, pool []netip.Addr) (netip.Addr, bool) {
	var fit []netip.Addr
	for _, a := range pool {
		if !like.IsValid() || a.Is4() == like.Is4() {
			fit = append(fit, a)
		}
	}
	if len(fit) == 0 {
		return netip.Addr{}, false
	}
	return pick(rng, fit...), true
}

// source picks the source of a probe entering interface in.
func (s *probeSpace) source(rng *rand.Rand, in int) netip.Addr {
	for {
		var pool []netip.Addr
		switch c := rng.IntN(12); {
		case c < 5:
			pool = s.ifaceHosts[in] // a well-behaved client, so later rules get exercised
		case c == 5:
			for i, h := range s.ifaceHosts {
				if i != in {
					pool = append(pool, h...) // a spoof of another interface's prefix
				}
			}
		case c == 6:
			pool = s.box
		case c == 7:
			pool = s.zoneEdges[s.prog.Interfaces[in].Zone]
		case c == 8:
			pool = s.special
		case c == 9:
			pool = s.linkLocal
		default:
			pool = s.internet
		}
		if a, ok := pickFamily(rng, netip.Addr{}, pool); ok {
			return a
		}
	}
}

// destination picks a destination of src's family.
func (s *probeSpace) destination(rng *rand.Rand, in int, src netip.Addr) (netip.Addr, bool) {
	for range 20 {
		var pool []netip.Addr
		switch rng.IntN(10) {
		case 0, 1:
			pool = s.box
		case 2, 3:
			for _, h := range s.ifaceHosts {
				pool = append(pool, h...)
			}
			pool = append(pool, s.pfTargets...)
		case 4:
			pool = s.broadcast
		case 5, 6:
			pool = s.allowEdges
		case 7:
			pool = s.resolved
		case 8:
			pool = s.internet
		default:
			// The box's own link-local address, another host's and fe80::
			// (the link-local prefix's subnet-router anycast, the box's on
			// every interface): Linux sends the other host's back out the
			// link it came in by, and the ruleset drops it as link-local;
			// the evaluator knows which is the box's from
			// Options.LinkLocal.
			pool = addrs("169.254.1.1", "fe80::9", "fe80::")
			if ll := s.ownLL[in]; ll.IsValid() {
				pool = append(pool, ll)
			}
		}
		// Destinations in 0.0.0.0/8 and 127.0.0.0/8 are left out: Linux's
		// routing drops them as martians, and the ruleset's fib checks
		// take 127.255.255.255 for a broadcast of the box.
		if a, ok := pickFamily(rng, src, pool); ok && !(a.Is4() && (a.As4()[0] == 0 || a.As4()[0] == 127)) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// linkLocalOf is the IPv6 link-local address Linux gives an interface with
// hardware address mac (EUI-64).
func linkLocalOf(mac net.HardwareAddr) netip.Addr {
	if len(mac) != 6 {
		return netip.Addr{}
	}
	return netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 8: mac[0] ^ 2, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe, 13: mac[3], 14: mac[4], 15: mac[5]})
}

// aim is a rule worth aiming probes at: packets from an interface of its
// zone to its destinations, on the edges of its port ranges.
type aim struct {
	zone  int
	dsts  []netip.Addr
	ports []policy.PortRange // empty: any
}

// aims returns one aim per port forward, service and egress allowlist
// entry of prog.
func (s *probeSpace) aims(opts policy.Options) []aim {
	prog := s.prog
	var out []aim
	for i, pf := range prog.PortForwards {
		out = append(out, aim{zone: prog.Rules[prog.PortForwardRules[i]].Zone, dsts: s.box, ports: []policy.PortRange{pf.Port}})
	}
	var anywhere []netip.Addr
	for _, h := range s.ifaceHosts {
		anywhere = append(anywhere, h...)
	}
	anywhere = append(anywhere, s.internet...)
	for zi, z := range prog.Zones {
		for _, ri := range z.Services {
			out = append(out, aim{zone: zi, dsts: s.box, ports: prog.Rules[ri].Ports})
		}
		for _, ri := range z.Egress {
			r := prog.Rules[ri]
			a := aim{zone: zi, ports: r.Ports}
			for _, d := range r.To {
				if d.Name == "" {
					a.dsts = append(a.dsts, edges(d.Prefix)...)
					continue
				}
				a.dsts = append(a.dsts, s.resolved...) // those of other names too
			}
			if len(r.To) == 0 {
				a.dsts = anywhere
			}
			out = append(out, a)
		}
	}
	return out
}

// aimed returns a packet aimed at a random aim: a source that passes the
// zone's checks where the interface has one, a destination of the aim and
// a protocol and port on the edge of one of its ranges.
func (s *probeSpace) aimed(rng *rand.Rand) (policy.Packet, bool) {
	if len(s.aimList) == 0 {
		return policy.Packet{}, false
	}
	a := pick(rng, s.aimList...)
	in := pick(rng, s.prog.Zones[a.zone].Interfaces...)
	dst, ok := pickFamily(rng, netip.Addr{}, a.dsts)
	if !ok {
		return policy.Packet{}, false
	}
	src, ok := pickFamily(rng, dst, s.ifaceHosts[in])
	if !ok || rng.IntN(4) == 0 {
		if src, ok = pickFamily(rng, dst, append(slices.Clone(s.internet), s.special...)); !ok {
			return policy.Packet{}, false
		}
	}
	pk := policy.Packet{In: in, Src: src, Dst: dst}
	pr := policy.PortRange{}
	if len(a.ports) > 0 {
		pr = pick(rng, a.ports...)
	}
	if pr.Proto == 0 {
		pr.Proto = pick[uint8](rng, policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP)
		pr.Lo, pr.Hi = 1, 65535
		if pr.Proto == policy.ProtoICMP {
			pr.Lo, pr.Hi = 8, 8
		}
	}
	if pr.Proto == policy.ProtoICMP && dst.Is6() || pr.Proto == policy.ProtoICMPv6 && dst.Is4() {
		return policy.Packet{}, false
	}
	pk.Proto = pr.Proto
	v := pick(rng, int(pr.Lo), int(pr.Hi), int(pr.Lo)-1, int(pr.Hi)+1, int(pr.Lo), int(pr.Hi))
	switch pr.Proto {
	case policy.ProtoTCP, policy.ProtoUDP:
		pk.DstPort = uint16(min(max(v, 1), 65535))
		if pr.Proto == policy.ProtoTCP {
			pk.TCPFlags = policy.TCPSyn
		}
	default:
		pk.ICMPType = uint8(min(max(v, 0), 255))
	}
	return pk, true
}

// probe generates one packet: a quarter aimed at the policy's rules (see
// aimed), the rest from random sources to random destinations.
func (s *probeSpace) probe(rng *rand.Rand, seq int) probe {
	sport := uint16(30000 + seq%30000)
	pk, ok := policy.Packet{}, false
	if rng.IntN(4) == 0 {
		pk, ok = s.aimed(rng)
		if pk.Proto == policy.ProtoTCP || pk.Proto == policy.ProtoUDP {
			pk.SrcPort = sport
		}
	}
	if !ok {
		in := rng.IntN(len(s.prog.Interfaces))
		var src, dst netip.Addr
		for {
			src = s.source(rng, in)
			if dst, ok = s.destination(rng, in, src); ok {
				break
			}
		}
		pk = policy.Packet{In: in, Src: src, Dst: dst}
		dport := pick(rng, s.ports...)
		if len(s.pfPorts) > 0 && rng.IntN(3) == 0 {
			dport = pick(rng, s.pfPorts...)
		}
		randomTransport(rng, &pk, sport, dport, 5)
	}
	pk.State = policy.FirstState(&pk)
	ifc := s.prog.Interfaces[pk.In]
	p := probe{in: ifc.Name, pk: pk}
	p.text = fmt.Sprintf("proto %d %s:%d -> %s:%d in %s (%s) flags=%#x icmp=%d state=%s", pk.Proto, pk.Src, pk.SrcPort, pk.Dst, pk.DstPort, ifc.Name, ifc.Device, pk.TCPFlags, pk.ICMPType, pk.State)
	id := uint16(seq)
	p.frameF = func(srcMAC, dstMAC net.HardwareAddr) []byte { return frame(srcMAC, dstMAC, pk, id) }
	return p
}

// route returns the interface the shaped router sends dst out of: the
// longest of the interfaces' prefixes, or the interface with a default
// route of dst's family; false when there is none.
func (s *probeSpace) route(dst netip.Addr) (int, bool) {
	best, bits := -1, -1
	for i, ifc := range s.prog.Interfaces {
		for _, a := range s.prefixes[i] {
			if a.Masked().Contains(dst) && a.Bits() > bits {
				best, bits = i, a.Bits()
			}
		}
		if bits < 0 && (ifc.DHCP || slices.ContainsFunc(ifc.Gateways, func(g netip.Addr) bool { return g.Is4() == dst.Is4() })) {
			best = i
		}
	}
	return best, best >= 0
}

// martian reports packets Linux's IPv4 routing drops as martians, after
// prerouting and before the input and forward hooks: sources in 0.0.0.0/8
// (but to the limited broadcast), loopback and multicast sources and
// destinations in 0.0.0.0/8 or loopback.
func martian(pk *policy.Packet) bool {
	if !pk.Src.Is4() {
		return false
	}
	s, d := pk.Src.As4(), pk.Dst.As4()
	lbcast := pk.Dst == netip.AddrFrom4([4]byte{255, 255, 255, 255})
	return s[0] == 0 && !lbcast || s[0] == 127 || pk.Src.IsMulticast() || pk.Src == netip.AddrFrom4([4]byte{255, 255, 255, 255}) ||
		!lbcast && (d[0] == 0 || d[0] == 127)
}

// unseen reports probes whose fate Linux's routing decides before the
// input and forward hooks, where the evaluator has a rule of its own: no
// route, martians the evaluator does not already drop in prerouting, and a subnet
// broadcast source routed back out the interface it came in on (Linux
// checks the source of such a packet, as it would send a redirect, and
// drops it as a martian; the evaluator drops it too, by a later rule).
func (s *probeSpace) unseen(pk *policy.Packet, want policy.Decision) bool {
	if s.prog.Rules[want.Rule].Kind == policy.KindNoRoute {
		return true // Linux's routing drops it; the ruleset has no rule for it
	}
	if beforeRouting(s.prog, pk, want.Rule) {
		return false
	}
	if martian(pk) {
		return true
	}
	out, ok := s.route(pk.Dst)
	toBox := slices.Contains(s.box, pk.Dst) || slices.Contains(s.subnetBcast, pk.Dst) || pk.Dst == netip.AddrFrom4([4]byte{255, 255, 255, 255})
	return ok && out == pk.In && slices.Contains(s.subnetBcast, pk.Src) && !toBox
}

// beforeRouting reports whether the evaluator decides pk by a rule the
// ruleset runs in prerouting.
func beforeRouting(prog *policy.Program, pk *policy.Packet, ri int) bool {
	switch prog.Rules[ri].Kind {
	case policy.KindLocalSource, policy.KindBogons, policy.KindReversePath, policy.KindSources,
		policy.KindTCPFlags, policy.KindInvalid, policy.KindSYNLimit, policy.KindICMPLimit:
		return true
	case policy.KindLinkLocal:
		return pk.Src.IsUnspecified() || pk.Src.IsLinkLocalUnicast()
	}
	return false
}

// limitPacer spaces the packets that zones' SYN and echo request rate
// limits count, so that probes never exceed them: the evaluator, seeing one
// packet at a time, never does.
type limitPacer struct {
	prog *policy.Program
	next map[int]time.Time // by rule index: when the next packet may go
}

func newLimitPacer(prog *policy.Program) *limitPacer {
	return &limitPacer{prog: prog, next: map[int]time.Time{}}
}

// wait sleeps until pk may be sent without exceeding the limit of the
// zone it enters, if any limit counts it.
func (lp *limitPacer) wait(pk *policy.Packet) {
	z := lp.prog.Zones[lp.prog.Interfaces[pk.In].Zone]
	ri := -1
	switch {
	case pk.Proto == policy.ProtoTCP && pk.TCPFlags&(policy.TCPSyn|policy.TCPAck|policy.TCPRst|policy.TCPFin) == policy.TCPSyn:
		ri = z.SYNLimit
	case pk.Proto == policy.ProtoICMP && pk.ICMPType == 8, pk.Proto == policy.ProtoICMPv6 && pk.ICMPType == 128:
		ri = z.ICMPLimit
	}
	if ri < 0 {
		return
	}
	time.Sleep(time.Until(lp.next[ri]))
	rate := lp.prog.Rules[ri].Rate
	lp.next[ri] = time.Now().Add(rate.Per * 3 / time.Duration(2*rate.N)) // two thirds of the rate
}

// movedCounters returns the counters that moved within wait after the
// last reset, leaving out background ones unless they are wantID. The wait
// ends at the first counter that moves, usually within a millisecond; it
// is long only so that a loaded machine does not make a late counter look
// like none.
func movedCounters(t *testing.T, conn *Conn, wantID string, background func(string) bool, wait time.Duration) []string {
	t.Helper()
	var moved []string
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		got, err := conn.Counters(false)
		if err != nil {
			t.Fatal(err)
		}
		moved = moved[:0]
		for id, n := range got {
			if n > 0 && (id == wantID || !background(id)) {
				moved = append(moved, id)
			}
		}
		if len(moved) > 0 {
			break
		}
	}
	slices.Sort(moved)
	return moved
}

// TestDifferentialShaped is TestDifferential on a router shaped by each
// policy: one veth per policy interface, named as its device, with the
// policy's addresses and default routes, so that zones of several
// interfaces, the examples' own prefixes and their port forwards meet the
// kernel. Probes come from the compiled program: its prefixes, their
// edges, the box's addresses, allowlists, resolved names and port ranges.
//
// IPv4 martians (loopback and 0.0.0.0/8 addresses) are sent only when the
// evaluator decides them in prerouting: Linux's routing drops them right
// after, where the evaluator has no rule.
func TestDifferentialShaped(t *testing.T) {
	netnstest.RequireRoot(t)
	probes := 400
	if testing.Short() {
		probes = 100
	}
	seq := 0
	for _, dp := range shapedCorpus(t, 6) {
		t.Run(dp.name, func(t *testing.T) {
			prog := compileSource(t, dp.name+".yaml", dp.src)
			rs, err := Build(prog, dp.opts)
			if err != nil {
				t.Fatal(err)
			}
			r := newShapedRouter(t, prog, dp.opts, rs)
			space := newProbeSpace(prog, dp.opts)
			opts := dp.opts
			opts.LinkLocal = map[string][]netip.Addr{}
			for i, mac := range r.mac {
				space.ownLL = append(space.ownLL, linkLocalOf(mac))
				opts.LinkLocal[prog.Interfaces[i].Name] = []netip.Addr{linkLocalOf(mac)}
			}
			ev := policy.NewEvaluator(prog, opts)
			// Counters that replies and neighbour discovery can move count
			// only when the evaluator names them (see TestDifferential).
			established, invalid := string(prog.Rules[prog.Established].ID), string(prog.Rules[prog.Invalid].ID)
			icmpLocal := ""
			if prog.ICMPLocal >= 0 {
				icmpLocal = string(prog.Rules[prog.ICMPLocal].ID)
			}
			localSource := string(prog.Rules[prog.LocalSource].ID)
			rng := rand.New(rand.NewPCG(uint64(len(dp.src)), 26))
			pace := newLimitPacer(prog)
			tally := newTally(prog, dp.src)
			skipped, retried := 0, 0
			for range probes {
				seq++
				p := space.probe(rng, seq)
				want := ev.Evaluate(&p.pk)
				if space.unseen(&p.pk, want) {
					skipped++
					continue
				}
				wantID := string(prog.Rules[want.Rule].ID)
				// The box answers a subnet broadcast source with a
				// broadcast, and Linux loops its own broadcasts back in:
				// from the box's address, by the interface they left.
				bcastSrc := slices.Contains(space.subnetBcast, p.pk.Src)
				background := func(id string) bool {
					return id == established || id == icmpLocal || id == invalid || bcastSrc && id == localSource
				}
				send := func(pk policy.Packet, id int) []string {
					if _, err := r.conn.Counters(true); err != nil {
						t.Fatal(err)
					}
					pace.wait(&pk)
					inj := r.inj[pk.In]
					if err := inj.Send(frame(inj.MAC, r.mac[pk.In], pk, uint16(id))); err != nil {
						t.Fatal(err)
					}
					return movedCounters(t, r.conn, wantID, background, 250*time.Millisecond)
				}
				moved := send(p.pk, seq)
				if len(moved) != 1 || moved[0] != wantID {
					// A counter that moves late on a loaded machine lands
					// on the next probe: let the box settle, then send the
					// packet again as a new flow. A real disagreement
					// repeats.
					time.Sleep(300 * time.Millisecond)
					again := p.pk
					if again.SrcPort >= 30000 {
						again.SrcPort = uint16(30000 + (seq+15000)%30000)
					}
					moved = send(again, seq+15000)
					retried++
				}
				tally.check(t, p.text, want, moved)
			}
			t.Logf("agreed on %d of %d packets (%d sent twice; %d that routing decides not sent): %s", probes-skipped-tally.mismatches, probes-skipped, retried, skipped, tally)
		})
	}
}
