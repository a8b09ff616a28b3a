package droplog

import (
	"net"
	"testing"
	"time"

	"github.com/sluicefw/sluice/dataplane/nft"
	"github.com/sluicefw/sluice/internal/lab"
	"github.com/sluicefw/sluice/internal/labtest"
)

// A denied packet in the lab reaches the drop log with the rule that
// dropped it; a burst of ten thousand is counted by the kernel but logged at
// the policy's rate, and the ring never holds more than its size.
func TestDropLogInLab(t *testing.T) {
	r := labtest.New(t)
	l, prog, conn := r.Lab, labtest.Compile(t, "lab.yaml", lab.Policy()), r.NFT
	ring := NewRing(64)
	ln, err := Listen(r.NSFd, nft.LogGroup, ring)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ln.Run() }()
	defer func() {
		ln.Close()
		<-done
	}()

	var deny int
	for i, r := range prog.Rules {
		if r.Name == "lan egress default deny" {
			deny = i
		}
	}
	// One denied UDP datagram from lan1 to 1.1.1.1:9 (only 53 is allowed).
	if err := lab.Do(l.LAN1, func() error {
		c, err := net.Dial("udp", "1.1.1.1:9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("denied"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var got Record
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		recs, _ := ring.Snapshot()
		if len(recs) > 0 {
			got = recs[len(recs)-1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no drop was logged within 3s")
		}
	}
	if int(got.Rule) != deny+1 || got.Proto != 17 || got.Src.String() != lab.LAN1v4 || got.Dst.String() != "1.1.1.1" || got.DstPort != 9 {
		t.Errorf("logged %+v, want rule %d (%s), udp %s -> 1.1.1.1:9", got, deny+1, prog.Rules[deny].Name, lab.LAN1v4)
	}
	var eth1 int
	lab.Do(l.Router, func() error {
		ifc, err := net.InterfaceByName("eth1")
		if err == nil {
			eth1 = ifc.Index
		}
		return err
	})
	if int(got.InIndex) != eth1 {
		t.Errorf("logged input interface %d, want the router's eth1 (%d)", got.InIndex, eth1)
	}

	// A burst.
	if _, err := conn.Counters(true); err != nil {
		t.Fatal(err)
	}
	_, before := ring.Snapshot()
	const burst = 10000
	if err := lab.Do(l.LAN1, func() error {
		c, err := net.Dial("udp", "1.1.1.1:9")
		if err != nil {
			return err
		}
		defer c.Close()
		for range burst {
			c.Write([]byte("burst"))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	counters, err := conn.Counters(false)
	if err != nil {
		t.Fatal(err)
	}
	recs, after := ring.Snapshot()
	logged := after - before
	if n := counters[string(prog.Rules[deny].ID)]; n < burst*9/10 {
		t.Errorf("kernel counted %d drops of the burst, want about %d", n, burst)
	}
	if total, lost, invalid := ring.Stats(); lost != 0 || invalid != 0 {
		t.Errorf("ring stats: %d added, %d lost, %d undecodable; want none lost or undecodable", total, lost, invalid)
	}
	if logged == 0 || logged > 20 {
		t.Errorf("logged %d of a %d-packet burst, want a handful at 10/second with a burst of 5", logged, burst)
	}
	if len(recs) > 64 {
		t.Errorf("ring holds %d records, more than its 64", len(recs))
	}
}
