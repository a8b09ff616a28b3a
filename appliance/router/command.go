package router

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicefw/sluice/dataplane/flows"
	"github.com/sluicefw/sluice/tui"
)

// commandUsage is what `ssh box help` prints.
const commandUsage = `commands:
  status                                the box, its policy, interfaces and alerts
  policy show                           the policy in force
  policy history                        every committed version
  policy diff < FILE                    what committing FILE would change
  policy commit [--why TEXT] [--force] < FILE
                                        apply FILE; confirm it in time or it rolls back
  confirm                               keep the policy waiting for confirmation
  flows [--json]                        live connections
  audit                                 the audit log
  update < sluice.efi                   install a new image in the other boot slot and reboot into it
`

// Command runs one management command for a session without a terminal,
// such as `ssh box status`, and returns its exit status: 0 done, 1 failed
// or refused, 2 a usage error.
func (r *Router) Command(ctx context.Context, id tui.Identity, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, commandUsage)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "sluice: %s: %v\n", strings.Join(args, " "), err)
		return 1
	}
	switch cmd := strings.Join(args[:min(len(args), 2)], " "); {
	case args[0] == "help" || args[0] == "--help":
		fmt.Fprint(stdout, commandUsage)
		return 0
	case args[0] == "status" && len(args) == 1:
		r.writeStatus(stdout)
		return 0
	case cmd == "policy show" && len(args) == 2:
		text, _ := r.Policy()
		io.WriteString(stdout, text)
		return 0
	case cmd == "policy history" && len(args) == 2:
		_, v := r.Policy()
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tWHEN\tWHO\tWHY")
		for _, h := range r.Versions() {
			mark := ""
			if h.N == v.N {
				mark = " *"
			}
			fmt.Fprintf(tw, "v%d%s\t%s\t%s\t%s\n", h.N, mark, h.When.UTC().Format(time.RFC3339), h.Who, h.Why)
		}
		tw.Flush()
		return 0
	case cmd == "policy diff" && len(args) == 2:
		text, err := readPolicy(stdin)
		if err != nil {
			return fail(err)
		}
		p := r.Preview(text)
		for _, d := range p.Diagnostics {
			fmt.Fprintln(stdout, d)
		}
		io.WriteString(stdout, p.TextDiff)
		fmt.Fprintf(stdout, "%d live connections judged; %d would change verdict\n", p.Flows, len(p.Changes))
		for _, c := range p.Changes {
			fmt.Fprintf(stdout, "  %s: %s -> %s\n", c.Flow, c.Before, c.After)
		}
		if p.Diagnostics.Err() != nil {
			return 1
		}
		return 0
	case cmd == "policy commit":
		fs := flag.NewFlagSet("policy commit", flag.ContinueOnError)
		fs.SetOutput(stderr)
		why := fs.String("why", "", "why the change is made, for the audit log")
		force := fs.Bool("force", false, "commit even if it would cut this session or a management path")
		if err := fs.Parse(args[2:]); err != nil || fs.NArg() > 0 {
			fmt.Fprint(stderr, commandUsage)
			return 2
		}
		text, err := readPolicy(stdin)
		if err != nil {
			return fail(err)
		}
		p, err := r.Commit(id, text, *why, *force)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "committed v%d: run `confirm` within %v (before %s) or v%d comes back\n",
			p.Version.N, p.Deadline.Sub(r.cfg.Now()).Round(time.Second), p.Deadline.UTC().Format(time.TimeOnly), p.Previous)
		return 0
	case args[0] == "confirm" && len(args) == 1:
		p, ok := r.Pending()
		if err := r.Confirm(id); err != nil {
			return fail(err)
		}
		if ok {
			fmt.Fprintf(stdout, "confirmed v%d\n", p.Version.N)
		}
		return 0
	case args[0] == "flows":
		fs := flag.NewFlagSet("flows", flag.ContinueOnError)
		fs.SetOutput(stderr)
		asJSON := fs.Bool("json", false, "one JSON array of flows")
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
			fmt.Fprint(stderr, commandUsage)
			return 2
		}
		live, err := r.cfg.Engine.Flows()
		if err != nil {
			return fail(err)
		}
		if *asJSON {
			if live == nil {
				live = []flows.Flow{}
			}
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(live); err != nil {
				return fail(err)
			}
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FLOW\tSTATE\tBYTES")
		for _, f := range live {
			fmt.Fprintf(tw, "%s\t%s\t%d\n", f, f.State, f.Bytes[0]+f.Bytes[1])
		}
		tw.Flush()
		return 0
	case args[0] == "update" && len(args) == 1:
		if err := allowed(id); err != nil {
			return fail(err)
		}
		if r.cfg.Update == nil || r.cfg.Power == nil {
			return fail(errors.New("this sluice does not boot from slots: updates need the appliance booted from its disk image"))
		}
		img, err := io.ReadAll(io.LimitReader(stdin, 256<<20))
		if err != nil {
			return fail(err)
		}
		what, err := r.cfg.Update(img)
		if err != nil {
			r.AuditEvent(id.String(), "update-failed", err.Error())
			return fail(err)
		}
		r.AuditEvent(id.String(), "update", what)
		fmt.Fprintf(stdout, "%s; rebooting into it\n", what)
		go func() {
			time.Sleep(time.Second) // let the answer reach the client
			if err := r.cfg.Power(tui.Reboot); err != nil {
				r.raise(fmt.Sprintf("reboot after update: %v", err))
			}
		}()
		return 0
	case args[0] == "audit" && len(args) == 1:
		for _, e := range r.Audit() {
			fmt.Fprintf(stdout, "%s  %s  %s  %s\n", e.Time.UTC().Format(time.RFC3339), e.Who, e.Action, e.Detail)
		}
		return 0
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n%s", strings.Join(args, " "), commandUsage)
	return 2
}

// readPolicy reads a policy from a session's input, bounded so a runaway
// client cannot fill the box's memory.
func readPolicy(stdin io.Reader) (string, error) {
	const limit = 64 << 20
	b, err := io.ReadAll(io.LimitReader(stdin, limit+1))
	if err != nil {
		return "", fmt.Errorf("read the policy: %w", err)
	}
	if len(b) > limit {
		return "", errors.New("the policy is over 64 MiB")
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return "", errors.New("no policy on standard input")
	}
	return string(b), nil
}

// writeStatus prints the overview as text.
func (r *Router) writeStatus(w io.Writer) {
	s := r.Status()
	now := r.cfg.Now()
	fmt.Fprintf(w, "host     %s\n", s.Hostname)
	fmt.Fprintf(w, "engine   %s\n", s.Engine)
	fmt.Fprintf(w, "uptime   %v\n", now.Sub(s.Started).Round(time.Second))
	if s.Policy.N == 0 {
		fmt.Fprintf(w, "policy   %s (no commit yet)\n", r.cfg.DefaultName)
	} else {
		fmt.Fprintf(w, "policy   v%d by %s at %s: %s\n", s.Policy.N, s.Policy.Who, s.Policy.When.UTC().Format(time.RFC3339), s.Policy.Why)
	}
	if p := s.Pending; p != nil {
		fmt.Fprintf(w, "pending  v%d by %s: confirm within %v or v%d comes back\n", p.Version.N, p.Version.Who, p.Deadline.Sub(now).Round(time.Second), p.Previous)
	}
	for _, i := range s.Interfaces {
		state := "down"
		if i.Up {
			state = "up"
		}
		var addrs []string
		for _, a := range i.Addrs {
			addrs = append(addrs, a.String())
		}
		fmt.Fprintf(w, "iface    %s (%s) %s %s rx %d tx %d bytes\n", i.Name, i.Device, state, strings.Join(addrs, " "), i.RxBytes, i.TxBytes)
	}
	for _, a := range s.Alerts {
		fmt.Fprintf(w, "alert    %s\n", a)
	}
}
