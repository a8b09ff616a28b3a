package nft

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"net/netip"
	"syscall"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// A transaction is one nf_tables batch, as the bytes handed to the kernel
// in a single sendmsg: the kernel applies all of it or none of it.
//
// The table, counters, sets, chains and rules are marshalled by
// google/nftables, captured before they reach a socket. Set elements are
// written here, straight into the batch: the library builds a value, an
// attribute list and several small buffers per element, which for a
// million elements costs more than the kernel's own work, and v0.3.0
// silently truncates an element list whose length passes 16 bits. Every
// message asks for an acknowledgement, so the kernel answers each one, and
// a refusal names the message it refused.
type transaction struct {
	buf  []byte
	what []string // what each message does, by sequence number - 1
	// elements is what verification expects back, by set name: the number
	// of elements that are not interval ends and the sum of their keys'
	// hashes.
	elements map[string]setDigest
}

// setDigest is what a set holds, in a form cheap to compare with a dump:
// how many elements (interval ends not counted) and an order-free sum of
// their keys' hashes.
type setDigest struct {
	n   int
	sum uint64
}

func (d *setDigest) add(key []byte) {
	d.n++
	d.sum += maphash.Bytes(digestSeed, key)
}

// digestSeed is fixed for the process: the digests of what was sent and
// what is read back are compared in the same process.
var digestSeed = maphash.MakeSeed()

// maxElementList bounds the bytes of one message's element list: its
// length is a 16-bit attribute length.
const maxElementList = 60 << 10

const (
	nlaHeaderLen  = 4
	msgNewSetElem = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM
	// nftaSetElemKeyEnd is the attribute holding an interval's end in
	// concatenated sets (Linux 5.6), missing from x/sys/unix.
	nftaSetElemKeyEnd = 10
)

// newTransaction returns a batch with room for about size bytes of set
// elements.
func newTransaction(size int) *transaction {
	tx := &transaction{buf: make([]byte, 0, 64<<10+size), elements: map[string]setDigest{}}
	tx.control(unix.NFNL_MSG_BATCH_BEGIN)
	return tx
}

// control appends a batch begin or end message, which the kernel does not
// acknowledge.
func (tx *transaction) control(typ uint16) {
	start := tx.header(typ, unix.NLM_F_REQUEST, false)
	tx.buf = append(tx.buf, unix.AF_UNSPEC, unix.NFNETLINK_V0)
	tx.buf = binary.BigEndian.AppendUint16(tx.buf, unix.NFNL_SUBSYS_NFTABLES)
	tx.finish(start)
}

// header starts a message and returns where it starts; finish writes its
// length. Acknowledged messages are numbered from 1 in the order written.
func (tx *transaction) header(typ, flags uint16, ack bool) int {
	start := len(tx.buf)
	seq := uint32(0)
	if ack {
		flags |= unix.NLM_F_ACK
		seq = uint32(len(tx.what) + 1)
	}
	tx.buf = binary.NativeEndian.AppendUint32(tx.buf, 0)
	tx.buf = binary.NativeEndian.AppendUint16(tx.buf, typ)
	tx.buf = binary.NativeEndian.AppendUint16(tx.buf, flags)
	tx.buf = binary.NativeEndian.AppendUint32(tx.buf, seq)
	tx.buf = binary.NativeEndian.AppendUint32(tx.buf, 0)
	return start
}

func (tx *transaction) finish(start int) {
	tx.buf = pad(tx.buf)
	binary.NativeEndian.PutUint32(tx.buf[start:], uint32(len(tx.buf)-start))
}

func pad(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// attr appends an attribute holding data.
func (tx *transaction) attr(typ uint16, data []byte) {
	tx.buf = binary.NativeEndian.AppendUint16(tx.buf, uint16(nlaHeaderLen+len(data)))
	tx.buf = binary.NativeEndian.AppendUint16(tx.buf, typ)
	tx.buf = pad(append(tx.buf, data...))
}

// nest starts a nested attribute; end writes its length.
func (tx *transaction) nest(typ uint16) int {
	start := len(tx.buf)
	tx.buf = binary.NativeEndian.AppendUint16(tx.buf, 0)
	tx.buf = binary.NativeEndian.AppendUint16(tx.buf, typ|unix.NLA_F_NESTED)
	return start
}

func (tx *transaction) end(start int) {
	binary.NativeEndian.PutUint16(tx.buf[start:], uint16(len(tx.buf)-start))
}

// library appends the messages google/nftables makes for what add
// programs, each described for error messages by describe.
func (tx *transaction) library(add func(c *nftables.Conn) error, describe func(m netlink.Message) string) error {
	var captured []netlink.Message
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		captured = append(captured, req...)
		return req, nil
	}))
	if err != nil {
		return err
	}
	if err := add(c); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return err
	}
	for _, m := range captured {
		switch m.Header.Type {
		case unix.NFNL_MSG_BATCH_BEGIN, unix.NFNL_MSG_BATCH_END:
			continue
		}
		start := tx.header(uint16(m.Header.Type), uint16(m.Header.Flags), true)
		tx.buf = append(tx.buf, m.Data...)
		tx.finish(start)
		tx.what = append(tx.what, describe(m))
	}
	return nil
}

// setElements appends s's elements, in as many messages as their lists
// need; hosts is s.hosts().
func (tx *transaction) setElements(s *set, hosts bool) {
	var digest setDigest
	var key, keyEnd []byte
	msg, list, i := -1, -1, 0
	closeMsg := func() {
		tx.end(list)
		tx.finish(msg)
		tx.what = append(tx.what, fmt.Sprintf("elements of set %s", s.name))
		msg = -1
	}
	element := func(key, keyEnd []byte, intervalEnd bool) {
		if msg >= 0 && len(tx.buf)-list > maxElementList {
			closeMsg()
		}
		if msg < 0 {
			msg = tx.header(msgNewSetElem, unix.NLM_F_REQUEST|unix.NLM_F_CREATE, true)
			tx.buf = append(tx.buf, unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0)
			tx.attr(unix.NFTA_SET_ELEM_LIST_TABLE, []byte(TableName+"\x00"))
			tx.attr(unix.NFTA_SET_ELEM_LIST_SET, []byte(s.name+"\x00"))
			tx.attr(unix.NFTA_SET_ELEM_LIST_SET_ID, binary.BigEndian.AppendUint32(nil, s.id))
			list = tx.nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS)
			i = 0
		}
		i++
		el := tx.nest(uint16(i))
		if intervalEnd {
			tx.attr(unix.NFTA_SET_ELEM_FLAGS, binary.BigEndian.AppendUint32(nil, unix.NFT_SET_ELEM_INTERVAL_END))
		} else {
			digest.add(key)
		}
		k := tx.nest(unix.NFTA_SET_ELEM_KEY)
		tx.attr(unix.NFTA_DATA_VALUE, key)
		tx.end(k)
		if keyEnd != nil {
			k := tx.nest(nftaSetElemKeyEnd)
			tx.attr(unix.NFTA_DATA_VALUE, keyEnd)
			tx.end(k)
		}
		tx.end(el)
	}
	if s.concat != nil {
		// An element of a concatenated interval set carries its range's
		// start and end together; each field is padded to 4 bytes.
		concatKey := func(b []byte, a netip.Addr, proto uint8, port uint16) []byte {
			b = appendAddr(b[:0], a)
			return append(b, proto, 0, 0, 0, byte(port>>8), byte(port), 0, 0)
		}
		for _, c := range s.concat {
			key = concatKey(key, c.addrs.lo, c.proto, c.lo)
			keyEnd = concatKey(keyEnd, c.addrs.hi, c.proto, c.hi)
			element(key, keyEnd, false)
		}
	} else {
		// Ranges become interval set elements: each starts with its first
		// address and ends with the address after its last, unless it runs
		// to the top of the address space. A set of single addresses is a
		// hash and needs no ends.
		for _, r := range s.ranges {
			key = appendAddr(key[:0], r.lo)
			element(key, nil, false)
			if next := r.hi.Next(); next.IsValid() && !hosts {
				key = appendAddr(key[:0], next)
				element(key, nil, true)
			}
		}
	}
	if msg >= 0 {
		closeMsg()
	}
	tx.elements[s.name] = digest
}

// wireSize estimates the bytes s's elements take in a batch: per element
// a nested attribute, a nested key and its value, and an interval end
// for each range of an interval set.
func (s *set) wireSize(hosts bool) int {
	key := 16
	if s.v4 {
		key = 4
	}
	switch {
	case s.concat != nil:
		return len(s.concat) * (2*(12+key+8) + 4)
	case hosts:
		return len(s.ranges) * (12 + key)
	}
	return len(s.ranges) * (12 + key + 8) * 2
}

// appendAddr appends a's bytes: 4 for IPv4, 16 for IPv6.
func appendAddr(b []byte, a netip.Addr) []byte {
	if a.Is4() {
		a4 := a.As4()
		return append(b, a4[:]...)
	}
	a16 := a.As16()
	return append(b, a16[:]...)
}

// send hands the batch to the kernel in one sendmsg and reads the answer
// to every message. A refusal is returned as the kernel's error, naming
// the message it was for.
func (tx *transaction) send(conn *netlink.Conn) error {
	tx.control(unix.NFNL_MSG_BATCH_END)
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), tx.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("send %d bytes: %w", len(tx.buf), serr)
	}
	var refused error
	answered := 0
	err = receive(conn, func(m syscall.NetlinkMessage) (bool, error) {
		if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
			return false, nil
		}
		answered++
		code := int32(binary.NativeEndian.Uint32(m.Data))
		if code == 0 {
			return answered == len(tx.what), nil
		}
		errno := syscall.Errno(-code)
		seq := int(m.Header.Seq)
		if seq < 1 || seq > len(tx.what) || errno == unix.EPERM || errno == unix.ENOBUFS {
			// An answer to the whole batch: nothing else comes.
			if refused == nil {
				refused = fmt.Errorf("the batch: %w", errno)
			}
			return true, nil
		}
		if refused == nil {
			refused = fmt.Errorf("%s: %w", tx.what[seq-1], errno)
		}
		return answered == len(tx.what), nil
	})
	if refused != nil {
		return refused
	}
	return err
}

// receive reads netlink messages and hands each to f until f says it is
// done or returns an error.
func receive(conn *netlink.Conn, f func(m syscall.NetlinkMessage) (bool, error)) error {
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
			done, err := f(m)
			if err != nil || done {
				return err
			}
		}
	}
}
