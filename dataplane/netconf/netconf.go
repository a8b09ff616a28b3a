package netconf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"

	"github.com/sluicefw/sluice/dataplane/policy"
)

// ErrNoDevice is wrapped by the error for an interface whose device does not
// exist.
var ErrNoDevice = errors.New("no such device")

// Report says what Apply changed, in policy order. Applying a policy that is
// already in place gives a Report that has not Changed.
type Report struct {
	Sysctls   []Sysctl  // sysctls that held another value, written
	LinksUp   []string  // devices that were down, brought up
	Addresses []Address // addresses added
	Routes    []Route   // default routes installed, or put in place of another

	// Extra lists what Apply found and left alone: addresses on the
	// policy's devices that the policy does not name. Only configured
	// addresses count, that is permanent ones of global scope: not
	// link-local ones, nor SLAAC addresses or DHCP leases, which have
	// lifetimes. Apply never removes an address; Extra is for the log.
	Extra []Address
}

// Changed reports whether Apply changed anything.
func (r Report) Changed() bool {
	return len(r.Sysctls)+len(r.LinksUp)+len(r.Addresses)+len(r.Routes) > 0
}

// Address is an interface address, with its prefix length, on a device.
type Address struct {
	Device string
	Prefix netip.Prefix
}

func (a Address) String() string { return a.Prefix.String() + " on " + a.Device }

// Route is a default route via a gateway out a device.
type Route struct {
	Device  string
	Gateway netip.Addr
}

func (r Route) String() string { return "default via " + r.Gateway.String() + " dev " + r.Device }

// Apply configures the network namespace the calling thread is in for the
// policy, in this order:
//
//  1. the sysctls a router needs: net.ipv4.ip_forward and
//     net.ipv6.conf.all.forwarding on; rp_filter off for all, default and
//     each policy device (sluice checks reverse paths in nftables, and the
//     kernel applies the larger of all and the device's own value); and
//     net.ipv6.conf.DEV.accept_ra=2 on a DHCP interface, so that it still
//     takes router advertisements (SLAAC, its default route) with
//     forwarding on, written before the link comes up so that the router
//     solicitation sent then counts;
//  2. each interface's device up;
//  3. its static addresses, except on a DHCP interface the IPv4 ones (its
//     IPv4 address is the DHCP client's job, and a static one listed next
//     to dhcp is not added);
//  4. for each gateway, a default route via it out that device (main
//     table, proto static), in place of any default route of the same
//     family and metric; default routes of other metrics stay.
//
// It is idempotent: what is already in place is left alone, and a second
// Apply reports no change. It removes nothing: an address the policy does
// not name stays and is listed in Report.Extra, and an address the policy
// names with another prefix length on the same device is an error, not a
// replacement.
//
// A device that does not exist is an error naming the interface and the
// device (wrapping ErrNoDevice); the other interfaces are still configured,
// and the error joins every problem. The Report holds what was done even
// when the error is not nil.
//
// The calling goroutine must stay on one thread for the call if threads of
// the process are in different namespaces (runtime.LockOSThread): the
// rtnetlink socket and every /proc/sys file are opened on the calling
// thread and take its namespace. Apply holds no state; two calls at once in
// one namespace may both try the same change, and one then fails.
func Apply(prog *policy.Program) (Report, error) {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return Report{}, fmt.Errorf("rtnetlink dial: %w", err)
	}
	defer c.Close()
	k, err := readKernel(c)
	if err != nil {
		return Report{}, err
	}
	p := makePlan(prog, k)

	changed, err := setSysctls(procSys, p.sysctls)
	rep := Report{Sysctls: changed, Extra: p.change.Extra}
	errs := append(p.errs, err)
	for _, dev := range p.change.LinksUp {
		err := c.Link.Set(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Index: p.index[dev], Flags: unix.IFF_UP, Change: unix.IFF_UP})
		if err != nil {
			errs = append(errs, fmt.Errorf("link set %s up: %w", dev, err))
			continue
		}
		rep.LinksUp = append(rep.LinksUp, dev)
	}
	for _, a := range p.change.Addresses {
		if err := c.Address.New(AddressMessage(p.index[a.Device], a.Prefix)); err != nil {
			errs = append(errs, fmt.Errorf("address add %s on %s: %w", a.Prefix, a.Device, err))
			continue
		}
		rep.Addresses = append(rep.Addresses, a)
	}
	for _, r := range p.change.Routes {
		if err := c.Route.Replace(RouteMessage(p.index[r.Device], r.Gateway, unix.RTPROT_STATIC)); err != nil {
			errs = append(errs, fmt.Errorf("route replace %s: %w", r, err))
			continue
		}
		rep.Routes = append(rep.Routes, r)
	}
	return rep, errors.Join(errs...)
}

// kernel is what Apply reads of the namespace before changing it.
type kernel struct {
	links    map[string]kernelLink // by device name
	defaults []defaultRoute        // unicast default routes in the main table
}

type kernelLink struct {
	index uint32
	up    bool
	addrs []kernelAddr
}

type kernelAddr struct {
	prefix     netip.Prefix
	configured bool // permanent and of global scope (see Report.Extra)
}

type defaultRoute struct {
	index   uint32 // out this link
	gateway netip.Addr
}

// readKernel lists the links, addresses and default routes.
func readKernel(c *rtnetlink.Conn) (kernel, error) {
	k := kernel{links: map[string]kernelLink{}}
	links, err := c.Link.List()
	if err != nil {
		return k, fmt.Errorf("link list: %w", err)
	}
	names := map[uint32]string{}
	for _, l := range links {
		if l.Attributes == nil {
			continue // a link without a name cannot be one the policy names
		}
		names[l.Index] = l.Attributes.Name
		k.links[l.Attributes.Name] = kernelLink{index: l.Index, up: l.Flags&unix.IFF_UP != 0}
	}

	addrs, err := c.Address.List()
	if err != nil {
		return k, fmt.Errorf("address list: %w", err)
	}
	for _, m := range addrs {
		name, ok := names[m.Index]
		if !ok || m.Attributes == nil {
			continue // a link that appeared since the list, or a message without an address
		}
		ip := m.Attributes.Local // on a point-to-point link Address is the peer
		if ip == nil {
			ip = m.Attributes.Address // IPv6 sends only Address
		}
		a, ok := addrFrom(ip)
		if !ok {
			continue // not an IP address: nothing the policy can name
		}
		flags := uint32(m.Flags) | m.Attributes.Flags
		l := k.links[name]
		l.addrs = append(l.addrs, kernelAddr{
			prefix:     netip.PrefixFrom(a, int(m.PrefixLength)),
			configured: m.Scope == unix.RT_SCOPE_UNIVERSE && flags&unix.IFA_F_PERMANENT != 0,
		})
		k.links[name] = l
	}

	routes, err := c.Route.List()
	if err != nil {
		return k, fmt.Errorf("route list: %w", err)
	}
	for _, r := range routes {
		table := uint32(r.Table)
		if r.Attributes.Table != 0 {
			table = r.Attributes.Table // tables above 255 only say so here
		}
		if table != unix.RT_TABLE_MAIN || r.DstLength != 0 || r.Type != unix.RTN_UNICAST {
			continue
		}
		gw, ok := addrFrom(r.Attributes.Gateway)
		if !ok {
			continue // a default route without a gateway is never the one Apply installs
		}
		k.defaults = append(k.defaults, defaultRoute{index: r.Attributes.OutIface, gateway: gw})
	}
	return k, nil
}

func addrFrom(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// plan is what Apply will do, decided from the policy and the kernel's
// state alone, so that a test can check it without a kernel.
type plan struct {
	sysctls []Sysctl          // every sysctl the policy needs, set or not
	change  Report            // links, addresses and routes to change; Extra
	index   map[string]uint32 // link index of each policy device that exists
	errs    []error           // missing devices, conflicting addresses
}

func makePlan(prog *policy.Program, k kernel) plan {
	p := plan{
		index: map[string]uint32{},
		sysctls: []Sysctl{
			{"net/ipv4/ip_forward", "1"},
			{"net/ipv6/conf/all/forwarding", "1"},
			{"net/ipv4/conf/all/rp_filter", "0"},
			{"net/ipv4/conf/default/rp_filter", "0"},
		},
	}
	for _, ifc := range prog.Interfaces {
		dev := ifc.Device
		l, ok := k.links[dev]
		if !ok {
			p.errs = append(p.errs, fmt.Errorf("interface %s: device %s: %w", ifc.Name, dev, ErrNoDevice))
			continue
		}
		p.index[dev] = l.index
		p.sysctls = append(p.sysctls, Sysctl{"net/ipv4/conf/" + dev + "/rp_filter", "0"})
		if ifc.DHCP {
			p.sysctls = append(p.sysctls, Sysctl{"net/ipv6/conf/" + dev + "/accept_ra", "2"})
		}
		if !l.up {
			p.change.LinksUp = append(p.change.LinksUp, dev)
		}
		for _, pfx := range ifc.Addresses {
			if ifc.DHCP && pfx.Addr().Is4() {
				continue // the DHCP client gives the IPv4 address
			}
			i := slices.IndexFunc(l.addrs, func(a kernelAddr) bool { return a.prefix.Addr() == pfx.Addr() })
			switch {
			case i < 0:
				p.change.Addresses = append(p.change.Addresses, Address{dev, pfx})
			case l.addrs[i].prefix != pfx:
				p.errs = append(p.errs, fmt.Errorf("address add %s on %s: the device has it as %s, and netconf removes no address", pfx, dev, l.addrs[i].prefix))
			}
		}
		for _, a := range l.addrs {
			if a.configured && !slices.Contains(ifc.Addresses, a.prefix) {
				p.change.Extra = append(p.change.Extra, Address{dev, a.prefix})
			}
		}
		for _, gw := range ifc.Gateways {
			if !slices.Contains(k.defaults, defaultRoute{l.index, gw}) {
				p.change.Routes = append(p.change.Routes, Route{dev, gw})
			}
		}
	}
	return p
}

// AddressMessage adds pfx to a link, with the broadcast address an IPv4
// subnet has (as `ip address add ... brd +` would).
func AddressMessage(index uint32, pfx netip.Prefix) *rtnetlink.AddressMessage {
	a := pfx.Addr()
	ip := net.IP(a.AsSlice())
	m := &rtnetlink.AddressMessage{
		Family:       unix.AF_INET6,
		PrefixLength: uint8(pfx.Bits()),
		Scope:        unix.RT_SCOPE_UNIVERSE,
		Index:        index,
		Attributes:   &rtnetlink.AddressAttributes{Address: ip, Local: ip},
	}
	if a.Is4() {
		m.Family = unix.AF_INET
		if pfx.Bits() < 31 {
			m.Attributes.Broadcast = broadcast(pfx)
		}
	}
	return m
}

// broadcast is the last address of an IPv4 prefix.
func broadcast(pfx netip.Prefix) net.IP {
	b := pfx.Masked().Addr().As4()
	for i := pfx.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return net.IP(b[:])
}

// RouteMessage is a default route via gw out a link, installed by protocol
// (unix.RTPROT_STATIC for the policy's gateways, RTPROT_DHCP for a lease).
func RouteMessage(index uint32, gw netip.Addr, protocol uint8) *rtnetlink.RouteMessage {
	family := uint8(unix.AF_INET6)
	if gw.Is4() {
		family = unix.AF_INET
	}
	return &rtnetlink.RouteMessage{
		Family:     family,
		Table:      unix.RT_TABLE_MAIN,
		Protocol:   protocol,
		Scope:      unix.RT_SCOPE_UNIVERSE,
		Type:       unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{Gateway: net.IP(gw.AsSlice()), OutIface: index},
	}
}
