package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// countSetElements counts the ranges of a set of table inet sluice as the
// kernel holds them, reading the element dump directly: google/nftables
// decodes every element into a value, which takes minutes for a million.
// Interval-end markers are not counted.
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
	msgs, err := conn.Execute(req)
	if err != nil {
		return 0, fmt.Errorf("dump set %s elements: %w", set, err)
	}
	n := 0
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("decode set %s elements: %w", set, err)
		}
		for ad.Next() {
			if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				continue
			}
			ad.Nested(func(list *netlink.AttributeDecoder) error {
				for list.Next() {
					end := false
					list.Nested(func(elem *netlink.AttributeDecoder) error {
						for elem.Next() {
							if elem.Type() == unix.NFTA_SET_ELEM_FLAGS && len(elem.Bytes()) == 4 {
								end = binary.BigEndian.Uint32(elem.Bytes())&unix.NFT_SET_ELEM_INTERVAL_END != 0
							}
						}
						return nil
					})
					if !end {
						n++
					}
				}
				return nil
			})
		}
		if err := ad.Err(); err != nil {
			return 0, fmt.Errorf("decode set %s elements: %w", set, err)
		}
	}
	return n, nil
}
