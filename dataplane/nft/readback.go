package nft

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// countSetElements counts the distinct elements of a set of table inet
// sluice as the kernel holds them, reading the element dump directly:
// google/nftables decodes every element into a value, which takes minutes
// for a million. Interval-end markers are not counted.
func countSetElements(conn *netlink.Conn, set string) (int, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	attrs, err := ae.Encode()
	if err != nil {
		return 0, fmt.Errorf("encode set element dump request for %s: %w", set, err)
	}
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	if _, err := conn.Send(req); err != nil {
		return 0, fmt.Errorf("dump set %s elements: %w", set, err)
	}
	// Distinct keys are counted: a hash set's dump can return an element
	// twice when the table is resized between two dump messages.
	seen := map[string]struct{}{}
	err = receiveDump(conn, func(data []byte) error {
		if len(data) < 4 {
			return nil
		}
		ad, err := netlink.NewAttributeDecoder(data[4:])
		if err != nil {
			return fmt.Errorf("decode set %s elements: %w", set, err)
		}
		for ad.Next() {
			if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				continue
			}
			ad.Nested(func(list *netlink.AttributeDecoder) error {
				for list.Next() {
					end := false
					var key string
					list.Nested(func(elem *netlink.AttributeDecoder) error {
						for elem.Next() {
							switch elem.Type() & nlaTypeMask {
							case unix.NFTA_SET_ELEM_FLAGS:
								if len(elem.Bytes()) == 4 {
									end = binary.BigEndian.Uint32(elem.Bytes())&unix.NFT_SET_ELEM_INTERVAL_END != 0
								}
							case unix.NFTA_SET_ELEM_KEY:
								key = string(elem.Bytes())
							}
						}
						return nil
					})
					if !end {
						seen[key] = struct{}{}
					}
				}
				return nil
			})
		}
		if err := ad.Err(); err != nil {
			return fmt.Errorf("decode set %s elements: %w", set, err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("dump set %s elements: %w", set, err)
	}
	return len(seen), nil
}

// nlaTypeMask strips the nested and byte-order flags from an attribute type.
const nlaTypeMask = 0x3fff

// dumpBuffer is the receive buffer for dumps. The kernel sizes each dump
// message by the largest read it has seen (up to 32 KiB); reading with a
// page, as a peeking reader does, makes it walk the set eight times as
// often, and every walk starts from the set's beginning.
const dumpBuffer = 64 << 10

// receiveDump reads the messages of one dump and hands each one's payload
// to f, until the kernel says it is done.
func receiveDump(conn *netlink.Conn, f func(data []byte) error) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	buf := make([]byte, dumpBuffer)
	for {
		var n int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		}); err != nil {
			return err
		}
		if rerr != nil {
			return rerr
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("parse netlink messages: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
						return syscall.Errno(-code)
					}
				}
				return nil
			}
			if err := f(m.Data); err != nil {
				return err
			}
		}
	}
}
