package nft

import (
	"encoding/binary"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicefw/sluice/dataplane/policy"
)

// What is sent, without a kernel: one transaction, with every set's
// elements in messages of at most chunkElements, and every element sent.
func TestSendChunksElements(t *testing.T) {
	const n = 10_000
	prog := bigAllowlist(t, n)
	rs, err := Build(prog, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var batches, largest, sent int
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		for _, m := range req {
			switch m.Header.Type {
			case netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN):
				batches++
			case netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM):
				k := countElementAttrs(t, m.Data[4:])
				largest = max(largest, k)
				sent += k
			}
		}
		return req, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Conn{nft: c, netnsFd: -1}).send(rs); err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, s := range rs.sets {
		want += len(s.elements())
	}
	if batches != 1 || largest > 2048 || sent != want || want < n {
		t.Errorf("sent %d batches, %d elements (want %d, at least %d) in messages of at most %d (want at most 2048: larger messages are truncated by google/nftables)", batches, sent, want, n, largest)
	}
}

// countElementAttrs counts the elements in one NEWSETELEM message's
// attributes.
func countElementAttrs(t *testing.T, b []byte) int {
	t.Helper()
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		t.Fatal(err)
	}
	ad.ByteOrder = binary.BigEndian
	n := 0
	for ad.Next() {
		if ad.Type() == unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			ad.Nested(func(list *netlink.AttributeDecoder) error {
				for list.Next() {
					n++
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
