package netconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"

	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// staticPolicy is an uplink with static addresses and both gateways, and a
// LAN.
const staticPolicy = `
interfaces:
  wan: {device: eth0, zone: wan, addresses: [81.0.0.2/24, "2a00:1::2/64"], gateway: [81.0.0.1, "2a00:1::1"]}
  lan: {device: eth1, zone: lan, addresses: [192.168.1.1/24, "fd00:53:1::1/64"]}
zones:
  wan: {}
  lan: {}
`

// dhcpPolicy is an uplink that takes its IPv4 address from DHCP but has a
// static IPv6 one; the static IPv4 address next to dhcp is one Apply must
// not add. %s and %s are the two devices.
const dhcpPolicy = `
interfaces:
  wan: {device: %s, zone: wan, addresses: [dhcp, 81.0.0.2/24, "2a00:1::2/64"]}
  lan: {device: %s, zone: lan, addresses: [192.168.1.1/24, "fd00:53:1::1/64"]}
zones:
  wan: {}
  lan: {}
`

// reportOpts compares Reports: netip values by ==, and an empty list the
// same as none.
var reportOpts = cmp.Options{cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.EquateEmpty()}

func compile(t *testing.T, src string) *policy.Program {
	t.Helper()
	pol, diags := policy.Parse("test.yaml", []byte(src))
	if err := diags.Err(); err != nil {
		t.Fatalf("policy.Parse:\n%v", err)
	}
	prog, err := policy.Compile(pol)
	if err != nil {
		t.Fatalf("policy.Compile: %v", err)
	}
	return prog
}

func errStrings(errs []error) []string {
	var out []string
	for _, err := range errs {
		out = append(out, err.Error())
	}
	return out
}

func TestSetSysctls(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"net/ipv4/ip_forward":                "0\n",
		"net/ipv6/conf/all/forwarding":       "1\n",
		"net/ipv6/conf/eth0.10/accept_ra":    "1\n", // a VLAN device: the dot is part of the name
		"net/ipv4/conf/default/rp_filter":    "2",
		"net/ipv4/conf/all/accept_redirects": "1\n", // not asked for: left alone
	}
	for name, data := range files {
		file := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := []Sysctl{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/all/forwarding", "1"},
		{"net/ipv6/conf/eth0.10/accept_ra", "2"},
		{"net/ipv4/conf/gone0/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
	}

	got, err := setSysctls(root, want)
	wantChanged := []Sysctl{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/eth0.10/accept_ra", "2"},
		{"net/ipv4/conf/default/rp_filter", "0"},
	}
	if diff := cmp.Diff(wantChanged, got); diff != "" {
		t.Errorf("setSysctls changed (-want +got):\n%s", diff)
	}
	if err == nil || !strings.Contains(err.Error(), "sysctl net/ipv4/conf/gone0/rp_filter=0") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("setSysctls error = %v, want one naming net/ipv4/conf/gone0/rp_filter=0 and wrapping os.ErrNotExist", err)
	}

	gotFiles := map[string]string{}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(root, path)
		gotFiles[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	wantFiles := map[string]string{
		"net/ipv4/ip_forward":                "1\n",
		"net/ipv6/conf/all/forwarding":       "1\n",
		"net/ipv6/conf/eth0.10/accept_ra":    "2\n",
		"net/ipv4/conf/default/rp_filter":    "0\n",
		"net/ipv4/conf/all/accept_redirects": "1\n",
	}
	if diff := cmp.Diff(wantFiles, gotFiles); diff != "" {
		t.Errorf("files under the root (-want +got); a missing sysctl must not be created:\n%s", diff)
	}

	got, _ = setSysctls(root, want)
	if len(got) != 0 {
		t.Errorf("second setSysctls changed %v, want nothing", got)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// fresh is a veth pair as it is made: down, no addresses.
func fresh() kernel {
	return kernel{links: map[string]kernelLink{
		"lo":   {index: 1, up: true, addrs: []kernelAddr{{pfx("127.0.0.1/8"), false}, {pfx("::1/128"), false}}},
		"eth0": {index: 2},
		"eth1": {index: 3},
	}}
}

// inPlace is the namespace after Apply of staticPolicy, with the IPv6
// link-local addresses the kernel adds.
func inPlace() kernel {
	return kernel{
		links: map[string]kernelLink{
			"lo":   {index: 1, up: true},
			"eth0": {index: 2, up: true, addrs: []kernelAddr{{pfx("81.0.0.2/24"), true}, {pfx("2a00:1::2/64"), true}, {pfx("fe80::1/64"), false}}},
			"eth1": {index: 3, up: true, addrs: []kernelAddr{{pfx("192.168.1.1/24"), true}, {pfx("fd00:53:1::1/64"), true}, {pfx("fe80::2/64"), false}}},
		},
		defaults: []defaultRoute{{2, addr("81.0.0.1")}, {2, addr("2a00:1::1")}},
	}
}

func TestPlan(t *testing.T) {
	dhcp := fmt.Sprintf(dhcpPolicy, "eth0", "eth1")
	tests := []struct {
		name     string
		policy   string
		kernel   kernel
		want     Report
		wantErrs []string
	}{
		{
			name:   "a fresh veth pair gets everything",
			policy: staticPolicy,
			kernel: fresh(),
			want: Report{
				LinksUp: []string{"eth0", "eth1"},
				Addresses: []Address{
					{"eth0", pfx("81.0.0.2/24")}, {"eth0", pfx("2a00:1::2/64")},
					{"eth1", pfx("192.168.1.1/24")}, {"eth1", pfx("fd00:53:1::1/64")},
				},
				Routes: []Route{{"eth0", addr("81.0.0.1")}, {"eth0", addr("2a00:1::1")}},
			},
		},
		{
			name:   "what is in place is left alone",
			policy: staticPolicy,
			kernel: inPlace(),
		},
		{
			name:   "default routes via another gateway or device are replaced",
			policy: staticPolicy,
			kernel: func() kernel {
				k := inPlace()
				k.defaults = []defaultRoute{{2, addr("81.0.0.254")}, {3, addr("2a00:1::1")}}
				return k
			}(),
			want: Report{Routes: []Route{{"eth0", addr("81.0.0.1")}, {"eth0", addr("2a00:1::1")}}},
		},
		{
			name:   "an address the policy does not name is reported, not removed",
			policy: staticPolicy,
			kernel: func() kernel {
				k := inPlace()
				l := k.links["eth1"]
				l.addrs = append(l.addrs, kernelAddr{pfx("192.168.1.77/24"), true}, kernelAddr{pfx("fd00:53:1::abcd/64"), false}) // the second one from SLAAC
				k.links["eth1"] = l
				return k
			}(),
			want: Report{Extra: []Address{{"eth1", pfx("192.168.1.77/24")}}},
		},
		{
			name:   "the same address with another prefix length is an error",
			policy: staticPolicy,
			kernel: func() kernel {
				k := inPlace()
				k.links["eth0"].addrs[0] = kernelAddr{pfx("81.0.0.2/16"), true}
				return k
			}(),
			want:     Report{Extra: []Address{{"eth0", pfx("81.0.0.2/16")}}},
			wantErrs: []string{"address add 81.0.0.2/24 on eth0: the device has it as 81.0.0.2/16, and netconf removes no address"},
		},
		{
			name:   "a missing device is an error and the others are configured",
			policy: staticPolicy,
			kernel: func() kernel {
				k := fresh()
				delete(k.links, "eth0")
				return k
			}(),
			want: Report{
				LinksUp:   []string{"eth1"},
				Addresses: []Address{{"eth1", pfx("192.168.1.1/24")}, {"eth1", pfx("fd00:53:1::1/64")}},
			},
			wantErrs: []string{"interface wan: device eth0: no such device"},
		},
		{
			name:   "a DHCP uplink gets its IPv6 address only",
			policy: dhcp,
			kernel: fresh(),
			want: Report{
				LinksUp: []string{"eth0", "eth1"},
				Addresses: []Address{
					{"eth0", pfx("2a00:1::2/64")},
					{"eth1", pfx("192.168.1.1/24")}, {"eth1", pfx("fd00:53:1::1/64")},
				},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := makePlan(compile(t, tc.policy), tc.kernel)
			if diff := cmp.Diff(tc.want, got.change, reportOpts); diff != "" {
				t.Errorf("planned changes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantErrs, errStrings(got.errs)); diff != "" {
				t.Errorf("planned errors (-want +got):\n%s", diff)
			}
			for _, err := range got.errs {
				if strings.Contains(err.Error(), "no such device") && !errors.Is(err, ErrNoDevice) {
					t.Errorf("error %q does not wrap ErrNoDevice", err)
				}
			}
		})
	}
}

func TestPlanSysctls(t *testing.T) {
	router := []Sysctl{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/all/forwarding", "1"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
	}
	tests := []struct {
		name   string
		policy string
		kernel kernel
		want   []Sysctl
	}{
		{
			name:   "static uplink: rp_filter off on each device too",
			policy: staticPolicy,
			kernel: fresh(),
			want:   append(slices.Clone(router), Sysctl{"net/ipv4/conf/eth0/rp_filter", "0"}, Sysctl{"net/ipv4/conf/eth1/rp_filter", "0"}),
		},
		{
			name:   "DHCP uplink keeps taking router advertisements",
			policy: fmt.Sprintf(dhcpPolicy, "eth0", "eth1"),
			kernel: fresh(),
			want: append(slices.Clone(router),
				Sysctl{"net/ipv4/conf/eth0/rp_filter", "0"}, Sysctl{"net/ipv6/conf/eth0/accept_ra", "2"},
				Sysctl{"net/ipv4/conf/eth1/rp_filter", "0"}),
		},
		{
			name:   "no sysctl for a missing device",
			policy: fmt.Sprintf(dhcpPolicy, "eth0", "eth1"),
			kernel: kernel{links: map[string]kernelLink{"eth1": {index: 3}}},
			want:   append(slices.Clone(router), Sysctl{"net/ipv4/conf/eth1/rp_filter", "0"}),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := makePlan(compile(t, tc.policy), tc.kernel).sysctls
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("planned sysctls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBroadcast(t *testing.T) {
	tests := []struct{ prefix, want string }{
		{"81.0.0.2/24", "81.0.0.255"},
		{"10.1.2.3/8", "10.255.255.255"},
		{"192.168.1.129/25", "192.168.1.255"},
		{"192.168.1.1/30", "192.168.1.3"},
	}
	for _, tc := range tests {
		if got := broadcast(pfx(tc.prefix)).String(); got != tc.want {
			t.Errorf("broadcast(%s) = %s, want %s", tc.prefix, got, tc.want)
		}
	}
}

// Kernel tests.

var nsSeq atomic.Int64

// newNetNS makes a network namespace named for this package, deleted when
// the test ends. It skips without root or the ip and sysctl tools, and
// under CI=true fails instead.
func newNetNS(t *testing.T) *netnstest.NS {
	t.Helper()
	netnstest.Require(t, os.Geteuid() == 0, "needs root to make network namespaces")
	for _, tool := range []string{"ip", "sysctl"} {
		_, err := exec.LookPath(tool)
		netnstest.Require(t, err == nil, "needs the %s tool", tool)
	}
	name := netnstest.Name("netconf")
	_ = exec.Command("ip", "netns", "del", name).Run() // a leftover of the same name, if any
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return &netnstest.NS{Name: name}
}

// inNetNS runs fn on an OS thread that has entered the network namespace at
// path. The thread never goes back: its goroutine ends locked to it, and
// the Go runtime then ends the thread, so nothing else ever runs in the
// namespace by mistake. The main thread is never used, because the runtime
// cannot end it; it would park it in the namespace for good, and
// /proc/self/net (which follows the main thread) would move there too.
func inNetNS(path string, fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// This goroutine holds the main thread, so the next one runs
			// on another.
			errc <- inNetNS(path, fn)
			runtime.UnlockOSThread()
			return
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open %s: %w", path, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		fn()
		errc <- nil
		// No UnlockOSThread: the thread ends with this goroutine.
	}()
	return <-errc
}

// applyIn runs Apply in the namespace.
func applyIn(t *testing.T, ns *netnstest.NS, prog *policy.Program) (Report, error) {
	t.Helper()
	var rep Report
	var err error
	if nerr := inNetNS(ns.Path(), func() { rep, err = Apply(prog) }); nerr != nil {
		t.Fatalf("enter netns %s: %v", ns.Name, nerr)
	}
	return rep, err
}

// linkState is what `ip address` shows of a link: whether it is up, and its
// addresses of global scope, sorted, with the broadcast address if any.
type linkState struct {
	Up    bool
	Addrs []string
}

func links(t *testing.T, ns *netnstest.NS, devs ...string) map[string]linkState {
	t.Helper()
	var out []struct {
		IfName   string   `json:"ifname"`
		Flags    []string `json:"flags"`
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
			Broadcast string `json:"broadcast"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(ns.Run(t, "ip", "-j", "address", "show")), &out); err != nil {
		t.Fatalf("ip -j address show: %v", err)
	}
	got := map[string]linkState{}
	for _, l := range out {
		if !slices.Contains(devs, l.IfName) {
			continue
		}
		s := linkState{Up: slices.Contains(l.Flags, "UP")}
		for _, a := range l.AddrInfo {
			if a.Scope != "global" {
				continue
			}
			v := fmt.Sprintf("%s/%d", a.Local, a.PrefixLen)
			if a.Broadcast != "" {
				v += " brd " + a.Broadcast
			}
			s.Addrs = append(s.Addrs, v)
		}
		slices.Sort(s.Addrs)
		got[l.IfName] = s
	}
	return got
}

// defaultRoutes is what `ip route show default` shows for both families.
func defaultRoutes(t *testing.T, ns *netnstest.NS) []string {
	t.Helper()
	var got []string
	for _, family := range []string{"-4", "-6"} {
		var out []struct {
			Dst      string `json:"dst"`
			Gateway  string `json:"gateway"`
			Dev      string `json:"dev"`
			Protocol string `json:"protocol"`
		}
		if err := json.Unmarshal([]byte(ns.Run(t, "ip", family, "-j", "route", "show", "default")), &out); err != nil {
			t.Fatalf("ip %s -j route show default: %v", family, err)
		}
		for _, r := range out {
			got = append(got, fmt.Sprintf("%s via %s dev %s proto %s", r.Dst, r.Gateway, r.Dev, r.Protocol))
		}
	}
	return got
}

// sysctls reads settings inside the namespace with sysctl(8).
func sysctls(t *testing.T, ns *netnstest.NS, names ...string) map[string]string {
	t.Helper()
	values := strings.Fields(ns.Run(t, "sysctl", append([]string{"-n"}, names...)...))
	if len(values) != len(names) {
		t.Fatalf("sysctl -n %v printed %v", names, values)
	}
	got := map[string]string{}
	for i, n := range names {
		got[n] = values[i]
	}
	return got
}

func TestApply(t *testing.T) {
	ns := newNetNS(t)
	ns.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	// Start from the opposite of each setting Apply makes: a new namespace
	// copies the host's IPv4 settings, which could already be right.
	ns.Run(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0",
		"net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1",
		"net.ipv4.conf.eth0.rp_filter=2", "net.ipv4.conf.eth1.rp_filter=1")
	prog := compile(t, staticPolicy)

	got, err := applyIn(t, ns, prog)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := Report{
		Sysctls: []Sysctl{
			{"net/ipv4/ip_forward", "1"},
			{"net/ipv6/conf/all/forwarding", "1"},
			{"net/ipv4/conf/all/rp_filter", "0"},
			{"net/ipv4/conf/default/rp_filter", "0"},
			{"net/ipv4/conf/eth0/rp_filter", "0"},
			{"net/ipv4/conf/eth1/rp_filter", "0"},
		},
		LinksUp: []string{"eth0", "eth1"},
		Addresses: []Address{
			{"eth0", pfx("81.0.0.2/24")}, {"eth0", pfx("2a00:1::2/64")},
			{"eth1", pfx("192.168.1.1/24")}, {"eth1", pfx("fd00:53:1::1/64")},
		},
		Routes: []Route{{"eth0", addr("81.0.0.1")}, {"eth0", addr("2a00:1::1")}},
	}
	if diff := cmp.Diff(want, got, reportOpts); diff != "" {
		t.Errorf("first Apply report (-want +got):\n%s", diff)
	}

	checkKernel := func(t *testing.T) {
		t.Helper()
		wantLinks := map[string]linkState{
			"eth0": {Up: true, Addrs: []string{"2a00:1::2/64", "81.0.0.2/24 brd 81.0.0.255"}},
			"eth1": {Up: true, Addrs: []string{"192.168.1.1/24 brd 192.168.1.255", "fd00:53:1::1/64"}},
		}
		if diff := cmp.Diff(wantLinks, links(t, ns, "eth0", "eth1")); diff != "" {
			t.Errorf("ip address (-want +got):\n%s", diff)
		}
		wantRoutes := []string{"default via 81.0.0.1 dev eth0 proto static", "default via 2a00:1::1 dev eth0 proto static"}
		if diff := cmp.Diff(wantRoutes, defaultRoutes(t, ns)); diff != "" {
			t.Errorf("ip route show default (-want +got):\n%s", diff)
		}
		wantSysctls := map[string]string{
			"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1",
			"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0",
			"net.ipv4.conf.eth0.rp_filter": "0", "net.ipv4.conf.eth1.rp_filter": "0",
			"net.ipv4.conf.eth0.forwarding": "1", "net.ipv6.conf.eth1.forwarding": "1", // all/ reaches each device
			"net.ipv6.conf.eth0.accept_ra": "1", // not DHCP: untouched
		}
		if diff := cmp.Diff(wantSysctls, sysctls(t, ns, slices.Sorted(maps.Keys(wantSysctls))...)); diff != "" {
			t.Errorf("sysctl in the namespace (-want +got):\n%s", diff)
		}
	}
	checkKernel(t)

	got, err = applyIn(t, ns, prog)
	if err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if diff := cmp.Diff(Report{}, got, reportOpts); diff != "" || got.Changed() {
		t.Errorf("second Apply changed something (-want +got):\n%s", diff)
	}
	checkKernel(t)

	t.Run("replaces another default route", func(t *testing.T) {
		ns.Run(t, "ip", "route", "replace", "default", "via", "81.0.0.254", "dev", "eth0")
		got, err := applyIn(t, ns, prog)
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if diff := cmp.Diff(Report{Routes: []Route{{"eth0", addr("81.0.0.1")}}}, got, reportOpts); diff != "" {
			t.Errorf("report (-want +got):\n%s", diff)
		}
		checkKernel(t)
	})

	t.Run("keeps an address the policy does not name", func(t *testing.T) {
		ns.Run(t, "ip", "address", "add", "192.168.1.77/24", "dev", "eth1")
		t.Cleanup(func() { ns.Run(t, "ip", "address", "del", "192.168.1.77/24", "dev", "eth1") })
		got, err := applyIn(t, ns, prog)
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if diff := cmp.Diff(Report{Extra: []Address{{"eth1", pfx("192.168.1.77/24")}}}, got, reportOpts); diff != "" || got.Changed() {
			t.Errorf("report (-want +got):\n%s", diff)
		}
		if a := links(t, ns, "eth1")["eth1"].Addrs; !slices.Contains(a, "192.168.1.77/24") {
			t.Errorf("eth1 addresses after Apply: %v, want 192.168.1.77/24 kept", a)
		}
	})
}

func TestApplyMissingDevice(t *testing.T) {
	ns := newNetNS(t)
	ns.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	prog := compile(t, strings.Replace(staticPolicy, "device: eth1", "device: sluicemiss0", 1))

	got, err := applyIn(t, ns, prog)
	if err == nil || !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), "interface lan: device sluicemiss0") {
		t.Errorf("Apply error = %v, want one naming interface lan and device sluicemiss0, wrapping ErrNoDevice", err)
	}
	// The wan interface is configured all the same.
	wantAddrs := []Address{{"eth0", pfx("81.0.0.2/24")}, {"eth0", pfx("2a00:1::2/64")}}
	if diff := cmp.Diff(wantAddrs, got.Addresses, reportOpts); diff != "" {
		t.Errorf("addresses added (-want +got):\n%s", diff)
	}
	wantLinks := map[string]linkState{"eth0": {Up: true, Addrs: []string{"2a00:1::2/64", "81.0.0.2/24 brd 81.0.0.255"}}}
	if diff := cmp.Diff(wantLinks, links(t, ns, "eth0")); diff != "" {
		t.Errorf("ip address (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"default via 81.0.0.1 dev eth0 proto static", "default via 2a00:1::1 dev eth0 proto static"}, defaultRoutes(t, ns)); diff != "" {
		t.Errorf("ip route show default (-want +got):\n%s", diff)
	}
}

// TestApplyDHCP also shows that /proc/sys/net is the calling thread's: the
// devices have names the host does not have, so their sysctl files exist
// only in the namespace.
func TestApplyDHCP(t *testing.T) {
	const wan, lan = "sluicewan0", "sluicelan0"
	ns := newNetNS(t)
	ns.Run(t, "ip", "link", "add", wan, "type", "veth", "peer", "name", lan)
	if _, err := os.Stat("/proc/sys/net/ipv6/conf/" + wan); err == nil {
		t.Fatalf("the host has a device %s; the test needs a name only the namespace has", wan)
	}
	prog := compile(t, fmt.Sprintf(dhcpPolicy, wan, lan))

	got, err := applyIn(t, ns, prog)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	wantAddrs := []Address{{wan, pfx("2a00:1::2/64")}, {lan, pfx("192.168.1.1/24")}, {lan, pfx("fd00:53:1::1/64")}}
	if diff := cmp.Diff(wantAddrs, got.Addresses, reportOpts); diff != "" {
		t.Errorf("addresses added (-want +got):\n%s", diff)
	}
	if !slices.Contains(got.Sysctls, Sysctl{"net/ipv6/conf/" + wan + "/accept_ra", "2"}) {
		t.Errorf("sysctls written %v, want accept_ra=2 on %s among them", got.Sysctls, wan)
	}
	if len(got.Routes) != 0 {
		t.Errorf("routes added %v, want none: the policy names no gateway", got.Routes)
	}
	wantLinks := map[string]linkState{
		wan: {Up: true, Addrs: []string{"2a00:1::2/64"}},
		lan: {Up: true, Addrs: []string{"192.168.1.1/24 brd 192.168.1.255", "fd00:53:1::1/64"}},
	}
	if diff := cmp.Diff(wantLinks, links(t, ns, wan, lan)); diff != "" {
		t.Errorf("ip address (-want +got):\n%s", diff)
	}
	wantSysctls := map[string]string{
		"net.ipv6.conf." + wan + ".accept_ra": "2",
		"net.ipv6.conf." + lan + ".accept_ra": "1",
		"net.ipv4.ip_forward":                 "1",
	}
	if diff := cmp.Diff(wantSysctls, sysctls(t, ns, slices.Sorted(maps.Keys(wantSysctls))...)); diff != "" {
		t.Errorf("sysctl in the namespace (-want +got):\n%s", diff)
	}

	got, err = applyIn(t, ns, prog)
	if err != nil || got.Changed() {
		t.Errorf("second Apply = %+v, %v; want no change", got, err)
	}
}

// TestLinks reads the policy's interfaces back after Apply: state, every
// address and counters that move when traffic passes; a device the kernel
// lacks is listed as absent.
func TestLinks(t *testing.T) {
	ns := newNetNS(t)
	ns.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	prog := compile(t, staticPolicy+"\n")
	if _, err := applyIn(t, ns, prog); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// A ping out of each end of the pair to an address nobody has: the
	// neighbour solicitations leave one end and arrive at the other, so
	// every counter moves (the pings themselves fail).
	ns.Command("ping", "-c1", "-W1", "-I", "eth0", "81.0.0.9").Run()
	ns.Command("ping", "-c1", "-W1", "-I", "eth1", "192.168.1.9").Run()
	var got []Link
	var err error
	if nerr := inNetNS(ns.Path(), func() { got, err = Links(prog) }); nerr != nil {
		t.Fatalf("enter netns: %v", nerr)
	}
	if err != nil {
		t.Fatalf("Links: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("Links returned %d links, want 2: %+v", len(got), got)
	}
	for _, l := range got {
		if !l.Present || !l.Up || l.TxBytes == 0 || l.RxBytes == 0 {
			t.Errorf("link %s (%s): present %v up %v rx %d tx %d, want present, up and both counters moved", l.Name, l.Device, l.Present, l.Up, l.RxBytes, l.TxBytes)
		}
	}
	wantAddrs := map[string][]netip.Prefix{
		"wan": {pfx("81.0.0.2/24"), pfx("2a00:1::2/64")},
		"lan": {pfx("192.168.1.1/24"), pfx("fd00:53:1::1/64")},
	}
	for _, l := range got {
		var global []netip.Prefix
		for _, a := range l.Addrs {
			if !a.Addr().IsLinkLocalUnicast() {
				global = append(global, a)
			}
		}
		slices.SortFunc(global, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		if diff := cmp.Diff(wantAddrs[l.Name], global, reportOpts); diff != "" {
			t.Errorf("link %s addresses (-want +got):\n%s", l.Name, diff)
		}
	}

	ns.Run(t, "ip", "link", "del", "eth0")
	if nerr := inNetNS(ns.Path(), func() { got, err = Links(prog) }); nerr != nil || err != nil {
		t.Fatalf("Links after deleting eth0: %v %v", nerr, err)
	}
	for _, l := range got {
		if l.Present {
			t.Errorf("link %s (%s) present after the veth pair was deleted", l.Name, l.Device)
		}
	}
}

// TestLearned reads back what the policy does not say: the lease on the
// DHCP interface (not its static address) and every interface's IPv6
// link-local addresses.
func TestLearned(t *testing.T) {
	const wan, lan = "sluicewan0", "sluicelan0"
	ns := newNetNS(t)
	ns.Run(t, "ip", "link", "add", wan, "type", "veth", "peer", "name", lan)
	prog := compile(t, fmt.Sprintf(dhcpPolicy, wan, lan))
	if _, err := applyIn(t, ns, prog); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	ns.Run(t, "ip", "address", "add", "100.64.7.9/24", "dev", wan)
	ns.Run(t, "ip", "address", "add", "fe80::99/64", "dev", lan, "nodad")
	var got policy.Options
	if err := inNetNS(ns.Path(), func() { got = Learned(prog) }); err != nil {
		t.Fatal(err)
	}
	if want := []netip.Prefix{pfx("100.64.7.9/24")}; !slices.Equal(got.Addresses["wan"], want) {
		t.Errorf("learned addresses of wan %v, want %v (the lease, not the static address)", got.Addresses["wan"], want)
	}
	if len(got.Addresses["lan"]) != 0 {
		t.Errorf("learned addresses of lan %v, want none: it has no DHCP", got.Addresses["lan"])
	}
	if !slices.Contains(got.LinkLocal["lan"], netip.MustParseAddr("fe80::99")) {
		t.Errorf("learned link-local addresses of lan %v, want fe80::99 among them", got.LinkLocal["lan"])
	}
}
