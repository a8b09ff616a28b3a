package flows

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// EventType is what happened to a flow.
type EventType uint8

const (
	EventNew     EventType = iota + 1 // the kernel started tracking the flow
	EventUpdate                       // its state, status or timeout changed
	EventDestroy                      // the kernel forgot it: expired, closed or deleted
)

func (t EventType) String() string {
	switch t {
	case EventNew:
		return "new"
	case EventUpdate:
		return "update"
	case EventDestroy:
		return "destroy"
	}
	return "unknown"
}

// Event is one change to the table, with the flow as the kernel reported it
// (a destroy event carries the final counters when accounting is on), and
// the running totals of what this Follow could not deliver.
type Event struct {
	Type EventType
	Flow Flow

	// Dropped counts the events this Follow dropped so far because out
	// was full.
	Dropped uint64
	// Overflows counts the times so far the kernel found the socket's
	// buffer full and discarded an unknown number of events (ENOBUFS).
	Overflows uint64
	// Undecoded counts the messages so far that did not decode as a flow
	// with its original tuple.
	Undecoded uint64
}

// followBuffer is the socket receive buffer Follow asks for, so that a
// burst of events outlasts a scheduling hiccup of the reader. The kernel
// caps it at net.core.rmem_max.
const followBuffer = 4 << 20

// Follow sends the table's new, update and destroy events to out until ctx
// ends, then returns ctx.Err(); any other return is a failure of the
// socket. It never blocks on out: when out is full the event is dropped and
// counted in the next delivered Event, so a slow consumer cannot stall the
// kernel socket's reader. Follow does not close out.
//
// The kernel sends events only while the namespace's
// net.netfilter.nf_conntrack_events allows them. At its default, 2, it
// does so only for flows created while some listener was subscribed: a flow
// that began before any Follow started yields no event, not even when it is
// destroyed.
func (c *Conn) Follow(ctx context.Context, out chan<- Event) error {
	nf, err := netfilter.Dial(&netlink.Config{NetNS: c.netns})
	if err != nil {
		return fmt.Errorf("conntrack follow: dial: %w", err)
	}
	defer nf.Close()
	if err := nf.JoinGroups(netfilter.GroupsCT); err != nil {
		return fmt.Errorf("conntrack follow: join groups %v: %w", netfilter.GroupsCT, err)
	}
	if err := nf.SetReadBuffer(followBuffer); err != nil {
		return fmt.Errorf("conntrack follow: read buffer %d bytes: %w", followBuffer, err)
	}
	// A deadline in the past wakes the reader; it then sees ctx is done.
	stop := context.AfterFunc(ctx, func() { _ = nf.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	return follow(ctx, nf.Receive, out)
}

// follow is Follow's reader: it decodes what receive returns and hands it
// to out without ever blocking.
func follow(ctx context.Context, receive func() ([]netlink.Message, error), out chan<- Event) error {
	var n Event // the running totals
	for {
		msgs, err := receive()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, unix.ENOBUFS) {
			n.Overflows++
			continue
		}
		if err != nil {
			return fmt.Errorf("conntrack follow: receive: %w", err)
		}
		for _, m := range msgs {
			var ke conntrack.Event
			// Every flow event names the flow by its original tuple.
			if err := ke.Unmarshal(m); err != nil || ke.Flow == nil || !ke.Flow.TupleOrig.IP.SourceAddress.IsValid() {
				n.Undecoded++
				continue
			}
			ev := n
			switch ke.Type {
			case conntrack.EventNew:
				ev.Type = EventNew
			case conntrack.EventUpdate:
				ev.Type = EventUpdate
			case conntrack.EventDestroy:
				ev.Type = EventDestroy
			default:
				n.Undecoded++ // expectation events: Follow joins no group that sends them
				continue
			}
			ev.Flow = fromKernel(ke.Flow)
			select {
			case out <- ev:
			default:
				n.Dropped++
			}
		}
	}
}
