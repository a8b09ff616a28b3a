package nft

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// dumpSet reads a set of table inet sluice back from the kernel and hands
// the key of every element that is not an interval end to f. It walks the
// dump's bytes itself: google/nftables decodes every element into a value,
// which takes minutes for a million, and even a generic attribute decoder
// costs more than the kernel's walk.
func dumpSet(conn *netlink.Conn, set string, f func(key []byte)) error {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	attrs, err := ae.Encode()
	if err != nil {
		return fmt.Errorf("encode set element dump request for %s: %w", set, err)
	}
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	if _, err := conn.Send(req); err != nil {
		return fmt.Errorf("dump set %s elements: %w", set, err)
	}
	err = receive(conn, func(m syscall.NetlinkMessage) (bool, error) {
		switch m.Header.Type {
		case unix.NLMSG_DONE:
			return true, nil
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
					return true, syscall.Errno(-code)
				}
			}
			return true, nil
		}
		if len(m.Data) < 4 {
			return false, nil
		}
		return false, walkElements(m.Data[4:], f)
	})
	if err != nil {
		return fmt.Errorf("dump set %s elements: %w", set, err)
	}
	return nil
}

// walkElements finds the element list among a set element message's
// attributes and hands each element's key to f, skipping interval ends.
func walkElements(b []byte, f func(key []byte)) error {
	return walkAttrs(b, func(typ uint16, list []byte) error {
		if typ != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			return nil
		}
		return walkAttrs(list, func(_ uint16, elem []byte) error {
			var key []byte
			end := false
			err := walkAttrs(elem, func(typ uint16, v []byte) error {
				switch typ {
				case unix.NFTA_SET_ELEM_FLAGS:
					end = len(v) == 4 && binary.BigEndian.Uint32(v)&unix.NFT_SET_ELEM_INTERVAL_END != 0
				case unix.NFTA_SET_ELEM_KEY:
					return walkAttrs(v, func(typ uint16, v []byte) error {
						if typ == unix.NFTA_DATA_VALUE {
							key = v
						}
						return nil
					})
				}
				return nil
			})
			if err == nil && !end {
				f(key)
			}
			return err
		})
	})
}

// walkAttrs hands each netlink attribute in b to f, its type stripped of
// the nested and byte-order flags.
func walkAttrs(b []byte, f func(typ uint16, v []byte) error) error {
	for len(b) >= nlaHeaderLen {
		n := int(binary.NativeEndian.Uint16(b))
		if n < nlaHeaderLen || n > len(b) {
			return fmt.Errorf("attribute of %d bytes in %d", n, len(b))
		}
		if err := f(binary.NativeEndian.Uint16(b[2:])&nlaTypeMask, b[nlaHeaderLen:n]); err != nil {
			return err
		}
		b = b[min((n+3)&^3, len(b)):]
	}
	return nil
}

// nlaTypeMask strips the nested and byte-order flags from an attribute type.
const nlaTypeMask = 0x3fff

// distinctDigest sums up a set over its distinct keys: a hash set's dump
// can return an element twice when the table is resized between two dump
// messages.
func distinctDigest(conn *netlink.Conn, set string) (setDigest, error) {
	seen := map[string]struct{}{}
	var d setDigest
	err := dumpSet(conn, set, func(key []byte) {
		if _, dup := seen[string(key)]; !dup {
			seen[string(key)] = struct{}{}
			d.add(key)
		}
	})
	return d, err
}

// digestSet sums up a set as the kernel holds it, for comparing with what
// was sent.
func digestSet(conn *netlink.Conn, set string) (setDigest, error) {
	var d setDigest
	err := dumpSet(conn, set, d.add)
	return d, err
}

// dumpBuffer is the receive buffer for dumps. The kernel sizes each dump
// message by the largest read it has seen (up to 32 KiB); reading with a
// page, as a peeking reader does, makes it walk the set eight times as
// often, and every walk starts from the set's beginning.
const dumpBuffer = 64 << 10
