package conntrack_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicefw/sluice/conntrack"
	"github.com/sluicefw/sluice/dataplane/flows"
	"github.com/sluicefw/sluice/internal/lab"
	"github.com/sluicefw/sluice/internal/labtest"
	"github.com/sluicefw/sluice/internal/netnstest"
	"golang.org/x/sys/unix"
)

// The differential test runs real connections from lan1 through the lab
// router, where the kernel tracks them, and feeds the same packets, as the
// router's lan interface saw them, to a conntrack.Table.
//
// What is captured: every frame eth1 in the router's namespace receives
// (lan1's packets, before the kernel tracks them) and sends
// (PACKET_OUTGOING: the internet's answers after the kernel tracked them at
// eth0 and undid the masquerade, so their destination is lan1 again). Both
// are kept: seen from eth1, the original direction is lan1's and the reply
// direction the internet host's, which is the kernel entry's view with the
// NAT taken out. Frames leave the tap in the order the router handled them
// on eth1, which is the order the kernel tracked them except where a
// lan packet and an answer cross (then both orders are valid TCP).
//
// What is compared, per flow: the sequence of distinct (TCP state, seen
// reply, assured) the kernel reported in its new and update events, with
// the same sequence from the table's events after feeding it the capture.
// The kernel sends an event after each packet that changes one of the
// three, so equal sequences mean the table went through the same states in
// the same order; which packet made each change is not compared (an event
// does not name its packet), but the trace printed on a mismatch shows the
// table's answer to every packet. The kernel's TCP state names are conntrack(8)'s and
// TCPState.String's: the mapping is the identity on names (SYN_SENT ↔
// TCPSynSent, ..., CLOSE ↔ TCPClose). Destroy events are left out: the
// kernel destroys closing flows on timeouts the test does not wait for.
//
// The table's clock is the capture's: each packet is tracked at the time
// the tap read it.

// ctState is what the test compares of one flow after one change.
type ctState struct {
	TCP     string // "" for UDP and ICMP
	Replied bool
	Assured bool
}

func (s ctState) String() string {
	return fmt.Sprintf("%s replied=%t assured=%t", s.TCP, s.Replied, s.Assured)
}

// flowKey names a flow by its original direction as lan1 sent it.
type flowKey struct {
	Proto    uint8
	Src, Dst netip.AddrPort // ICMP: ports hold the echo id
}

func (k flowKey) String() string { return fmt.Sprintf("proto %d %s -> %s", k.Proto, k.Src, k.Dst) }

// frame is one captured IP packet.
type frame struct {
	at  time.Time
	out bool // sent by the router on eth1
	ip  []byte
}

// capture reads every IPv4 and IPv6 frame eth1 in the router's namespace
// receives or sends, until stop.
type capture struct {
	fd   int
	mu   sync.Mutex
	got  []frame
	done chan struct{}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func startCapture(t *testing.T, ns, dev string) *capture {
	t.Helper()
	c := &capture{fd: -1, done: make(chan struct{})}
	err := lab.Do(ns, func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to %s: %w", dev, err)
		}
		// A read wakes up at least this often to see whether to stop.
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50_000}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("packet socket receive timeout: %w", err)
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20) // best effort: capped by rmem_max
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", dev, ns, err)
	}
	stop := make(chan struct{})
	go func() {
		defer close(c.done)
		buf := make([]byte, 1<<16)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, from, err := unix.Recvfrom(c.fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				t.Errorf("capture: %v", err)
				return
			}
			ll, ok := from.(*unix.SockaddrLinklayer)
			if !ok || n < 14 {
				continue
			}
			et := binary.BigEndian.Uint16(buf[12:14])
			if et != 0x0800 && et != 0x86dd {
				continue
			}
			f := frame{at: time.Now(), out: ll.Pkttype == unix.PACKET_OUTGOING, ip: append([]byte(nil), buf[14:n]...)}
			c.mu.Lock()
			c.got = append(c.got, f)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-c.done
		unix.Close(c.fd)
	})
	return c
}

// take returns what was captured since the last take.
func (c *capture) take() []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	got := c.got
	c.got = nil
	return got
}

// kernelLog keeps the kernel's events per flow.
type kernelLog struct {
	mu     sync.Mutex
	states map[flowKey][]ctState
	last   map[flowKey]flows.Flow
}

func keyOfFlow(f flows.Flow) flowKey {
	if f.Proto == conntrack.ProtoICMP || f.Proto == conntrack.ProtoICMPv6 {
		return flowKey{f.Proto, netip.AddrPortFrom(f.Src.Addr().Unmap(), f.ICMPID), netip.AddrPortFrom(f.Dst.Addr().Unmap(), f.ICMPID)}
	}
	return flowKey{f.Proto, netip.AddrPortFrom(f.Src.Addr().Unmap(), f.Src.Port()), netip.AddrPortFrom(f.Dst.Addr().Unmap(), f.Dst.Port())}
}

func keyOfTuple(tu conntrack.Tuple) flowKey {
	return flowKey{tu.Proto, netip.AddrPortFrom(tu.SrcAddr(), tu.SrcPort), netip.AddrPortFrom(tu.DstAddr(), tu.DstPort)}
}

// appendState appends s unless it repeats the last state.
func appendState(seq []ctState, s ctState) []ctState {
	if len(seq) > 0 && seq[len(seq)-1] == s {
		return seq
	}
	return append(seq, s)
}

func followKernel(t *testing.T, nsFd int) *kernelLog {
	t.Helper()
	conn, err := flows.Dial(nsFd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan flows.Event, 4096)
	done := make(chan error, 1)
	go func() { done <- conn.Follow(ctx, events) }()
	k := &kernelLog{states: map[flowKey][]ctState{}, last: map[flowKey]flows.Flow{}}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-events:
				if ev.Dropped != 0 || ev.Overflows != 0 {
					t.Errorf("kernel events lost: %d dropped, %d overflows", ev.Dropped, ev.Overflows)
				}
				if ev.Type == flows.EventDestroy {
					continue
				}
				key := keyOfFlow(ev.Flow)
				k.mu.Lock()
				k.states[key] = appendState(k.states[key], ctState{ev.Flow.State, ev.Flow.SeenReply, ev.Flow.Assured})
				k.last[key] = ev.Flow
				k.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("follow: %v", err)
		}
		<-readerDone
		conn.Close()
	})
	// Give the subscription a moment: flows begun before it yield no events.
	time.Sleep(100 * time.Millisecond)
	return k
}

func (k *kernelLog) seq(key flowKey) []ctState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]ctState(nil), k.states[key]...)
}

// waitKernel waits (at most five seconds) until the kernel has reported
// want for a flow matching match, and returns that flow's key.
func (k *kernelLog) waitKernel(t *testing.T, match func(flowKey) bool, want ctState) flowKey {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		k.mu.Lock()
		var found []flowKey
		for key, seq := range k.states {
			if match(key) && slices.Contains(seq, want) {
				found = append(found, key)
			}
		}
		k.mu.Unlock()
		if len(found) == 1 {
			// The answer that caused the event leaves eth1 after the kernel
			// tracked it: let the tap see it.
			time.Sleep(200 * time.Millisecond)
			return found[0]
		}
		if len(found) > 1 {
			t.Fatalf("several kernel flows match: %v", found)
		}
		if time.Now().After(deadline) {
			k.mu.Lock()
			defer k.mu.Unlock()
			t.Fatalf("kernel never reported %v for the flow; its flows: %v", want, k.states)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// differential feeds frames to a table and keeps the table's states.
type differential struct {
	clock  time.Time
	table  *conntrack.Table
	states map[flowKey][]ctState
	trace  map[flowKey][]string // each packet of the flow and the table's answer
}

func newDifferential(t *testing.T) *differential {
	t.Helper()
	// The clock starts now: the table measures time from its first reading.
	d := &differential{clock: time.Now(), states: map[flowKey][]ctState{}, trace: map[flowKey][]string{}}
	tb, err := conntrack.New(conntrack.Config{Max: 1024, Clock: func() time.Time { return d.clock }, Seed: 0x5eed, Events: 1 << 14})
	if err != nil {
		t.Fatal(err)
	}
	d.table = tb
	return d
}

func describe(p *conntrack.Packet) string {
	tu := p.Tuple()
	s := fmt.Sprintf("proto %d %s:%d -> %s:%d len %d", p.Proto, tu.SrcAddr(), tu.SrcPort, tu.DstAddr(), tu.DstPort, p.Length)
	if p.Proto == conntrack.ProtoTCP {
		var fl []string
		for _, f := range []struct {
			bit  uint8
			name string
		}{{conntrack.FlagSYN, "S"}, {conntrack.FlagACK, "."}, {conntrack.FlagFIN, "F"}, {conntrack.FlagRST, "R"}, {conntrack.FlagPSH, "P"}} {
			if p.TCPFlags&f.bit != 0 {
				fl = append(fl, f.name)
			}
		}
		s += fmt.Sprintf(" [%s] seq %d ack %d win %d payload %d", strings.Join(fl, ""), p.Seq, p.Ack, p.Window, p.PayloadLen)
	}
	if p.Proto == conntrack.ProtoICMP || p.Proto == conntrack.ProtoICMPv6 {
		s += fmt.Sprintf(" type %d id %d", p.ICMPType, p.ICMPID)
	}
	return s
}

// tracked is one packet fed to the table, with its answer.
type tracked struct {
	pkt  conntrack.Packet
	res  conntrack.Result
	line string
}

// feed tracks frames in order, keeps the states of flows that match, and
// returns what the table answered for their packets. A packet of theirs
// the table calls invalid is an error unless injected says it was sent to
// be invalid.
func (d *differential) feed(t *testing.T, frames []frame, match func(flowKey) bool, injected func(*conntrack.Packet) bool) []tracked {
	t.Helper()
	var out []tracked
	for _, f := range frames {
		var p conntrack.Packet
		if r := p.Decode(f.ip); r != conntrack.ReasonNone {
			continue // not ours to compare (fragments, extension headers)
		}
		tu := p.Tuple()
		fwd, rev := keyOfTuple(tu), keyOfTuple(tu.Reverse())
		var key flowKey
		switch {
		case match(fwd):
			key = fwd
		case match(rev):
			key = rev
		default:
			continue
		}
		d.clock = f.at
		res := d.table.Track(&p)
		dir := "in "
		if f.out {
			dir = "out"
		}
		e, _ := d.table.Get(tu)
		line := fmt.Sprintf("%s %s: %v %v (reason %v); entry %v replied=%t assured=%t", dir, describe(&p), res.State, res.TCP, res.Reason, e.TCP, e.Replied, e.Assured)
		d.trace[key] = append(d.trace[key], line)
		out = append(out, tracked{p, res, line})
		if res.State == conntrack.StateInvalid && (injected == nil || !injected(&p)) {
			t.Errorf("table says invalid (%v) for a packet the kernel passed: %s", res.Reason, line)
		}
	}
	for {
		select {
		case ev := <-d.table.Events():
			if ev.Kind == conntrack.EventDestroy {
				continue
			}
			key := keyOfTuple(ev.Entry.Tuple)
			s := ctState{Replied: ev.Entry.Replied, Assured: ev.Entry.Assured}
			if key.Proto == conntrack.ProtoTCP {
				s.TCP = ev.Entry.TCP.String()
			}
			d.states[key] = appendState(d.states[key], s)
		default:
			if st := d.table.Stats(); st.EventsDropped != 0 {
				t.Fatalf("table dropped %d events", st.EventsDropped)
			}
			return out
		}
	}
}

// compare checks that the table went through the kernel's states for key.
func (d *differential) compare(t *testing.T, k *kernelLog, key flowKey, want []ctState) {
	t.Helper()
	kernel := k.seq(key)
	got := d.states[key]
	t.Logf("flow %s: kernel states %v", key, kernel)
	if diff := cmp.Diff(kernel, got); diff != "" {
		t.Errorf("flow %s: table states differ from the kernel's (-kernel +table):\n%s\npackets:\n  %s", key, diff, strings.Join(d.trace[key], "\n  "))
	}
	if want != nil {
		if diff := cmp.Diff(want, kernel); diff != "" {
			t.Errorf("flow %s: the kernel's states are not what the scenario expects (-want +kernel):\n%s\npackets:\n  %s", key, diff, strings.Join(d.trace[key], "\n  "))
		}
	}
	if len(kernel) == 0 {
		t.Errorf("flow %s: no kernel events", key)
	}
}

// tcpServer serves on addr in ns: it reads a mode byte, echoes until the
// client's FIN, then in mode 'h' (half-close) sends three more segments
// before closing, and in mode 'e' closes at once.
func tcpServer(t *testing.T, ns, addr string) {
	t.Helper()
	ln, err := lab.Listen(ns, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				mode := make([]byte, 1)
				if _, err := io.ReadFull(c, mode); err != nil {
					return
				}
				if _, err := io.Copy(c, c); err != nil {
					return // reset
				}
				if mode[0] == 'h' {
					for i := range 3 {
						if _, err := fmt.Fprintf(c, "after half-close %d\n", i); err != nil {
							return
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
			})
		}
	})
}

// dialLAN connects from ns to addr and sends mode.
func dialLAN(t *testing.T, ns, addr string, mode byte) *net.TCPConn {
	t.Helper()
	var c net.Conn
	if err := lab.Do(ns, func() (err error) {
		c, err = (&net.Dialer{Timeout: 3 * time.Second}).Dial("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ns, err)
	}
	tc := c.(*net.TCPConn)
	t.Cleanup(func() { tc.Close() })
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.Write([]byte{mode}); err != nil {
		t.Fatal(err)
	}
	return tc
}

// echo writes msg and reads it back.
func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, buf, err)
	}
}

func tcpKey(c *net.TCPConn) flowKey {
	l, r := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
	return flowKey{conntrack.ProtoTCP, netip.AddrPortFrom(l.Addr().Unmap(), l.Port()), netip.AddrPortFrom(r.Addr().Unmap(), r.Port())}
}

func is(key flowKey) func(flowKey) bool { return func(k flowKey) bool { return k == key } }

// The kernel's states through a three-way handshake.
var handshake = []ctState{
	{"SYN_SENT", false, false},
	{"SYN_RECV", true, false},
	{"ESTABLISHED", true, true},
}

func states(tail ...ctState) []ctState { return append(append([]ctState(nil), handshake...), tail...) }

// TestKernelDifferential runs TCP connections (closed cleanly over IPv4
// and IPv6, reset, half-closed, opened simultaneously from both ends), a
// UDP exchange and pings (IPv4 and IPv6) through the lab router, and
// injects segments the kernel calls invalid (sequence past the window, ACK
// of unsent data, RST below the acknowledged sequence). A Table fed the
// router's lan-side packets must report, flow by flow, the state changes
// the kernel reported, and call invalid exactly the injected segments,
// which the kernel counted in the ruleset's "conntrack invalid" rule.
func TestKernelDifferential(t *testing.T) {
	netnstest.RequireRoot(t)
	r := labtest.New(t)
	// No event is lost to a burst: the reader drains at once, and the
	// kernel's 4 MiB buffer holds far more than these flows make.
	kern := followKernel(t, r.NSFd)
	capt := startCapture(t, r.Router, "eth1")
	tcpServer(t, r.Internet, "93.184.216.34:80")
	tcpServer(t, r.Internet, "[2606:4700::1]:80")
	d := newDifferential(t)

	for _, server := range []string{"93.184.216.34:80", "[2606:4700::1]:80"} {
		t.Run("tcp clean close "+server, func(t *testing.T) {
			c := dialLAN(t, r.LAN1, server, 'e')
			echo(t, c, "hello")
			key := tcpKey(c)
			c.Close() // FIN; the server answers with its own
			kern.waitKernel(t, is(key), ctState{"TIME_WAIT", true, true})
			d.feed(t, capt.take(), is(key), nil)
			d.compare(t, kern, key, nil) // the server's ACK and FIN may be one segment or two
			if got := d.states[key]; len(got) == 0 || got[len(got)-1].TCP != "TIME_WAIT" {
				t.Errorf("table ends in %v, want TIME_WAIT", got)
			}
		})
	}

	t.Run("tcp reset", func(t *testing.T) {
		c := dialLAN(t, r.LAN1, "93.184.216.34:80", 'e')
		echo(t, c, "hello")
		key := tcpKey(c)
		if err := c.SetLinger(0); err != nil {
			t.Fatal(err)
		}
		c.Close() // RST
		kern.waitKernel(t, is(key), ctState{"CLOSE", true, true})
		d.feed(t, capt.take(), is(key), nil)
		d.compare(t, kern, key, states(ctState{"CLOSE", true, true}))
	})

	t.Run("tcp half-close", func(t *testing.T) {
		c := dialLAN(t, r.LAN1, "93.184.216.34:80", 'h')
		echo(t, c, "hello")
		key := tcpKey(c)
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		kern.waitKernel(t, is(key), ctState{"CLOSE_WAIT", true, true})
		rest, err := io.ReadAll(c)
		if err != nil || !strings.Contains(string(rest), "after half-close 2") {
			t.Fatalf("after half-close: read %q, %v", rest, err)
		}
		kern.waitKernel(t, is(key), ctState{"TIME_WAIT", true, true})
		c.Close()
		d.feed(t, capt.take(), is(key), nil)
		d.compare(t, kern, key, states(
			ctState{"FIN_WAIT", true, true},
			ctState{"CLOSE_WAIT", true, true},
			ctState{"LAST_ACK", true, true},
			ctState{"TIME_WAIT", true, true},
		))
	})

	t.Run("udp", func(t *testing.T) {
		var server net.PacketConn
		if err := lab.Do(r.Internet, func() (err error) { server, err = net.ListenPacket("udp", "8.8.8.8:53"); return err }); err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		var client net.Conn
		if err := lab.Do(r.LAN1, func() (err error) { client, err = net.Dial("udp", "8.8.8.8:53"); return err }); err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		l := client.LocalAddr().(*net.UDPAddr).AddrPort()
		key := flowKey{conntrack.ProtoUDP, netip.AddrPortFrom(l.Addr().Unmap(), l.Port()), netip.MustParseAddrPort("8.8.8.8:53")}
		server.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		if _, err := client.Write([]byte("unanswered")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := server.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
		kern.waitKernel(t, is(key), ctState{"", false, false})
		d.feed(t, capt.take(), is(key), nil)
		d.compare(t, kern, key, []ctState{{"", false, false}})

		if _, err := client.Write([]byte("answered")); err != nil {
			t.Fatal(err)
		}
		_, from, err := server.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := server.WriteTo([]byte("answer"), from); err != nil {
			t.Fatal(err)
		}
		client.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := client.Read(buf); err != nil {
			t.Fatal(err)
		}
		kern.waitKernel(t, is(key), ctState{"", true, false})
		d.feed(t, capt.take(), is(key), nil)
		// Within two seconds of its first packet a replied UDP flow is not
		// yet assured, by either table.
		d.compare(t, kern, key, []ctState{{"", false, false}, {"", true, false}})
	})

	t.Run("tcp out-of-window segments", func(t *testing.T) {
		prog := labtest.Compile(t, "lab.yaml", lab.Policy())
		invalidRule := string(prog.Rules[prog.Invalid].ID)
		inj, err := r.Injector(r.LAN1, "eth0")
		if err != nil {
			t.Fatal(err)
		}
		defer inj.Close()
		routerMAC, err := lab.MAC(r.Router, "eth1")
		if err != nil {
			t.Fatal(err)
		}

		c := dialLAN(t, r.LAN1, "93.184.216.34:80", 'e')
		echo(t, c, "hello")
		key := tcpKey(c)
		time.Sleep(100 * time.Millisecond) // the last ACK reaches the tap
		fed := d.feed(t, capt.take(), is(key), nil)
		var last *conntrack.Packet // lan1's last segment
		for i := range fed {
			if fed[i].res.Dir == conntrack.DirOriginal {
				last = &fed[i].pkt
			}
		}
		if last == nil {
			t.Fatal("no segment of lan1's captured")
		}
		// Segments the kernel calls invalid, which the ruleset then drops
		// before they reach the server: each must be invalid in the table
		// too, and change nothing in either.
		next := last.Seq + last.PayloadLen
		for _, bad := range []struct {
			name     string
			flags    uint8
			seq, ack uint32
			payload  string
			want     conntrack.Reason
		}{
			{"seq a gigabyte past the server's window", conntrack.FlagACK | conntrack.FlagPSH, next + 1<<30, last.Ack, "x", conntrack.ReasonTCPSeqOverWindow},
			{"ack of data the server never sent", conntrack.FlagACK | conntrack.FlagPSH, next, last.Ack + 1<<30, "x", conntrack.ReasonTCPAckOverWindow},
			{"rst below what the server acknowledged", conntrack.FlagRST, next - 1<<20, 0, "", conntrack.ReasonTCPInvalidRST},
		} {
			frame := tcpFrame(inj.MAC, routerMAC, key.Src, key.Dst, bad.seq, bad.ack, bad.flags, []byte(bad.payload))
			counters, err := r.NFT.Counters(false)
			if err != nil {
				t.Fatal(err)
			}
			before := counters[invalidRule]
			if err := inj.Send(frame); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(3 * time.Second)
			for {
				counters, err := r.NFT.Counters(false)
				if err != nil {
					t.Fatal(err)
				}
				if counters[invalidRule] > before {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: the kernel's counter of rule %s (conntrack invalid) stayed at %d", bad.name, invalidRule, before)
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond)
			isInjected := func(p *conntrack.Packet) bool {
				return p.Proto == conntrack.ProtoTCP && p.TCPFlags == bad.flags && p.Seq == bad.seq && p.Ack == bad.ack && p.PayloadLen == uint32(len(bad.payload))
			}
			found := false
			for _, f := range d.feed(t, capt.take(), is(key), isInjected) {
				if isInjected(&f.pkt) {
					found = true
					if f.res.State != conntrack.StateInvalid || f.res.Reason != bad.want {
						t.Errorf("%s: the kernel counted it invalid; the table says %v (%v), want invalid (%v):\n  %s", bad.name, f.res.State, f.res.Reason, bad.want, f.line)
					}
				}
			}
			if !found {
				t.Fatalf("%s: the injected segment was not captured on the router's eth1", bad.name)
			}
		}

		// The connection is unharmed in both tables.
		echo(t, c, "still here")
		c.Close()
		kern.waitKernel(t, is(key), ctState{"TIME_WAIT", true, true})
		d.feed(t, capt.take(), is(key), nil)
		d.compare(t, kern, key, nil)
		if got := d.states[key]; len(got) == 0 || got[len(got)-1].TCP != "TIME_WAIT" {
			t.Errorf("table ends in %v, want TIME_WAIT", got)
		}
	})

	t.Run("tcp simultaneous open", func(t *testing.T) {
		// The internet host drops lan1's SYN, so that lan1's SYN opens the
		// kernel's entry (SYN_SENT) and the internet host's own SYN, sent
		// to the masqueraded port, is the entry's first reply (SYN_SENT2).
		for _, args := range [][]string{
			{"nft", "add", "table", "inet", "simopen"},
			{"nft", "add", "chain", "inet", "simopen", "in", "{ type filter hook input priority 0; }"},
			{"nft", "add", "rule", "inet", "simopen", "in", "tcp", "dport", "443", "tcp", "flags", "&", "(syn|ack)", "==", "syn", "drop"},
		} {
			if out, err := r.Command(r.Internet, args...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
		lanAddr := netip.MustParseAddrPort("192.168.1.10:47123")
		inetAddr := netip.MustParseAddrPort("93.184.216.34:443")
		key := flowKey{conntrack.ProtoTCP, lanAddr, inetAddr}
		type dialed struct {
			c   net.Conn
			err error
		}
		dial := func(ns string, from, to netip.AddrPort) chan dialed {
			ch := make(chan dialed, 1)
			go func() {
				var d dialed
				d.err = lab.Do(ns, func() (err error) {
					dl := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(from)}
					d.c, err = dl.Dial("tcp", to.String())
					return err
				})
				ch <- d
			}()
			return ch
		}
		lanc := dial(r.LAN1, lanAddr, inetAddr)
		kern.waitKernel(t, is(key), ctState{"SYN_SENT", false, false})
		// Masquerading keeps the source port when it is free.
		inetc := dial(r.Internet, inetAddr, netip.AddrPortFrom(netip.MustParseAddr(lab.RouterWAN4), lanAddr.Port()))
		var conns []net.Conn
		for _, ch := range []chan dialed{lanc, inetc} {
			d := <-ch
			if d.err != nil {
				t.Fatalf("simultaneous open: %v", d.err)
			}
			conns = append(conns, d.c)
		}
		kern.waitKernel(t, is(key), ctState{"ESTABLISHED", true, true})
		if !slices.ContainsFunc(kern.seq(key), func(s ctState) bool { return s.TCP == "SYN_SENT2" }) {
			t.Fatalf("the kernel never saw a simultaneous open: %v", kern.seq(key))
		}
		conns[0].Close()
		conns[1].Close()
		kern.waitKernel(t, is(key), ctState{"TIME_WAIT", true, true})
		d.feed(t, capt.take(), is(key), nil)
		d.compare(t, kern, key, nil)
	})

	for _, target := range []string{"93.184.216.34", "2606:4700::1"} {
		t.Run("ping "+target, func(t *testing.T) {
			if out, err := r.Command(r.LAN1, "ping", "-c1", "-W2", target).CombinedOutput(); err != nil {
				t.Fatalf("ping %s: %v: %s", target, err, out)
			}
			dst := netip.MustParseAddr(target)
			match := func(k flowKey) bool {
				return (k.Proto == conntrack.ProtoICMP || k.Proto == conntrack.ProtoICMPv6) && k.Dst.Addr() == dst
			}
			key := kern.waitKernel(t, match, ctState{"", true, false})
			d.feed(t, capt.take(), is(key), nil)
			d.compare(t, kern, key, []ctState{{"", false, false}, {"", true, false}})
		})
	}
}

// tcpFrame builds an Ethernet frame carrying one IPv4 TCP segment with
// correct checksums (the kernel verifies them before tracking).
func tcpFrame(src, dst net.HardwareAddr, from, to netip.AddrPort, seq, ack uint32, flags uint8, payload []byte) []byte {
	b := make([]byte, 14+20+20+len(payload))
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+20+len(payload)))
	binary.BigEndian.PutUint16(ip[4:6], 0x5eed)
	ip[8] = 64 // TTL
	ip[9] = conntrack.ProtoTCP
	s4, d4 := from.Addr().As4(), to.Addr().As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], checksum(0, ip))
	tcp := b[34:]
	binary.BigEndian.PutUint16(tcp[0:2], from.Port())
	binary.BigEndian.PutUint16(tcp[2:4], to.Port())
	binary.BigEndian.PutUint32(tcp[4:8], seq)
	binary.BigEndian.PutUint32(tcp[8:12], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:16], 502)
	copy(tcp[20:], payload)
	var pseudo uint32
	for i := 0; i < 4; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(s4[i:])) + uint32(binary.BigEndian.Uint16(d4[i:]))
	}
	pseudo += uint32(conntrack.ProtoTCP) + uint32(len(tcp))
	binary.BigEndian.PutUint16(tcp[16:18], checksum(pseudo, tcp))
	return b
}

// checksum is the Internet checksum of b, starting from sum.
func checksum(sum uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
