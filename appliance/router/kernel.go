package router

import (
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sluicefw/sluice/dataplane/flows"
	"github.com/sluicefw/sluice/dataplane/netconf"
	"github.com/sluicefw/sluice/dataplane/nft"
	"github.com/sluicefw/sluice/dataplane/policy"
)

// Kernel is the kernel engine: the policy as table inet sluice in
// nftables, the interfaces through rtnetlink, and the connections in the
// kernel's conntrack. Its methods are safe for concurrent use; mu guards
// the fields below it.
type Kernel struct {
	logger *log.Logger
	ct     *flows.Conn

	mu   sync.Mutex
	nft  *nft.Conn
	rs   *nft.Ruleset
	opts policy.Options // the learned addresses rs was built with
}

// NewKernel connects to this network namespace's nftables and conntrack.
// timeout bounds every nftables exchange.
func NewKernel(timeout time.Duration, logger *log.Logger) (*Kernel, error) {
	conn, err := nft.Dial(-1, timeout)
	if err != nil {
		return nil, fmt.Errorf("kernel engine: %w", err)
	}
	ct, err := flows.Dial(-1)
	if err != nil {
		return nil, fmt.Errorf("kernel engine: %w", err)
	}
	// Byte counters and start times of connections, for the Flows page:
	// both are off by default and count only entries created after.
	for _, s := range []string{"nf_conntrack_acct", "nf_conntrack_timestamp"} {
		if err := os.WriteFile("/proc/sys/net/netfilter/"+s, []byte("1\n"), 0o644); err != nil {
			logger.Printf("sysctl net.netfilter.%s = 1: %v", s, err)
		}
	}
	return &Kernel{logger: logger, ct: ct, nft: conn}, nil
}

// Name is what the overview shows.
func (k *Kernel) Name() string { return "kernel (nftables, conntrack)" }

// Apply replaces table inet sluice with prog's ruleset, brings the
// interfaces to what prog says, and deletes the connections prog would not
// let start. The firewall comes first: forwarding is enabled only under it.
func (k *Kernel) Apply(prog *policy.Program) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.apply(prog, netconf.Learned(prog))
}

func (k *Kernel) apply(prog *policy.Program, opts policy.Options) error {
	rs, err := nft.Build(prog, opts)
	if err != nil {
		return err
	}
	if err := nft.Apply(k.nft, rs); err != nil {
		if k.rs != nil && (errors.Is(err, nft.ErrShortSet) || errors.Is(err, nft.ErrUnverified)) {
			// The new table is in force but did not read back whole: the
			// previous one goes back, so that what the router says is in
			// force is.
			if rerr := nft.Apply(k.nft, k.rs); rerr != nil {
				return fmt.Errorf("%w; putting the previous ruleset back: %v", err, rerr)
			}
		}
		return err
	}
	k.rs, k.opts = rs, opts
	report, err := netconf.Apply(prog)
	if err != nil {
		// The ruleset is in force; a missing device or address is
		// logged, and the rest of the box keeps working.
		k.logger.Printf("interfaces: %v", err)
	}
	for _, s := range report.Sysctls {
		k.logger.Printf("sysctl %s = %s", s.Path, s.Value)
	}
	for _, d := range report.LinksUp {
		k.logger.Printf("link %s up", d)
	}
	for _, a := range report.Addresses {
		k.logger.Printf("address %s added", a)
	}
	for _, rt := range report.Routes {
		k.logger.Printf("route %s", rt)
	}
	revoked, err := flows.Revoke(k.ct, prog, opts)
	for _, f := range revoked {
		k.logger.Printf("revoked %s", f)
	}
	if err != nil {
		k.logger.Printf("revoke: %v", err)
	}
	return nil
}

// Check applies prog again when the table is gone or changed, or when the
// DHCP uplink's addresses changed.
func (k *Kernel) Check(prog *policy.Program) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now := netconf.Learned(prog); !netconf.SameAddresses(now, k.opts) {
		if err := k.apply(prog, now); err != nil {
			return "", fmt.Errorf("apply with the uplink's new addresses %v: %w", now.Addresses, err)
		}
		return fmt.Sprintf("uplink addresses now %v: ruleset built again", now.Addresses), nil
	}
	counters, err := k.nft.Counters(false)
	if k.rs != nil && err == nil && len(counters) == len(k.rs.Counters) {
		return "", nil
	}
	if err := k.apply(prog, k.opts); err != nil {
		return "", fmt.Errorf("table inet %s was gone or changed; apply again: %w", nft.TableName, err)
	}
	return fmt.Sprintf("table inet %s was gone or changed: applied again", nft.TableName), nil
}

// Flows lists the kernel's connections.
func (k *Kernel) Flows() ([]flows.Flow, error) { return k.ct.List() }

// KillFlow deletes one connection.
func (k *Kernel) KillFlow(f flows.Flow) error { return k.ct.Delete(f) }

// Counters reads every rule's counter.
func (k *Kernel) Counters() (map[string]nft.Counter, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.nft.RuleCounters(false)
}

// ifaceNames maps interface indexes to names in this network namespace.
func ifaceNames() map[uint32]string {
	out := map[uint32]string{}
	ifs, err := net.Interfaces()
	if err != nil {
		return out // drops then show the index
	}
	for _, i := range ifs {
		out[uint32(i.Index)] = i.Name
	}
	return out
}
