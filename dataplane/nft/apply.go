package nft

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// chunkElements bounds the elements of one set-element message:
// google/nftables v0.3.0 silently truncates a SetAddElements call above
// about 4096 elements (a 16-bit length wraps). Several calls in one Flush
// stay one transaction.
const chunkElements = 2048

// socketBuffer is the netlink socket buffer sluice asks for, so that a
// batch of a million elements is not refused.
const socketBuffer = 64 << 20

// Conn talks to nf_tables in one network namespace. Each request has a
// deadline: without nf_tables in the kernel, a flush would otherwise wait
// forever. A Conn is used by one goroutine at a time.
type Conn struct {
	nft     *nftables.Conn
	netnsFd int
	timeout time.Duration
}

// Dial returns a connection to nf_tables in the calling thread's network
// namespace, or in the one netnsFd refers to when it is not -1.
func Dial(netnsFd int, timeout time.Duration) (*Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
			return fmt.Errorf("netlink deadline: %w", err)
		}
		raw, err := c.SyscallConn()
		if err != nil {
			return fmt.Errorf("netlink socket: %w", err)
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, socketBuffer); e != nil && serr == nil {
					serr = fmt.Errorf("setsockopt %d: %w", opt, e)
				}
			}
		}); err != nil {
			return err
		}
		// Without CAP_NET_ADMIN the forced sizes are refused; the default
		// buffers still work for small rulesets, so this is not fatal.
		_ = serr
		return nil
	})}
	if netnsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables connection: %w", err)
	}
	return &Conn{nft: c, netnsFd: netnsFd, timeout: timeout}, nil
}

// raw opens a plain netfilter netlink socket in the same namespace, for the
// requests google/nftables makes too slowly.
func (c *Conn) raw() (*netlink.Conn, error) {
	cfg := &netlink.Config{}
	if c.netnsFd >= 0 {
		cfg.NetNS = c.netnsFd
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("netfilter netlink: %w", err)
	}
	if err := conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("netlink deadline: %w", err)
	}
	_ = conn.SetReadBuffer(socketBuffer) // a larger buffer only speeds up big dumps
	return conn, nil
}

// Apply replaces table inet sluice with rs in one transaction: the old table
// stays in force until the new one is complete, and an error leaves it as it
// was. Other tables are never touched. It then reads the sets back and fails
// if the kernel holds fewer elements than were sent.
func Apply(conn *Conn, rs *Ruleset) error {
	if err := conn.send(rs); err != nil {
		return err
	}
	return conn.verify(rs)
}

// send builds and flushes the transaction.
func (conn *Conn) send(rs *Ruleset) error {
	c := conn.nft
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	for _, name := range rs.Counters {
		c.AddObj(&nftables.CounterObj{Table: t, Name: name})
	}
	for _, s := range rs.sets {
		ns := &nftables.Set{Table: t, Name: s.name, ID: s.id, Interval: !s.hosts(), KeyType: nftables.TypeIP6Addr, Comment: s.comment}
		if s.hosts() {
			// Sized up front, the kernel's hash never resizes, and a dump
			// neither repeats nor skips elements.
			ns.Size = uint32(s.size())
		}
		if s.v4 {
			ns.KeyType = nftables.TypeIPAddr
		}
		if s.concat != nil {
			ns.Concatenation = true
			ns.KeyType = nftables.MustConcatSetType(ns.KeyType, nftables.TypeInetProto, nftables.TypeInetService)
		}
		if s.dynamic {
			ns.HasTimeout = true
		}
		if err := c.AddSet(ns, nil); err != nil {
			return fmt.Errorf("set add %s: %w", s.name, err)
		}
		elems := s.elements()
		for i := 0; i < len(elems); i += chunkElements {
			chunk := elems[i:min(i+chunkElements, len(elems))]
			if err := c.SetAddElements(ns, chunk); err != nil {
				return fmt.Errorf("set element add %s (%d elements): %w", s.name, len(chunk), err)
			}
		}
	}
	chains := map[string]*nftables.Chain{}
	for _, ch := range rs.chains {
		nc := &nftables.Chain{Name: ch.name, Table: t}
		if ch.base != nil {
			pol := nftables.ChainPolicyDrop
			if ch.base.accept {
				pol = nftables.ChainPolicyAccept
			}
			nc.Type, nc.Hooknum, nc.Priority, nc.Policy = ch.base.typ, ch.base.hook, nftables.ChainPriorityRef(nftables.ChainPriority(ch.base.prio)), &pol
		}
		chains[ch.name] = c.AddChain(nc)
	}
	for _, ch := range rs.chains {
		for _, r := range ch.rules {
			nr := &nftables.Rule{Table: t, Chain: chains[ch.name], Exprs: r.p.exprs}
			if r.comment != "" {
				nr.UserData = userdata.AppendString(nil, userdata.TypeComment, r.comment)
			}
			c.AddRule(nr)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables transaction (table inet %s, %d sets, %d chains): %w", TableName, len(rs.sets), len(rs.chains), err)
	}
	return nil
}

// elements turns ranges into interval set elements: each range starts with
// its first address and ends with the address after its last, unless it
// runs to the top of the address space.
func (s *set) elements() []nftables.SetElement {
	if s.concat != nil {
		// An element of a concatenated interval set carries its range's
		// start and end together; each field is padded to 4 bytes.
		key := func(a []byte, proto uint8, port uint16) []byte {
			k := append(append([]byte(nil), a...), proto, 0, 0, 0)
			return append(k, byte(port>>8), byte(port), 0, 0)
		}
		out := make([]nftables.SetElement, 0, len(s.concat))
		for _, c := range s.concat {
			out = append(out, nftables.SetElement{Key: key(c.addrs.lo.AsSlice(), c.proto, c.lo), KeyEnd: key(c.addrs.hi.AsSlice(), c.proto, c.hi)})
		}
		return out
	}
	out := make([]nftables.SetElement, 0, 2*len(s.ranges))
	hosts := s.hosts()
	for _, r := range s.ranges {
		out = append(out, nftables.SetElement{Key: r.lo.AsSlice()})
		if next := r.hi.Next(); next.IsValid() && !hosts {
			out = append(out, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// ErrShortSet reports a set the kernel holds fewer elements of than sluice
// sent: what the truncation pitfall of google/nftables looks like.
var ErrShortSet = errors.New("the kernel holds fewer set elements than were sent")

func (c *Conn) verify(rs *Ruleset) error {
	raw, err := c.raw()
	if err != nil {
		return err
	}
	defer raw.Close()
	for _, s := range rs.sets {
		got, err := countSetElements(raw, s.name)
		if err != nil {
			return err
		}
		if got != s.size() {
			return fmt.Errorf("set %s: sent %d ranges, kernel holds %d: %w", s.name, s.size(), got, ErrShortSet)
		}
	}
	return nil
}

// CountElements returns how many ranges the kernel holds in a set of table
// inet sluice.
func (c *Conn) CountElements(set string) (int, error) {
	raw, err := c.raw()
	if err != nil {
		return 0, err
	}
	defer raw.Close()
	return countSetElements(raw, set)
}

// Counter is what one rule's named counter holds.
type Counter struct {
	Packets, Bytes uint64
}

// Counters returns the packets counted so far by each named counter of table
// inet sluice, by rule ID; reset sets them back to zero as they are read.
func (c *Conn) Counters(reset bool) (map[string]uint64, error) {
	all, err := c.RuleCounters(reset)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(all))
	for id, co := range all {
		out[id] = co.Packets
	}
	return out, nil
}

// RuleCounters returns the packets and bytes counted so far by each named
// counter of table inet sluice, by rule ID; reset sets them back to zero as
// they are read.
func (c *Conn) RuleCounters(reset bool) (map[string]Counter, error) {
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	var objs []nftables.Obj
	var err error
	if reset {
		objs, err = c.nft.ResetObjects(t)
	} else {
		objs, err = c.nft.GetObjects(t)
	}
	if err != nil {
		return nil, fmt.Errorf("read counters of table inet %s: %w", TableName, err)
	}
	out := make(map[string]Counter, len(objs))
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok {
			out[co.Name] = Counter{Packets: co.Packets, Bytes: co.Bytes}
		}
	}
	return out, nil
}
