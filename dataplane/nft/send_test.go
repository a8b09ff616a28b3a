package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"syscall"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicefw/sluice/dataplane/policy"
)

// What is sent, without a kernel: one batch, every message acknowledged
// and numbered, no element list longer than its 16-bit length can say,
// and every element of every set in it.
func TestTransactionCarriesEveryElement(t *testing.T) {
	const n = 100_000
	rs, err := Build(bigAllowlist(t, n), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := rs.transaction()
	if err != nil {
		t.Fatal(err)
	}
	tx.control(unix.NFNL_MSG_BATCH_END)
	msgs, err := syscall.ParseNetlinkMessage(tx.buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 3 || msgs[0].Header.Type != unix.NFNL_MSG_BATCH_BEGIN || msgs[len(msgs)-1].Header.Type != unix.NFNL_MSG_BATCH_END {
		t.Fatalf("%d messages, not one batch", len(msgs))
	}
	got := map[string]setDigest{}
	for i, m := range msgs[1 : len(msgs)-1] {
		if m.Header.Seq != uint32(i+1) || m.Header.Flags&unix.NLM_F_ACK == 0 {
			t.Fatalf("message %d: sequence %d, flags %#x; want %d with NLM_F_ACK", i+1, m.Header.Seq, m.Header.Flags, i+1)
		}
		if m.Header.Type != msgNewSetElem {
			continue
		}
		var set string
		if err := walkAttrs(m.Data[4:], func(typ uint16, v []byte) error {
			switch typ {
			case unix.NFTA_SET_ELEM_LIST_SET:
				set = string(bytes.TrimRight(v, "\x00"))
			case unix.NFTA_SET_ELEM_LIST_ELEMENTS:
				if len(v)+nlaHeaderLen > maxElementList+64 {
					return fmt.Errorf("element list of %d bytes", len(v))
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		d := got[set]
		if err := walkElements(m.Data[4:], d.add); err != nil {
			t.Fatal(err)
		}
		got[set] = d
	}
	total := 0
	for _, s := range rs.sets {
		if got[s.name] != tx.elements[s.name] || got[s.name].n != s.size() {
			t.Errorf("set %s: the batch holds %+v, the transaction says %+v, the set has %d ranges", s.name, got[s.name], tx.elements[s.name], s.size())
		}
		total += got[s.name].n
	}
	if total < n {
		t.Errorf("%d elements in the batch, want at least %d", total, n)
	}
}

// The elements written by hand mean what google/nftables would have sent
// for the same ranges: the same keys, interval ends and key ends, set by
// set, for every example policy.
func TestElementsMatchLibraryEncoding(t *testing.T) {
	for name, file := range policies {
		t.Run(name, func(t *testing.T) {
			rs := build(t, file)
			tx, err := rs.transaction()
			if err != nil {
				t.Fatal(err)
			}
			ours := elementsBySet(t, tx.buf)
			var lib []byte
			c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
				for _, m := range req {
					b, err := m.MarshalBinary()
					if err != nil {
						return nil, err
					}
					lib = append(lib, b...)
				}
				return req, nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			sets := 0
			for _, s := range rs.sets {
				if s.size() == 0 {
					continue
				}
				sets++
				ns := &nftables.Set{Table: &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}, Name: s.name, ID: s.id}
				if err := c.SetAddElements(ns, libraryElements(s)); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			theirs := elementsBySet(t, lib)
			if sets == 0 || len(ours) != sets || len(theirs) != sets {
				t.Fatalf("sets with elements: %d in the ruleset, %d written, %d from the library", sets, len(ours), len(theirs))
			}
			for set, want := range theirs {
				if !slices.Equal(ours[set], want) {
					t.Errorf("set %s: written\n%q\nthe library writes\n%q", set, ours[set], want)
				}
			}
		})
	}
}

// libraryElements is how sluice built google/nftables elements before it
// wrote them itself: the reference encoding.
func libraryElements(s *set) []nftables.SetElement {
	var out []nftables.SetElement
	if s.concat != nil {
		key := func(a []byte, proto uint8, port uint16) []byte {
			k := append(append([]byte(nil), a...), proto, 0, 0, 0)
			return append(k, byte(port>>8), byte(port), 0, 0)
		}
		for _, c := range s.concat {
			out = append(out, nftables.SetElement{Key: key(c.addrs.lo.AsSlice(), c.proto, c.lo), KeyEnd: key(c.addrs.hi.AsSlice(), c.proto, c.hi)})
		}
		return out
	}
	for _, r := range s.ranges {
		out = append(out, nftables.SetElement{Key: r.lo.AsSlice()})
		if next := r.hi.Next(); next.IsValid() && !s.hosts() {
			out = append(out, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// elementsBySet decodes the NEWSETELEM messages in a stream of netlink
// messages into one line per element: key, key end and flags, by set.
func elementsBySet(t *testing.T, stream []byte) map[string][]string {
	t.Helper()
	msgs, err := syscall.ParseNetlinkMessage(stream)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, m := range msgs {
		if m.Header.Type != msgNewSetElem {
			continue
		}
		var set string
		var elems []string
		err := walkAttrs(m.Data[4:], func(typ uint16, v []byte) error {
			switch typ {
			case unix.NFTA_SET_ELEM_LIST_SET:
				set = string(bytes.TrimRight(v, "\x00"))
			case unix.NFTA_SET_ELEM_LIST_ELEMENTS:
				return walkAttrs(v, func(_ uint16, elem []byte) error {
					var key, keyEnd []byte
					var flags uint32
					err := walkAttrs(elem, func(typ uint16, v []byte) error {
						value := func(dst *[]byte) error {
							return walkAttrs(v, func(typ uint16, v []byte) error {
								if typ == unix.NFTA_DATA_VALUE {
									*dst = v
								}
								return nil
							})
						}
						switch typ {
						case unix.NFTA_SET_ELEM_FLAGS:
							flags = binary.BigEndian.Uint32(v)
						case unix.NFTA_SET_ELEM_KEY:
							return value(&key)
						case nftaSetElemKeyEnd:
							return value(&keyEnd)
						}
						return nil
					})
					elems = append(elems, fmt.Sprintf("%x-%x/%d", key, keyEnd, flags))
					return err
				})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		out[set] = append(out[set], elems...)
	}
	return out
}

// Walking set-element dumps never panics and never runs past its input,
// whatever the kernel (or a corrupted buffer) hands over; what it reads
// from a well-formed batch is what was written.
func FuzzWalkElements(f *testing.F) {
	rs, err := Build(bigAllowlist(f, 50), policy.Options{})
	if err != nil {
		f.Fatal(err)
	}
	tx, err := rs.transaction()
	if err != nil {
		f.Fatal(err)
	}
	msgs, err := syscall.ParseNetlinkMessage(tx.buf)
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range msgs {
		if m.Header.Type == msgNewSetElem {
			f.Add(m.Data[4:])
		}
	}
	f.Add([]byte{})
	f.Add([]byte{4, 0, 3, 0})
	f.Add([]byte{8, 0, 3, 0x80, 255, 255, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		_ = walkElements(b, func(key []byte) {
			if len(key) > len(b) {
				t.Fatalf("a key of %d bytes from %d bytes of input", len(key), len(b))
			}
			n++
		})
		if n > len(b)/nlaHeaderLen {
			t.Fatalf("%d elements from %d bytes", n, len(b))
		}
	})
}
