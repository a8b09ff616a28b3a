package flows

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"

	"github.com/sluicefw/sluice/dataplane/policy"
)

// Revoke deletes every flow in c's table that prog would not let start
// now, and returns the flows it deleted. It deletes what it can: a flow
// that fails to delete is reported in the error and the others are still
// deleted; one that vanished meanwhile is neither.
//
// A flow is judged as the packet that started it: its original tuple, a SYN
// for TCP, the original ICMP request for ICMP, in conntrack state new. The
// kernel does not record where that packet came in, so Revoke takes the
// interface its source routes through, as the reverse-path check does: the
// policy interface with the longest prefix holding the source (with the
// addresses opts adds), else the uplink. A port forward is judged by its
// original destination, the box's own address, which prog accepts while
// the forward exists.
//
// Flows whose source names no interface are left alone: sources that are
// the box's own, loopback, link-local or unspecified addresses (the box's
// own connections, which the policy does not filter, and link-scoped
// traffic, which every interface carries), and any source when the policy
// has no route to it.
func Revoke(c *Conn, prog *policy.Program, opts policy.Options) ([]Flow, error) {
	flows, err := c.List()
	if err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	j := NewJudge(prog, opts)
	var deleted []Flow
	var errs []error
	for _, f := range flows {
		if _, d, decided := j.Decide(f); !decided || d.Verdict == policy.Accept {
			continue
		}
		if err := c.Delete(f); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // expired or closed since the listing: nothing left to revoke
			}
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, f)
	}
	if len(errs) > 0 {
		return deleted, fmt.Errorf("revoke: %d of %d flows to revoke not deleted: %w", len(errs), len(errs)+len(deleted), errors.Join(errs...))
	}
	return deleted, nil
}

// Judge decides flows against one program as Revoke does: a flow is judged
// as the packet that started it, on the interface its source routes
// through. It is read-only once built and safe for concurrent use.
type Judge struct {
	ev     *policy.Evaluator
	routes []ifacePrefix
	uplink int                 // interface of the default route, or -1
	box    map[netip.Addr]bool // the box's own addresses
}

type ifacePrefix struct {
	prefix netip.Prefix
	iface  int
}

// NewJudge builds a Judge for prog with the addresses opts adds.
func NewJudge(prog *policy.Program, opts policy.Options) *Judge {
	j := &Judge{ev: policy.NewEvaluator(prog, opts), uplink: -1, box: map[netip.Addr]bool{}}
	for i, ifc := range prog.Interfaces {
		// As policy.Evaluator: the last uplink holds the default route.
		if ifc.Uplink() {
			j.uplink = i
		}
		for _, a := range append(append([]netip.Prefix(nil), ifc.Addresses...), opts.Addresses[ifc.Name]...) {
			j.box[a.Addr().Unmap()] = true
			j.routes = append(j.routes, ifacePrefix{a.Masked(), i})
		}
	}
	return j
}

// Decide returns the packet that started f and the program's decision on
// it. decided is false for a flow the policy does not filter (see Revoke);
// such a flow is allowed.
func (j *Judge) Decide(f Flow) (pk policy.Packet, d policy.Decision, decided bool) {
	pk, ok := j.firstPacket(f)
	if !ok {
		return pk, d, false
	}
	return pk, j.ev.Evaluate(&pk), true
}

// firstPacket returns the packet that started f, on the interface its
// source routes through; ok is false for a flow whose source names no
// interface.
func (j *Judge) firstPacket(f Flow) (pk policy.Packet, ok bool) {
	src, dst := f.Src.Addr().Unmap(), f.Dst.Addr().Unmap()
	if !src.IsValid() || src.IsUnspecified() || src.IsLoopback() || src.IsLinkLocalUnicast() || j.box[src] {
		return pk, false
	}
	in := j.route(src)
	if in < 0 {
		return pk, false
	}
	pk = policy.Packet{In: in, Src: src, Dst: dst, Proto: f.Proto, SrcPort: f.Src.Port(), DstPort: f.Dst.Port(), State: policy.StateNew}
	switch f.Proto {
	case policy.ProtoTCP:
		pk.TCPFlags = policy.TCPSyn
	case policy.ProtoICMP, policy.ProtoICMPv6:
		pk.ICMPType, pk.ICMPCode = f.ICMPType, f.ICMPCode
	}
	return pk, true
}

// route returns the interface whose longest prefix holds a, else the
// uplink; -1 when there is neither.
func (j *Judge) route(a netip.Addr) int {
	best, bits := j.uplink, -1
	for _, r := range j.routes {
		// >=: of equal prefixes the later interface wins, as in the evaluator's table.
		if r.prefix.Contains(a) && r.prefix.Bits() >= bits {
			best, bits = r.iface, r.prefix.Bits()
		}
	}
	return best
}
