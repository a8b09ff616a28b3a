package nft

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

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
	f, err := os.Open("/run/netns/" + l.Router)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	conn, err := Dial(int(f.Fd()), 10*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{10, 1_000_000} {
		prog := iperfAllowlist(b, n)
		rs, err := Build(prog, policy.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := Apply(conn, rs); err != nil {
			b.Fatal(err)
		}
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

// iperfAllowlist is the lab policy with a lan egress entry of n addresses,
// the iperf3 server's among them, allowing its port.
func iperfAllowlist(b *testing.B, n int) *policy.Program {
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
	return prog
}
