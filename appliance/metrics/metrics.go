// Package metrics serves the router's state as Prometheus metrics: rule
// counters by rule ID, drops, connections, interfaces, the policy version
// and a pending commit.
//
// The values are read from the router when a scrape asks for them, so a
// scrape sees the same numbers as the TUI and nothing is kept twice.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/tui"
)

// Collector turns a tui.Monitor into metrics. It is safe for concurrent
// scrapes when the Monitor is.
type Collector struct {
	mon tui.Monitor
	now func() time.Time

	rulePackets, ruleBytes, ruleLastHit *prometheus.Desc
	drops, flows                        *prometheus.Desc
	ifaceRx, ifaceTx, ifaceUp           *prometheus.Desc
	policy, pending, uptime             *prometheus.Desc
}

// New returns a Collector reading mon; now is the clock (time.Now if nil).
func New(mon tui.Monitor, now func() time.Time) *Collector {
	if now == nil {
		now = time.Now
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("sluice_"+name, help, labels, nil)
	}
	return &Collector{
		mon:         mon,
		now:         now,
		rulePackets: d("rule_packets_total", "Packets the rule decided, since the policy was applied.", "rule", "name"),
		ruleBytes:   d("rule_bytes_total", "Bytes of the packets the rule decided, since the policy was applied.", "rule", "name"),
		ruleLastHit: d("rule_last_hit_timestamp_seconds", "When the rule last decided a packet (0: not since the policy was applied).", "rule", "name"),
		drops:       d("drop_log_records", "Drops in the drop log now (it keeps the latest).", "rule"),
		flows:       d("connections", "Connections tracked now.", "proto"),
		ifaceRx:     d("interface_receive_bytes_total", "Bytes received.", "interface", "device"),
		ifaceTx:     d("interface_transmit_bytes_total", "Bytes sent.", "interface", "device"),
		ifaceUp:     d("interface_up", "1 when the link is up.", "interface", "device"),
		policy:      d("policy_version", "The policy version in force (0: the default policy)."),
		pending:     d("commit_pending_deadline_timestamp_seconds", "When the commit waiting for confirmation rolls back (0: none waits)."),
		uptime:      d("uptime_seconds", "Time since the router started."),
	}
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rulePackets, c.ruleBytes, c.ruleLastHit, c.drops, c.flows, c.ifaceRx, c.ifaceTx, c.ifaceUp, c.policy, c.pending, c.uptime} {
		ch <- d
	}
}

// Collect reads the router and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.mon.Status()
	ch <- prometheus.MustNewConstMetric(c.policy, prometheus.GaugeValue, float64(st.Policy.N))
	deadline := 0.0
	if st.Pending != nil {
		deadline = float64(st.Pending.Deadline.Unix())
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, deadline)
	if !st.Started.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.uptime, prometheus.GaugeValue, c.now().Sub(st.Started).Seconds())
	}
	for _, i := range st.Interfaces {
		up := 0.0
		if i.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.ifaceUp, prometheus.GaugeValue, up, i.Name, i.Device)
		ch <- prometheus.MustNewConstMetric(c.ifaceRx, prometheus.CounterValue, float64(i.RxBytes), i.Name, i.Device)
		ch <- prometheus.MustNewConstMetric(c.ifaceTx, prometheus.CounterValue, float64(i.TxBytes), i.Name, i.Device)
	}
	for _, r := range c.mon.Rules() {
		ch <- prometheus.MustNewConstMetric(c.rulePackets, prometheus.CounterValue, float64(r.Packets), r.ID, r.Name)
		ch <- prometheus.MustNewConstMetric(c.ruleBytes, prometheus.CounterValue, float64(r.Bytes), r.ID, r.Name)
		last := 0.0
		if !r.LastHit.IsZero() {
			last = float64(r.LastHit.Unix())
		}
		ch <- prometheus.MustNewConstMetric(c.ruleLastHit, prometheus.GaugeValue, last, r.ID, r.Name)
	}
	drops := map[string]int{}
	for _, d := range c.mon.Drops() {
		drops[d.Rule]++
	}
	for rule, n := range drops {
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.GaugeValue, float64(n), rule)
	}
	protos := map[string]int{}
	for _, f := range c.mon.Flows() {
		protos[protoName(f.Proto)]++
	}
	for p, n := range protos {
		ch <- prometheus.MustNewConstMetric(c.flows, prometheus.GaugeValue, float64(n), p)
	}
}

func protoName(p uint8) string {
	if name, ok := policy.ProtoName(p); ok {
		return name
	}
	return "other"
}

// Handler returns the HTTP handler serving /metrics for mon, with Go's
// runtime metrics beside sluice's.
func Handler(mon tui.Monitor) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(New(mon, nil), prometheus.NewGoCollector())
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}
