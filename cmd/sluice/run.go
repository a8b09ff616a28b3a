package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluicefw/sluice/dataplane/droplog"
	"github.com/sluicefw/sluice/dataplane/netconf"
	"github.com/sluicefw/sluice/dataplane/nft"
	"github.com/sluicefw/sluice/dataplane/policy"
)

func runRun(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("run", "[--config FILE]", `Run the router daemon in this network namespace: apply the policy's
ruleset (the built-in default without --config), then bring its interfaces
up with their static addresses, default routes and the forwarding sysctls,
log every drop with its rule, and keep the ruleset applied, putting it back
if the table disappears, until interrupted. On exit the ruleset stays in
force: the box fails closed.`, stderr)
	config := fs.String("config", "", "policy file (default: the built-in policy)")
	every := fs.Duration("check", 5*time.Second, "how often to check that the ruleset is still in the kernel")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := log.New(stderr, "sluice: ", log.LstdFlags)
	if err := daemon(ctx, *config, *every, stdin, logger); err != nil {
		logger.Print(err)
		return 1
	}
	return 0
}

// printDrops logs the drops recorded since the count seen, and returns the
// new count.
func printDrops(logger *log.Logger, prog *policy.Program, ring *droplog.Ring, seen uint64) uint64 {
	recs, total := ring.Snapshot()
	if total == seen {
		return seen
	}
	if n := total - seen; n < uint64(len(recs)) {
		recs = recs[uint64(len(recs))-n:]
	}
	for _, r := range recs {
		rule := "unknown rule"
		if r.Rule > 0 && int(r.Rule) <= len(prog.Rules) {
			pr := prog.Rules[r.Rule-1]
			rule = string(pr.ID) + " " + pr.Name
		}
		in := fmt.Sprint(r.InIndex)
		if ifc, err := net.InterfaceByIndex(int(r.InIndex)); err == nil {
			in = ifc.Name
		}
		logger.Printf("drop: %s in %s by %s", r.Summary(), in, rule)
	}
	return total
}

// daemon applies the policy and keeps it applied until ctx ends.
func daemon(ctx context.Context, config string, every time.Duration, stdin io.Reader, logger *log.Logger) error {
	prog, ok := loadProgram("run", config, stdin, logger.Writer())
	if !ok {
		return fmt.Errorf("run: no valid policy to apply")
	}
	opts := learned(prog)
	rs, err := nft.Build(prog, opts)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	conn, err := nft.Dial(-1, time.Minute)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	// The firewall first: forwarding is turned on only once the ruleset
	// that guards it is in force.
	if err := nft.Apply(conn, rs); err != nil {
		return fmt.Errorf("run: apply %s: %w", prog.File, err)
	}
	report, err := netconf.Apply(prog)
	if err != nil {
		// The ruleset stays in force; a missing device or address is
		// logged, and the rest of the box keeps working.
		logger.Printf("interfaces: %v", err)
	}
	for _, s := range report.Sysctls {
		logger.Printf("sysctl %s = %s", s.Path, s.Value)
	}
	for _, d := range report.LinksUp {
		logger.Printf("link %s up", d)
	}
	for _, a := range report.Addresses {
		logger.Printf("address %s added", a)
	}
	for _, rt := range report.Routes {
		logger.Printf("route %s", rt)
	}
	for _, a := range report.Extra {
		logger.Printf("address %s is not in the policy; left alone", a)
	}
	logger.Printf("policy %s applied: %d rules; running", prog.File, len(prog.Rules))
	ring := droplog.NewRing(1024)
	if prog.Log.Drops {
		ln, err := droplog.Listen(-1, nft.LogGroup, ring)
		if err != nil {
			return fmt.Errorf("run: drop log: %w", err)
		}
		defer ln.Close()
		go func() {
			if err := ln.Run(); err != nil && ctx.Err() == nil {
				logger.Printf("drop log stopped: %v", err)
			}
		}()
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	logTick := time.NewTicker(time.Second)
	defer logTick.Stop()
	var logged uint64
	for {
		select {
		case <-ctx.Done():
			logger.Print("stopping; the ruleset stays in force")
			return nil
		case <-logTick.C:
			logged = printDrops(logger, prog, ring, logged)
		case <-tick.C:
			// A DHCP uplink's addresses are the box's own: when they
			// change, the ruleset is built again with them.
			if now := learned(prog); !sameOptions(now, opts) {
				if next, err := nft.Build(prog, now); err != nil {
					logger.Printf("build with the uplink's new addresses: %v", err)
				} else {
					logger.Printf("uplink addresses now %v; applying %s again", now.Addresses, prog.File)
					opts, rs = now, next
					if err := nft.Apply(conn, rs); err != nil {
						logger.Printf("apply %s: %v", prog.File, err)
					}
					continue
				}
			}
			counters, err := conn.Counters(false)
			if err == nil && len(counters) == len(rs.Counters) {
				continue
			}
			logger.Printf("table inet %s is gone or changed (%v); applying %s again", nft.TableName, err, prog.File)
			if err := nft.Apply(conn, rs); err != nil {
				logger.Printf("apply %s: %v", prog.File, err)
			}
		}
	}
}
