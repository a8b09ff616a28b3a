package lab

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Injector sends raw Ethernet frames out of one interface inside a
// namespace, so tests can send what no socket would: spoofed sources,
// impossible TCP flags, unsolicited ICMP errors.
type Injector struct {
	fd      int
	ifindex int
	MAC     net.HardwareAddr // the interface's own address
}

// Injector opens a packet socket on device dev inside namespace ns.
func (l *Lab) Injector(ns, dev string) (*Injector, error) {
	inj := &Injector{fd: -1}
	err := Do(ns, func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) // 0: send only, receive nothing
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifc.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to %s: %w", dev, err)
		}
		inj.fd, inj.ifindex, inj.MAC = fd, ifc.Index, ifc.HardwareAddr
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("injector on %s in %s: %w", dev, ns, err)
	}
	return inj, nil
}

// Send writes one Ethernet frame.
func (i *Injector) Send(frame []byte) error {
	if err := unix.Sendto(i.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: i.ifindex}); err != nil {
		return fmt.Errorf("send %d-byte frame: %w", len(frame), err)
	}
	return nil
}

// Close closes the socket.
func (i *Injector) Close() error { return unix.Close(i.fd) }

// MAC returns the hardware address of device dev in namespace ns.
func MAC(ns, dev string) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := Do(ns, func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		mac = ifc.HardwareAddr
		return nil
	})
	return mac, err
}
