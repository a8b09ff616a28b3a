package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	gossh "golang.org/x/crypto/ssh"

	"github.com/sluicefw/sluice/appliance/metrics"
	"github.com/sluicefw/sluice/appliance/router"
	"github.com/sluicefw/sluice/appliance/sshd"
	"github.com/sluicefw/sluice/appliance/state"
	"github.com/sluicefw/sluice/dataplane/dhcp"
	"github.com/sluicefw/sluice/dataplane/droplog"
	"github.com/sluicefw/sluice/dataplane/nft"
	"github.com/sluicefw/sluice/tui"
)

// runOptions are sluice run's flags.
type runOptions struct {
	config     string
	state      string
	ssh        string
	console    listFlag
	confirm    time.Duration
	check      time.Duration
	management listFlag
	stale      time.Duration
	metrics    string
}

func runRun(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("run", "[--config FILE] [--state DIR] [--ssh ADDR] [--console TTY]", `Run the router daemon in this network namespace: apply the policy in force
(the last one confirmed in the state directory, else --config's, else the
built-in default), then bring its interfaces up with their static
addresses, default routes and the forwarding sysctls, log every drop with
its rule, and keep the ruleset applied, putting it back if the table
disappears, until interrupted. On exit the ruleset stays in force: the box
fails closed.

With --ssh, operators manage the box over SSH with the keys in the state
directory's authorized_keys (see "sluice key"): a terminal session gets the
TUI, and commands such as "ssh box status" run without one. With --console,
the recovery console is served on that terminal device. A commit must be
confirmed within --confirm, or the previous policy comes back by itself; a
commit that would drop the committing session or a --management path is
refused unless forced.`, stderr)
	var o runOptions
	fs.StringVar(&o.config, "config", "", "the policy to use while the state holds none, and to reset to (default: the built-in policy)")
	fs.StringVar(&o.state, "state", "", "the state directory: policy history, keys, audit log, host key (default: a temporary one, removed at exit)")
	fs.StringVar(&o.ssh, "ssh", "", "serve SSH management on this address, such as :22 (default: off)")
	fs.Var(&o.console, "console", "serve the recovery console on this terminal device, such as /dev/ttyS0 (repeatable)")
	fs.DurationVar(&o.confirm, "confirm", router.DefaultConfirm, "how long a commit waits for confirmation before it rolls back")
	fs.DurationVar(&o.check, "check", 5*time.Second, "how often to check that the ruleset is still in the kernel")
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics, such as :9100 (the policy's metrics service; default: off)")
	fs.DurationVar(&o.stale, "stale", 24*time.Hour, "the TUI marks a rule stale when it has not been hit for this long")
	fs.Var(&o.management, "management", "a packet every new policy must accept, such as \"tcp 192.168.1.10:40000 -> 192.168.1.1:22 in lan\" (repeatable)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := log.New(stderr, "sluice: ", log.LstdFlags)
	if err := daemon(ctx, o, stdin, logger, machine{}); err != nil {
		logger.Print(err)
		return 1
	}
	return 0
}

// machine is what the appliance adds to the daemon when sluice is the
// machine's init; the zero machine is sluice run on a host.
type machine struct {
	// supervise runs a service, restarting it when it fails; nil runs
	// the dataplane once, and its failure ends the daemon.
	supervise func(ctx context.Context, name string, run func(context.Context) error)
	power     func(tui.Power) error
	update    func(uki []byte) (string, error)
	ready     func() // once the first policy is in force
}

// daemon runs the router and its management services until ctx ends.
func daemon(ctx context.Context, o runOptions, stdin io.Reader, logger *log.Logger, m machine) error {
	name, src, err := readPolicy(o.config, stdin)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	if _, ok := compileSource(name, src, logger.Writer()); !ok {
		return fmt.Errorf("run: %s is not a valid policy", name)
	}
	dir := o.state
	if dir == "" {
		if dir, err = os.MkdirTemp("", "sluice-state-"); err != nil {
			return fmt.Errorf("run: %w", err)
		}
		defer os.RemoveAll(dir)
		logger.Printf("state in %s until exit: --state DIR keeps it", dir)
	}
	store, err := state.Open(dir, time.Now)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	engine, err := router.NewKernel(time.Minute, logger)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	// Drops are always listened for: whether the kernel logs them is the
	// policy's choice, and a commit may change it.
	ring := droplog.NewRing(1024)
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
	r, err := router.New(router.Config{
		Store: store, Engine: engine, Default: src, DefaultName: name,
		Confirm: o.confirm, Management: o.management, Drops: ring, Logger: logger,
		Power: m.power, Update: m.update,
	})
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}

	errc := make(chan error, 1)
	if m.supervise != nil {
		go m.supervise(ctx, "dataplane", func(ctx context.Context) error { return r.Run(ctx, o.check) })
		go func() { <-ctx.Done(); errc <- nil }()
	} else {
		go func() { errc <- r.Run(ctx, o.check) }()
	}
	if m.ready != nil {
		go func() {
			select {
			case <-r.Ready():
				m.ready()
			case <-ctx.Done():
			}
		}()
	}
	// A DHCP uplink gets its lease once the firewall that accepts the
	// server's replies is in force; the ruleset follows the address.
	go keepLeases(ctx, r, o.check, logger, m.supervise)
	// The console is physical access: it starts at once, so it is there
	// even when the policy cannot be applied. SSH starts once the policy
	// is in force: the firewall comes first.
	for _, c := range o.console {
		go serveConsole(ctx, c, store, r, logger)
	}
	select {
	case <-r.Ready():
	case <-ctx.Done():
	case err := <-errc:
		logger.Print("stopping; the ruleset stays in force")
		return err
	}
	if o.ssh != "" {
		srv, err := serveSSH(o.ssh, o.stale, store, r, logger)
		if err != nil {
			return fmt.Errorf("run: %w", err)
		}
		defer srv.Close()
	}
	if o.metrics != "" {
		l, err := net.Listen("tcp", o.metrics)
		if err != nil {
			return fmt.Errorf("run: metrics: %w", err)
		}
		hs := &http.Server{Handler: metrics.Handler(r), ReadHeaderTimeout: 10 * time.Second}
		defer hs.Close()
		logger.Printf("metrics: http://%s/metrics", l.Addr())
		go func() {
			if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Printf("metrics: %v", err)
			}
		}()
	}
	go logDrops(ctx, logger, r)
	err = <-errc
	logger.Print("stopping; the ruleset stays in force")
	return err
}

// serveSSH starts the SSH server on addr.
func serveSSH(addr string, stale time.Duration, store *state.Store, r *router.Router, logger *log.Logger) (*sshd.Server, error) {
	hostKey, err := store.HostKey()
	if err != nil {
		return nil, fmt.Errorf("ssh: %w", err)
	}
	srv, err := sshd.New(sshd.Config{
		HostKeyPEM: hostKey,
		Authorize: func(k gossh.PublicKey) (tui.Identity, bool) {
			key, ok := store.Authorize(k)
			if !ok {
				return tui.Identity{}, false
			}
			role := tui.Admin
			if key.Role == state.RoleViewer {
				role = tui.Viewer
			}
			return tui.Identity{Name: key.Name, Role: role}, true
		},
		Audit: r.AuditEvent,
		Program: func(id tui.Identity, rd *lipgloss.Renderer, w, h int) tea.Model {
			return tui.New(id, r, r, tui.Options{Renderer: rd, Width: w, Height: h, StaleAfter: stale})
		},
		Command: r.Command,
		Usage:   "sluice: run a command, such as `ssh box status`, or log in with a terminal for the TUI; `ssh box help` lists the commands\n",
	})
	if err != nil {
		return nil, fmt.Errorf("ssh: %w", err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ssh: %w", err)
	}
	fp := ""
	if signer, err := gossh.ParsePrivateKey(hostKey); err == nil {
		fp = " (host key " + gossh.FingerprintSHA256(signer.PublicKey()) + ")"
	}
	logger.Printf("ssh: listening on %s%s", l.Addr(), fp)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, net.ErrClosed) {
			logger.Printf("ssh: %v", err)
		}
	}()
	return srv, nil
}

// serveConsole serves the recovery console on a terminal device until ctx
// ends, opening the device again whenever its input ends (a terminal
// server hanging up), after a pause.
func serveConsole(ctx context.Context, path string, store *state.Store, r *router.Router, logger *log.Logger) {
	for ctx.Err() == nil {
		tty, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			logger.Printf("console %s: %v", path, err)
		} else {
			c := &tui.Console{ID: tui.Identity{Name: "console", Role: tui.Admin, Console: true}, Monitor: r, Recovery: r, Confirm: r.Confirm}
			if store.HasPassphrase() {
				c.Passphrase = func(p string) bool { ok, _ := store.CheckPassphrase(p); return ok }
			}
			if err := c.Run(ctx, tty, tty); err != nil && ctx.Err() == nil {
				logger.Printf("console %s: %v", path, err)
			}
			tty.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// logDrops logs every drop with its rule, as it is recorded.
func logDrops(ctx context.Context, logger *log.Logger, r *router.Router) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var seen uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			var drops []tui.Drop
			drops, seen = r.DropsSince(seen)
			for _, d := range drops {
				rule := "unknown rule"
				if d.Rule != "" {
					rule = d.Rule + " " + d.RuleName
				}
				logger.Printf("drop: %s in %s by %s", d.Summary, d.In, rule)
			}
		}
	}
}

// keepLeases runs a DHCP client on every interface the policy in force
// gives a DHCP address, from when the policy is first in force: a commit
// that adds one starts its client within a check interval, and one that
// removes it stops it (the lease's address then expires in the kernel).
func keepLeases(ctx context.Context, r *router.Router, every time.Duration, logger *log.Logger,
	supervise func(ctx context.Context, name string, run func(context.Context) error)) {
	if supervise == nil { // on a host: a client that fails is logged, not restarted
		supervise = func(ctx context.Context, name string, run func(context.Context) error) {
			if err := run(ctx); err != nil {
				logger.Printf("%s: %v", name, err)
			}
		}
	}
	select {
	case <-r.Ready():
	case <-ctx.Done():
		return
	}
	running := map[string]context.CancelFunc{} // by device
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		prog := r.Program()
		want := map[string]bool{}
		for _, ifc := range prog.Interfaces {
			if !ifc.DHCP {
				continue
			}
			want[ifc.Device] = true
			if running[ifc.Device] != nil {
				continue
			}
			cctx, cancel := context.WithCancel(ctx)
			running[ifc.Device] = cancel
			c := &dhcp.Client{Device: ifc.Device, Hostname: prog.Hostname, Logf: logger.Printf}
			go supervise(cctx, "dhcp "+ifc.Device, c.Run)
		}
		for dev, cancel := range running {
			if !want[dev] {
				logger.Printf("dhcp %s: the policy no longer takes this address from DHCP; stopping", dev)
				cancel()
				delete(running, dev)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
