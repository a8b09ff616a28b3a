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
	sent    map[string]setDigest // what the last send put in each set
}

// Dial returns a connection to nf_tables in the calling thread's network
// namespace, or in the one netnsFd refers to when it is not -1.
func Dial(netnsFd int, timeout time.Duration) (*Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
			return fmt.Errorf("netlink deadline: %w", err)
		}
		return forceBuffers(c)
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
	if err := forceBuffers(conn); err != nil {
		conn.Close()
		return nil, err
	}
	// Acknowledgements of refused messages carry the header, not the
	// whole (large) message.
	_ = conn.SetOption(netlink.CapAcknowledge, true)
	return conn, nil
}

// forceBuffers raises a netlink socket's buffers to socketBuffer, past the
// system's limits, so that a batch of a million elements is not refused
// and a big dump reads in large messages. Without CAP_NET_ADMIN the forced
// sizes are refused; the default buffers still work for small rulesets, so
// that is not an error.
func forceBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	return raw.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, socketBuffer)
		}
	})
}

// Apply replaces table inet sluice with rs in one transaction: the old table
// stays in force until the new one is complete, and a refused transaction
// leaves it as it was. Other tables are never touched. It then reads the
// sets back: when they do not hold what was sent (ErrShortSet), or cannot
// be read (ErrUnverified), the new table is in force all the same.
func Apply(conn *Conn, rs *Ruleset) error {
	if err := conn.send(rs); err != nil {
		return err
	}
	if err := conn.verify(rs); err != nil && !errors.Is(err, ErrShortSet) {
		return fmt.Errorf("%w: %w", ErrUnverified, err)
	} else if err != nil {
		return err
	}
	return nil
}

// send builds the transaction and hands it to the kernel.
func (conn *Conn) send(rs *Ruleset) error {
	tx, err := rs.transaction()
	if err != nil {
		return err
	}
	raw, err := conn.raw()
	if err != nil {
		return err
	}
	defer raw.Close()
	if err := tx.send(raw); err != nil {
		return fmt.Errorf("nftables transaction (table inet %s, %d sets, %d chains): %w", TableName, len(rs.sets), len(rs.chains), err)
	}
	conn.sent = tx.elements
	return nil
}

// transaction marshals rs as one batch: table inet sluice added, deleted
// and added again (so that it exists to be deleted, and the old one goes
// in the same transaction), its counters, sets with their elements,
// chains and rules.
func (rs *Ruleset) transaction() (*transaction, error) {
	// Whether a set holds single addresses only is a walk of its ranges:
	// once per set.
	hosts := make([]bool, len(rs.sets))
	size := 0
	for i, s := range rs.sets {
		hosts[i] = s.hosts()
		size += s.wireSize(hosts[i])
	}
	tx := newTransaction(size)
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	describe := func(what string) func(netlink.Message) string {
		return func(netlink.Message) string { return what }
	}
	if err := tx.library(func(c *nftables.Conn) error {
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
		for _, name := range rs.Counters {
			c.AddObj(&nftables.CounterObj{Table: t, Name: name})
		}
		return nil
	}, describe("table inet "+TableName+" and its counters")); err != nil {
		return nil, err
	}
	for i, s := range rs.sets {
		ns := &nftables.Set{Table: t, Name: s.name, ID: s.id, Interval: !hosts[i], KeyType: nftables.TypeIP6Addr, Comment: s.comment}
		if hosts[i] {
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
		if err := tx.library(func(c *nftables.Conn) error { return c.AddSet(ns, nil) }, describe("set "+s.name)); err != nil {
			return nil, fmt.Errorf("set add %s: %w", s.name, err)
		}
		tx.setElements(s, hosts[i])
	}
	for _, ch := range rs.chains {
		nc := &nftables.Chain{Name: ch.name, Table: t}
		if ch.base != nil {
			pol := nftables.ChainPolicyDrop
			if ch.base.accept {
				pol = nftables.ChainPolicyAccept
			}
			nc.Type, nc.Hooknum, nc.Priority, nc.Policy = ch.base.typ, ch.base.hook, nftables.ChainPriorityRef(nftables.ChainPriority(ch.base.prio)), &pol
		}
		if err := tx.library(func(c *nftables.Conn) error { c.AddChain(nc); return nil }, describe("chain "+ch.name)); err != nil {
			return nil, err
		}
	}
	for _, ch := range rs.chains {
		nc := &nftables.Chain{Name: ch.name, Table: t}
		i := 0
		if err := tx.library(func(c *nftables.Conn) error {
			for _, r := range ch.rules {
				nr := &nftables.Rule{Table: t, Chain: nc, Exprs: r.p.exprs}
				if r.comment != "" {
					nr.UserData = userdata.AppendString(nil, userdata.TypeComment, r.comment)
				}
				c.AddRule(nr)
			}
			return nil
		}, func(netlink.Message) string {
			i++
			if i > len(ch.rules) {
				return "chain " + ch.name
			}
			r := ch.rules[i-1]
			return fmt.Sprintf("rule %q in chain %s (%s)", r.p.text, ch.name, r.comment)
		}); err != nil {
			return nil, err
		}
	}
	return tx, nil
}

// ErrShortSet reports a set the kernel does not hold as sluice sent it:
// what the truncation pitfall of google/nftables looks like. The new
// ruleset is in force.
var ErrShortSet = errors.New("the kernel does not hold the set elements that were sent")

// ErrUnverified reports a ruleset committed but not read back whole (the
// dump failed or timed out). The new ruleset is in force.
var ErrUnverified = errors.New("the ruleset is in force but could not be read back")

// verify reads every set back and compares it with what send put there,
// by count and by an order-free sum of key hashes. Sets are read by two
// sockets at once: the kernel's walk of a set runs in the reading thread.
// A set whose sum differs is read again and summed over its distinct keys,
// since a dump may repeat an element; it fails unless those add up to what
// was sent. A set filled at run time (DNS answers, with timeouts) need
// only hold what was sent.
func (c *Conn) verify(rs *Ruleset) error {
	const readers = 2
	// The sockets are opened here: a namespace given as -1 is this
	// thread's, and the readers run on other threads.
	var socks []*netlink.Conn
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	for range readers {
		raw, err := c.raw()
		if err != nil {
			return err
		}
		socks = append(socks, raw)
	}
	errs := make(chan error, readers)
	next := make(chan *set)
	for _, raw := range socks {
		go func() {
			var first error
			for s := range next {
				if first == nil {
					first = c.verifySet(raw, s)
				}
			}
			errs <- first
		}()
	}
	for _, s := range rs.sets {
		next <- s
	}
	close(next)
	var first error
	for range readers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (c *Conn) verifySet(raw *netlink.Conn, s *set) error {
	want, sent := c.sent[s.name]
	if sent {
		got, err := digestSet(raw, s.name)
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
	}
	distinct, err := distinctDigest(raw, s.name)
	if err != nil {
		return err
	}
	switch {
	case s.dynamic && distinct.n >= s.size():
		return nil // filled since; the elements sent cannot be told apart from those added
	case !s.dynamic && distinct.n == s.size() && (!sent || distinct == want):
		return nil
	}
	return fmt.Errorf("set %s: sent %d ranges, kernel holds %d distinct ones (or other ones): %w", s.name, s.size(), distinct.n, ErrShortSet)
}

// CountElements returns how many ranges the kernel holds in a set of table
// inet sluice.
func (c *Conn) CountElements(set string) (int, error) {
	raw, err := c.raw()
	if err != nil {
		return 0, err
	}
	defer raw.Close()
	d, err := distinctDigest(raw, set)
	return d.n, err
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
