package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicefw/sluice/dataplane/netconf"
)

// kernel installs and removes a lease's address and default route over one
// rtnetlink socket, opened in the namespace of the thread that dialled it.
// It is not safe for concurrent use.
type kernel struct {
	c     *netlink.Conn
	index uint32 // the device's link index
}

func dialKernel(index int) (*kernel, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return nil, fmt.Errorf("rtnetlink dial: %w", err)
	}
	return &kernel{c: c, index: uint32(index)}, nil
}

func (k *kernel) Close() error { return k.c.Close() }

// lifetime is the kernel's lifetime for what is left of a lease: whole
// seconds, at least one, and infinite only for an infinite lease.
func lifetime(left time.Duration) uint32 {
	if left == forever {
		return infinite
	}
	s := math.Ceil(left.Seconds())
	switch {
	case s < 1:
		return 1
	case s >= infinite:
		return infinite - 1
	}
	return uint32(s)
}

// setAddress adds pfx to the device, or updates it there, with valid and
// preferred lifetimes of left, so that the kernel removes it when the
// lease runs out whether or not sluice is still running.
func (k *kernel) setAddress(pfx netip.Prefix, left time.Duration) error {
	b, err := netconf.AddressMessage(k.index, pfx).MarshalBinary()
	if err != nil {
		return fmt.Errorf("address replace %s: %w", pfx, err)
	}
	lft := lifetime(left)
	ci := make([]byte, 16) // struct ifa_cacheinfo: preferred, valid, created, updated
	binary.NativeEndian.PutUint32(ci[0:4], lft)
	binary.NativeEndian.PutUint32(ci[4:8], lft)
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.IFA_CACHEINFO, ci)
	attr, err := ae.Encode()
	if err != nil {
		return fmt.Errorf("address replace %s: %w", pfx, err)
	}
	flags := netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Replace
	if err := k.execute(unix.RTM_NEWADDR, flags, append(b, attr...)); err != nil {
		return fmt.Errorf("address replace %s lifetime %ds: %w", pfx, lft, err)
	}
	return nil
}

// deleteAddress removes pfx from the device; one already gone (expired in
// the kernel) is not an error.
func (k *kernel) deleteAddress(pfx netip.Prefix) error {
	b, err := netconf.AddressMessage(k.index, pfx).MarshalBinary()
	if err == nil {
		err = k.execute(unix.RTM_DELADDR, netlink.Request|netlink.Acknowledge, b)
	}
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("address delete %s: %w", pfx, err)
	}
	return nil
}

// setRoute puts a default route via gw out the device in the main table,
// in place of the default route of the same metric there.
func (k *kernel) setRoute(gw netip.Addr) error {
	b, err := netconf.RouteMessage(k.index, gw, unix.RTPROT_DHCP).MarshalBinary()
	if err == nil {
		err = k.execute(unix.RTM_NEWROUTE, netlink.Request|netlink.Acknowledge|netlink.Create|netlink.Replace, b)
	}
	if err != nil {
		return fmt.Errorf("route replace default via %s: %w", gw, err)
	}
	return nil
}

// deleteRoute removes the default route via gw out the device; one already
// gone (with its address) is not an error.
func (k *kernel) deleteRoute(gw netip.Addr) error {
	b, err := netconf.RouteMessage(k.index, gw, unix.RTPROT_DHCP).MarshalBinary()
	if err == nil {
		err = k.execute(unix.RTM_DELROUTE, netlink.Request|netlink.Acknowledge, b)
	}
	if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("route delete default via %s: %w", gw, err)
	}
	return nil
}

func (k *kernel) execute(typ netlink.HeaderType, flags netlink.HeaderFlags, data []byte) error {
	_, err := k.c.Execute(netlink.Message{Header: netlink.Header{Type: typ, Flags: flags}, Data: data})
	return err
}
