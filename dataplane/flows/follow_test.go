package flows

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// ctnetlink's numbers, from linux/netfilter/nfnetlink_conntrack.h.
const (
	ctMsgNew, ctMsgDelete             = 0, 2
	ctaTupleOrig, ctaTupleReply       = 1, 2
	ctaProtoInfo, ctaID               = 4, 12
	ctaTupleIP, ctaTupleProto         = 1, 2
	ctaIPv4Src, ctaIPv4Dst            = 1, 2
	ctaProtoNum                       = 1
	ctaProtoSrcPort, ctaProtoDstPort  = 2, 3
	ctaProtoInfoTCP, ctaProtoTCPState = 1, 1
)

// eventMessage encodes a conntrack event about an IPv4 TCP flow as the
// kernel sends it. A new event carries NLM_F_CREATE|NLM_F_EXCL; an update
// is a new-message without them.
func eventMessage(t *testing.T, typ EventType, id uint32, src, dst netip.AddrPort, tcpState uint8) netlink.Message {
	t.Helper()
	tuple := func(at uint16, s, d netip.AddrPort) netfilter.Attribute {
		return netfilter.Attribute{Type: at, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaTupleIP, Nested: true, Children: []netfilter.Attribute{{Type: ctaIPv4Src, Data: s.Addr().AsSlice()}, {Type: ctaIPv4Dst, Data: d.Addr().AsSlice()}}},
			{Type: ctaTupleProto, Nested: true, Children: []netfilter.Attribute{
				{Type: ctaProtoNum, Data: []byte{policy.ProtoTCP}},
				{Type: ctaProtoSrcPort, Data: netfilter.Uint16Bytes(s.Port())},
				{Type: ctaProtoDstPort, Data: netfilter.Uint16Bytes(d.Port())},
			}},
		}}
	}
	attrs := []netfilter.Attribute{
		tuple(ctaTupleOrig, src, dst),
		tuple(ctaTupleReply, dst, src),
		{Type: ctaProtoInfo, Nested: true, Children: []netfilter.Attribute{{Type: ctaProtoInfoTCP, Nested: true, Children: []netfilter.Attribute{{Type: ctaProtoTCPState, Data: []byte{tcpState}}}}}},
		{Type: ctaID, Data: netfilter.Uint32Bytes(id)},
	}
	h := netfilter.Header{SubsystemID: netfilter.NFSubsysCTNetlink, MessageType: ctMsgNew, Family: netfilter.ProtoIPv4}
	switch typ {
	case EventNew:
		h.Flags = netlink.Create | netlink.Excl
	case EventDestroy:
		h.MessageType = ctMsgDelete
	}
	m, err := netfilter.MarshalNetlink(h, attrs)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// fakeSocket hands follow what the test feeds it, one Receive at a time.
type fakeSocket struct {
	ctx   context.Context
	batch chan received
}

type received struct {
	msgs []netlink.Message
	err  error
}

func (s *fakeSocket) receive() ([]netlink.Message, error) {
	select {
	case r := <-s.batch:
		return r.msgs, r.err
	case <-s.ctx.Done():
		return nil, errors.New("i/o timeout") // what the woken reader sees
	}
}

// feed hands one Receive result to follow. The unbuffered send returns when
// follow asked for it, that is once it has handled everything fed before.
func (s *fakeSocket) feed(t *testing.T, msgs []netlink.Message, err error) {
	t.Helper()
	select {
	case s.batch <- received{msgs, err}:
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not ask for more within 5s: is it blocked on a full channel?")
	}
}

func next(t *testing.T, out <-chan Event) Event {
	t.Helper()
	select {
	case ev := <-out:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return Event{}
}

// TestFollowNeverBlocks feeds follow more events than its consumer takes:
// it drops them instead of blocking, counts them, and reports the counts
// with the next event it delivers, along with kernel overflows and
// undecodable messages.
func TestFollowNeverBlocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sock := &fakeSocket{ctx: ctx, batch: make(chan received)}
	out := make(chan Event, 1)
	done := make(chan error, 1)
	go func() { done <- follow(ctx, sock.receive, out) }()

	src, dst := ap("192.168.1.10:40000"), ap("93.184.216.34:443")
	sock.feed(t, []netlink.Message{eventMessage(t, EventNew, 1, src, dst, 1)}, nil)
	// out is full from here on: these two are dropped.
	sock.feed(t, []netlink.Message{eventMessage(t, EventUpdate, 1, src, dst, 2), eventMessage(t, EventUpdate, 1, src, dst, 3)}, nil)
	sock.feed(t, nil, unix.ENOBUFS)
	sock.feed(t, []netlink.Message{{Header: netlink.Header{Type: 0x0100}, Data: []byte{2, 0, 0, 0}}}, nil) // a netfilter header and nothing else

	want := Event{Type: EventNew, Flow: Flow{ID: 1, Proto: policy.ProtoTCP, Src: src, Dst: dst, ReplySrc: dst, ReplyDst: src, State: "SYN_SENT"}}
	if diff := cmp.Diff(want, next(t, out), equateAddrs); diff != "" {
		t.Errorf("first event (-want +got):\n%s", diff)
	}
	sock.feed(t, []netlink.Message{eventMessage(t, EventDestroy, 1, src, dst, 7)}, nil)
	want = Event{
		Type:    EventDestroy,
		Flow:    Flow{ID: 1, Proto: policy.ProtoTCP, Src: src, Dst: dst, ReplySrc: dst, ReplyDst: src, State: "TIME_WAIT"},
		Dropped: 2, Overflows: 1, Undecoded: 1,
	}
	if diff := cmp.Diff(want, next(t, out), equateAddrs); diff != "" {
		t.Errorf("event after the drops (-want +got):\n%s", diff)
	}

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("follow returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not return within 5s of its context ending")
	}
}

// TestFollowSocketError: a receive failure other than an overflow ends
// follow with the error.
func TestFollowSocketError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sock := &fakeSocket{ctx: ctx, batch: make(chan received, 1)}
	sock.batch <- received{err: unix.EBADF}
	err := follow(ctx, sock.receive, make(chan Event))
	if !errors.Is(err, unix.EBADF) {
		t.Errorf("follow returned %v, want EBADF", err)
	}
}

func TestEventTypeString(t *testing.T) {
	for typ, want := range map[EventType]string{EventNew: "new", EventUpdate: "update", EventDestroy: "destroy", 0: "unknown"} {
		if got := typ.String(); got != want {
			t.Errorf("EventType(%d).String() = %q, want %q", typ, got, want)
		}
	}
}
