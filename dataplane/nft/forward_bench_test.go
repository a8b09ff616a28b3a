package nft

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"

	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/internal/lab"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// BenchmarkForward measures forwarding through the lab router with iperf3
// (a TCP stream, and 64-byte UDP datagrams) while the lan's egress
// allowlist holds 10 or 1,000,000 elements, the iperf3 server among them.
// It reports bits/s for TCP and received datagrams/s for UDP; each
// iteration is a 3-second iperf3 run.
func BenchmarkForward(b *testing.B) {
	netnstest.RequireRoot(b)
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("needs iperf3 (make deps installs it)")
	}
	l := lab.New(netnstest.Name("fwd"))
	if err := l.Up(); err != nil {
		b.Fatal(err)
	}
	defer l.Down()
	server := l.Command(l.Internet, "iperf3", "-s", "-B", "93.184.216.34")
	if err := server.Start(); err != nil {
		b.Fatal(err)
	}
	defer server.Process.Kill()
	time.Sleep(300 * time.Millisecond)
	conn, _ := dialNetns(b, l.Router, 10*time.Minute)
	for _, n := range []int{10, 1_000_000} {
		applyIperfAllowlist(b, conn, n)
		b.Run(fmt.Sprintf("tcp/%d", n), func(b *testing.B) {
			var bps float64
			for b.Loop() {
				bps = iperf(b, l, false, "-t", "3")
			}
			b.ReportMetric(bps, "bits/s")
		})
		b.Run(fmt.Sprintf("udp64/%d", n), func(b *testing.B) {
			var pps float64
			for b.Loop() {
				pps = iperf(b, l, true, "-t", "3", "-u", "-l", "64", "-b", "0")
			}
			b.ReportMetric(pps, "packets/s")
		})
	}
}

// iperf runs the iperf3 client in lan1 and returns the receiver's bits/s
// (TCP) or datagrams/s (UDP).
func iperf(b *testing.B, l *lab.Lab, udp bool, args ...string) float64 {
	out, err := l.Command(l.LAN1, append([]string{"iperf3", "-J", "-c", "93.184.216.34"}, args...)...).Output()
	if err != nil {
		b.Fatalf("iperf3 %v: %v\n%s", args, err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			Sum struct {
				Packets     float64 `json:"packets"`
				LostPackets float64 `json:"lost_packets"`
				Seconds     float64 `json:"seconds"`
			} `json:"sum"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		b.Fatalf("iperf3 output: %v", err)
	}
	if udp {
		if res.End.Sum.Seconds == 0 {
			b.Fatal("iperf3 reported no UDP run")
		}
		return (res.End.Sum.Packets - res.End.Sum.LostPackets) / res.End.Sum.Seconds
	}
	return res.End.SumReceived.BitsPerSecond
}

// applyIperfAllowlist applies the lab policy with a lan egress entry of n
// addresses, the iperf3 server's among them, allowing its port, and
// returns the program.
func applyIperfAllowlist(b *testing.B, conn *Conn, n int) *policy.Program {
	pol, diags := policy.Parse("lab.yaml", lab.Policy())
	if err := diags.Err(); err != nil {
		b.Fatal(err)
	}
	entry := policy.AllowEntry{Name: "iperf", Ports: []policy.PortRange{{Proto: policy.ProtoTCP, Lo: 5201, Hi: 5201}, {Proto: policy.ProtoUDP, Lo: 5201, Hi: 5201}}}
	for a, i := netip.MustParseAddr("11.0.0.0"), 0; i < n-1; i++ {
		entry.To = append(entry.To, policy.Destination{Prefix: netip.PrefixFrom(a, 32)})
		a = a.Next().Next()
	}
	entry.To = append(entry.To, policy.Destination{Prefix: netip.MustParsePrefix("93.184.216.34/32")})
	for i := range pol.Zones {
		if pol.Zones[i].Name == "lan" {
			pol.Zones[i].Egress.Allow = append([]policy.AllowEntry{entry}, pol.Zones[i].Egress.Allow...)
		}
	}
	prog, err := policy.Compile(pol)
	if err != nil {
		b.Fatal(err)
	}
	rs, err := Build(prog, policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := Apply(conn, rs); err != nil {
		b.Fatal(err)
	}
	return prog
}

// BenchmarkNewFlows measures how many new flows a second the lab router
// lets through while the lan's egress allowlist holds 10 or 1,000,000
// elements, the destination among them (in the last of the entry's set
// shards, so that a flow's first packet is looked up in every one). Each
// iteration injects newFlowsBurst UDP datagrams into lan1's link, each a
// new flow (its own source address and port inside the lan's prefix), as
// fast as a packet socket sends them; it reports the flows the entry's
// counter accepted per second of sending, and the share of those sent.
func BenchmarkNewFlows(b *testing.B) {
	netnstest.RequireRoot(b)
	l := lab.New(netnstest.Name("flows"))
	if err := l.Up(); err != nil {
		b.Fatal(err)
	}
	defer l.Down()
	conn, fd := dialNetns(b, l.Router, 10*time.Minute)
	ct, err := conntrack.Dial(&netlink.Config{NetNS: fd})
	if err != nil {
		b.Fatal(err)
	}
	defer ct.Close()
	inj, err := l.Injector(l.LAN1, "eth0")
	if err != nil {
		b.Fatal(err)
	}
	defer inj.Close()
	routerLAN, err := lab.MAC(l.Router, "eth1")
	if err != nil {
		b.Fatal(err)
	}
	dst := netip.MustParseAddr("93.184.216.34")
	frames := make([][]byte, newFlowsBurst)
	for i := range frames {
		// Sources 192.168.1.20-.239, every one with its own ports: no
		// two frames of a run are one flow.
		src := netip.AddrFrom4([4]byte{192, 168, 1, byte(20 + i%220)})
		pk := policy.Packet{Src: src, Dst: dst, Proto: policy.ProtoUDP, SrcPort: uint16(10000 + i/220), DstPort: 5201}
		frames[i] = frame(inj.MAC, routerLAN, pk, uint16(i))
	}
	for _, n := range []int{10, 1_000_000} {
		prog := applyIperfAllowlist(b, conn, n)
		entry := string(prog.Rules[prog.Zones[1].Egress[0]].ID)
		b.Run(fmt.Sprintf("udp/%d", n), func(b *testing.B) {
			var rate, share float64
			for b.Loop() {
				b.StopTimer()
				// Every run starts from an empty connection table, so
				// each frame is a new flow again.
				if err := ct.Flush(); err != nil {
					b.Fatal(err)
				}
				if _, err := conn.Counters(true); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				for _, fr := range frames {
					if err := inj.Send(fr); err != nil {
						b.Fatal(err)
					}
				}
				sent := time.Since(start)
				time.Sleep(200 * time.Millisecond) // the router's backlog drains
				got, err := conn.Counters(false)
				if err != nil {
					b.Fatal(err)
				}
				rate = float64(got[entry]) / sent.Seconds()
				share = float64(got[entry]) / float64(len(frames))
			}
			b.ReportMetric(rate, "flows/s")
			b.ReportMetric(share, "accepted-share")
		})
	}
}

// newFlowsBurst is the datagrams, each a new flow, one BenchmarkNewFlows
// iteration sends.
const newFlowsBurst = 100_000
