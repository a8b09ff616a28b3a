package netconf

import (
	"fmt"
	"net/netip"

	"github.com/jsimonetti/rtnetlink/v2"

	"github.com/sluicefw/sluice/dataplane/policy"
)

// Link is one of the policy's interfaces as the kernel has it now.
type Link struct {
	Name    string // the policy's name for it
	Device  string // the kernel's name
	Present bool   // the device exists
	Up      bool
	Addrs   []netip.Prefix
	RxBytes uint64
	TxBytes uint64
}

// Links reads the policy's interfaces from this network namespace: link
// state, every address and the byte counters. A device the kernel does not
// have is listed with Present false.
func Links(prog *policy.Program) ([]Link, error) {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("links: rtnetlink dial: %w", err)
	}
	defer c.Close()
	k, err := readKernel(c)
	if err != nil {
		return nil, fmt.Errorf("links: %w", err)
	}
	msgs, err := c.Link.List()
	if err != nil {
		return nil, fmt.Errorf("links: link list: %w", err)
	}
	stats := map[string]*rtnetlink.LinkStats64{}
	for _, m := range msgs {
		if m.Attributes != nil && m.Attributes.Stats64 != nil {
			stats[m.Attributes.Name] = m.Attributes.Stats64
		}
	}
	out := make([]Link, 0, len(prog.Interfaces))
	for _, ifc := range prog.Interfaces {
		l := Link{Name: ifc.Name, Device: ifc.Device}
		if kl, ok := k.links[ifc.Device]; ok {
			l.Present, l.Up = true, kl.up
			for _, a := range kl.addrs {
				l.Addrs = append(l.Addrs, a.prefix)
			}
		}
		if s := stats[ifc.Device]; s != nil {
			l.RxBytes, l.TxBytes = s.RXBytes, s.TXBytes
		}
		out = append(out, l)
	}
	return out, nil
}
