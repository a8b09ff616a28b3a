package flows

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// table is what Conn needs of ctnetlink; *conntrack.Conn is the real one,
// and tests put a fake in its place to see what is sent.
type table interface {
	Dump(*conntrack.DumpOptions) ([]conntrack.Flow, error)
	Delete(conntrack.Flow) error
	Close() error
}

// Conn is one ctnetlink connection to the connection-tracking table of one
// network namespace. Make it with Dial; the zero value is not usable.
//
// List, Delete, Revoke and Close share one socket and are used by one
// goroutine at a time. Follow opens a socket of its own in the same
// namespace, and touches the Conn only while it does: one goroutine may
// Follow while another lists and deletes, and a Follow keeps running after
// Close until its context ends (but Close must not race a Follow that is
// still opening its socket).
//
// Requests carry no deadline: ctnetlink answers them in the sending
// thread, so, unlike an nf_tables batch, a request never waits on the
// kernel to get round to it.
type Conn struct {
	ct    table
	netns int // our own descriptor of the namespace, for Follow's sockets; -1 in tests
}

// Dial connects to the connection-tracking table of the network namespace
// netnsFd refers to, or of the calling thread's namespace when netnsFd is
// -1. The Conn keeps its own descriptor of the namespace (the caller may
// close netnsFd afterwards).
func Dial(netnsFd int) (*Conn, error) {
	ns, err := holdNetns(netnsFd)
	if err != nil {
		return nil, fmt.Errorf("conntrack dial (netns fd %d): %w", netnsFd, err)
	}
	ct, err := conntrack.Dial(&netlink.Config{NetNS: ns})
	if err != nil {
		unix.Close(ns)
		return nil, fmt.Errorf("conntrack dial (netns fd %d): %w", netnsFd, err)
	}
	return &Conn{ct: ct, netns: ns}, nil
}

// holdNetns returns a descriptor of the namespace netnsFd refers to (or the
// calling thread's), numbered 3 or above: netlink.Config takes NetNS 0 to
// mean "the calling thread's".
func holdNetns(netnsFd int) (int, error) {
	if netnsFd >= 0 {
		fd, err := unix.FcntlInt(uintptr(netnsFd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return -1, fmt.Errorf("dup netns fd %d: %w", netnsFd, err)
		}
		return fd, nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	own, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open own netns: %w", err)
	}
	defer unix.Close(own)
	fd, err := unix.FcntlInt(uintptr(own), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return -1, fmt.Errorf("dup own netns fd %d: %w", own, err)
	}
	return fd, nil
}

// Close closes the connection.
func (c *Conn) Close() error {
	err := c.ct.Close()
	if c.netns >= 0 {
		err = errors.Join(err, unix.Close(c.netns))
		c.netns = -1
	}
	if err != nil {
		return fmt.Errorf("conntrack close: %w", err)
	}
	return nil
}

// List returns every flow the kernel tracks in the namespace, IPv4 and
// IPv6, in the kernel's order.
func (c *Conn) List() ([]Flow, error) {
	kf, err := c.ct.Dump(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack list: %w", err)
	}
	out := make([]Flow, len(kf))
	for i := range kf {
		out[i] = fromKernel(&kf[i])
	}
	return out, nil
}

// Delete removes the entry of f's original tuple in f's zone. The
// connection's next packet then starts a new flow and meets the ruleset
// again. A flow that is already gone is an error that satisfies
// errors.Is(err, fs.ErrNotExist).
func (c *Conn) Delete(f Flow) error {
	if err := c.ct.Delete(toKernel(f)); err != nil {
		return fmt.Errorf("conntrack delete %s (zone %d): %w", f, f.Zone, err)
	}
	return nil
}
