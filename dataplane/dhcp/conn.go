package dhcp

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"
)

// listen opens a UDP socket on 0.0.0.0:port that takes only what arrives
// on dev and sends only out of it, may send to 255.255.255.255, and shares
// the port with other sockets bound to other devices. With no address on
// dev yet, the kernel still delivers limited-broadcast datagrams to it,
// which is why the client asks servers to broadcast their replies; it
// sends through it once it holds an address.
//
// The socket belongs to the network namespace of the calling thread.
func listen(ctx context.Context, dev string, port int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, raw syscall.RawConn) error {
		var serr error
		err := raw.Control(func(fd uintptr) {
			s := int(fd)
			if serr = unix.SetsockoptString(s, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev); serr != nil {
				serr = fmt.Errorf("SO_BINDTODEVICE %s: %w", dev, serr)
				return
			}
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				serr = fmt.Errorf("SO_BROADCAST: %w", serr)
				return
			}
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				serr = fmt.Errorf("SO_REUSEADDR: %w", serr)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		return nil, fmt.Errorf("listen udp 0.0.0.0:%d on %s: %w", port, dev, err)
	}
	return pc.(*net.UDPConn), nil
}

// rawSender sends a client's first messages, before it has an address, as
// whole IPv4 datagrams from 0.0.0.0 (RFC 2131 4.1). A UDP socket cannot:
// with no address on its device, the kernel takes the source from another
// interface, which would show a LAN address to the provider. It receives
// nothing (protocol 0); replies arrive on the UDP socket.
type rawSender struct {
	fd int
	to unix.SockaddrLinklayer
}

// openRawSender opens a packet socket in the calling thread's namespace
// that broadcasts out the link with the index.
func openRawSender(index int) (*rawSender, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	s := &rawSender{fd: fd, to: unix.SockaddrLinklayer{
		Protocol: htons(unix.ETH_P_IP),
		Ifindex:  index,
		Halen:    6,
		Addr:     [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}}
	return s, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// send broadcasts payload from 0.0.0.0:68 to 255.255.255.255:67.
func (s *rawSender) send(payload []byte) error {
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.IPv4zero, DstIP: net.IPv4bcast,
	}
	udp := &layers.UDP{SrcPort: clientPort, DstPort: serverPort}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		return fmt.Errorf("udp checksum: %w", err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(payload)); err != nil {
		return fmt.Errorf("encode datagram: %w", err)
	}
	if err := unix.Sendto(s.fd, buf.Bytes(), 0, &s.to); err != nil {
		return fmt.Errorf("send to 255.255.255.255:67 from 0.0.0.0: %w", err)
	}
	return nil
}

func (s *rawSender) Close() error { return unix.Close(s.fd) }
