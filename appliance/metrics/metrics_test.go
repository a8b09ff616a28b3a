package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sluicefw/sluice/dataplane/flows"
	"github.com/sluicefw/sluice/tui"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

type fakeMonitor struct{}

func (fakeMonitor) Status() tui.Status {
	return tui.Status{
		Started: t0.Add(-time.Hour),
		Policy:  tui.Version{N: 3},
		Pending: &tui.Pending{Deadline: t0.Add(2 * time.Minute)},
		Interfaces: []tui.Interface{
			{Name: "wan", Device: "eth0", Up: true, RxBytes: 1000, TxBytes: 2000},
			{Name: "lan", Device: "eth1", Up: false, RxBytes: 5},
		},
	}
}

func (fakeMonitor) Flows() []flows.Flow {
	return []flows.Flow{
		{Proto: 6, Src: netip.MustParseAddrPort("192.168.1.10:40000"), Dst: netip.MustParseAddrPort("1.1.1.1:443")},
		{Proto: 6, Src: netip.MustParseAddrPort("192.168.1.10:40001"), Dst: netip.MustParseAddrPort("1.1.1.1:443")},
		{Proto: 17, Src: netip.MustParseAddrPort("192.168.1.10:5353"), Dst: netip.MustParseAddrPort("1.1.1.1:53")},
	}
}

func (fakeMonitor) Drops() []tui.Drop {
	return []tui.Drop{{Rule: "r1"}, {Rule: "r1"}, {Rule: "r2"}}
}

func (fakeMonitor) Rules() []tui.RuleStat {
	return []tui.RuleStat{
		{ID: "r1", Name: "lan egress default", Packets: 7, Bytes: 420, LastHit: t0.Add(-time.Minute)},
		{ID: "r2", Name: "wan inbound deny"},
	}
}

func (fakeMonitor) Audit() []tui.AuditEntry { return nil }

// TestScrape scrapes the handler over HTTP and parses the exposition with
// Prometheus's own parser.
func TestScrape(t *testing.T) {
	srv := httptest.NewServer(Handler(fakeMonitor{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, body)
	}
	got := map[string]float64{}
	for name, fam := range families {
		if !strings.HasPrefix(name, "sluice_") {
			continue
		}
		for _, m := range fam.Metric {
			key := name
			for _, l := range m.Label {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				got[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				got[key] = m.Gauge.GetValue()
			}
		}
	}
	delete(got, "sluice_uptime_seconds") // the real clock
	want := map[string]float64{
		"sluice_policy_version":                                                  3,
		"sluice_commit_pending_deadline_timestamp_seconds":                       float64(t0.Add(2 * time.Minute).Unix()),
		"sluice_interface_up,device=eth0,interface=wan":                          1,
		"sluice_interface_up,device=eth1,interface=lan":                          0,
		"sluice_interface_receive_bytes_total,device=eth0,interface=wan":         1000,
		"sluice_interface_receive_bytes_total,device=eth1,interface=lan":         5,
		"sluice_interface_transmit_bytes_total,device=eth0,interface=wan":        2000,
		"sluice_interface_transmit_bytes_total,device=eth1,interface=lan":        0,
		"sluice_rule_packets_total,name=lan egress default,rule=r1":              7,
		"sluice_rule_packets_total,name=wan inbound deny,rule=r2":                0,
		"sluice_rule_bytes_total,name=lan egress default,rule=r1":                420,
		"sluice_rule_bytes_total,name=wan inbound deny,rule=r2":                  0,
		"sluice_rule_last_hit_timestamp_seconds,name=lan egress default,rule=r1": float64(t0.Add(-time.Minute).Unix()),
		"sluice_rule_last_hit_timestamp_seconds,name=wan inbound deny,rule=r2":   0,
		"sluice_drop_log_records,rule=r1":                                        2,
		"sluice_drop_log_records,rule=r2":                                        1,
		"sluice_connections,proto=tcp":                                           2,
		"sluice_connections,proto=udp":                                           1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("scraped metrics (-want +got):\n%s", diff)
	}
	if _, ok := families["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
}
