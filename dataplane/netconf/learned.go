package netconf

import (
	"net"
	"net/netip"
	"slices"

	"github.com/sluicefw/sluice/dataplane/policy"
)

// Learned returns what the policy's interfaces hold now, in this network
// namespace, that the policy does not say: on DHCP interfaces, a lease's
// IPv4 address and the IPv6 addresses the uplink configured itself (the
// box's own addresses, whose prefixes are their zone's own, exempt from
// the bogon check, as static ones are); on every interface, its IPv6
// link-local addresses. Interfaces not present contribute nothing.
func Learned(prog *policy.Program) policy.Options {
	opts := policy.Options{Addresses: map[string][]netip.Prefix{}, LinkLocal: map[string][]netip.Addr{}}
	for _, ifc := range prog.Interfaces {
		dev, err := net.InterfaceByName(ifc.Device)
		if err != nil {
			continue // not there (yet): nothing learned
		}
		addrs, err := dev.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.Is6() && ip.IsLinkLocalUnicast() {
				opts.LinkLocal[ifc.Name] = append(opts.LinkLocal[ifc.Name], ip)
				continue
			}
			if !ifc.DHCP || !ip.IsGlobalUnicast() {
				continue // static, loopback, multicast: not a lease
			}
			bits, _ := ipn.Mask.Size()
			pfx := netip.PrefixFrom(ip, bits)
			if !slices.Contains(ifc.Addresses, pfx) {
				opts.Addresses[ifc.Name] = append(opts.Addresses[ifc.Name], pfx)
			}
		}
	}
	return opts
}

// SameAddresses reports whether two sets of learned addresses are equal.
func SameAddresses(a, b policy.Options) bool {
	if len(a.Addresses) != len(b.Addresses) {
		return false
	}
	for k, v := range a.Addresses {
		if !slices.Equal(v, b.Addresses[k]) {
			return false
		}
	}
	return true
}
