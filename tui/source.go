// Package tui is sluice's terminal user interface: the pages an operator
// sees over SSH and the recovery screen on the serial console.
//
// The TUI holds no state of the router: it reads everything through the
// Monitor, Operator and Recovery interfaces, which the daemon implements, so
// the same pages show the kernel engine or the userspace one and tests drive
// them with fakes.
package tui

import (
	"net/netip"
	"time"

	"github.com/sluicefw/sluice/dataplane/flows"
	"github.com/sluicefw/sluice/dataplane/policy"
)

// Role is what an operator may do.
type Role uint8

const (
	// Viewer sees every page and changes nothing.
	Viewer Role = iota
	// Admin may also kill flows, commit and confirm policies.
	Admin
)

func (r Role) String() string {
	if r == Admin {
		return "admin"
	}
	return "viewer"
}

// Identity is who is at the other end of a session.
type Identity struct {
	Name    string         // the SSH key's name, or "console"
	Role    Role           // what the session may do
	Remote  netip.AddrPort // the SSH client's address; zero on the console
	Local   netip.AddrPort // the box's address the client connected to; zero on the console
	Console bool           // the serial console (physical access)
}

// String is how the audit log names the session, such as
// "alice (admin) from 192.168.1.10:51234" or "console".
func (id Identity) String() string {
	if id.Console {
		return "console"
	}
	s := id.Name + " (" + id.Role.String() + ")"
	if id.Remote.IsValid() {
		s += " from " + id.Remote.String()
	}
	return s
}

// Interface is one of the box's network interfaces.
type Interface struct {
	Name    string // the policy's name, such as "wan"
	Device  string // the kernel's name, such as "eth0"
	Up      bool
	Addrs   []netip.Prefix
	RxBytes uint64 // counters since boot; the TUI derives rates from two samples
	TxBytes uint64
}

// Version is one committed policy in the history.
type Version struct {
	N    int // 1, 2, ...; 0 is the built-in default before any commit
	Who  string
	Why  string
	When time.Time
}

// Pending is a commit waiting for confirmation: unless someone confirms
// before Deadline, the box goes back to Previous by itself.
type Pending struct {
	Version  Version
	Previous int
	Deadline time.Time
}

// Status is the overview of the box.
type Status struct {
	Hostname   string
	Engine     string // such as "kernel (nftables)"
	Started    time.Time
	Policy     Version  // the policy in force
	Pending    *Pending // nil when nothing waits for confirmation
	Interfaces []Interface
	Alerts     []string // recent errors and warnings, oldest first
}

// Drop is one dropped packet from the drop log.
type Drop struct {
	Time     time.Time
	In       string // interface the packet came in on
	Summary  string // decoded packet, such as "tcp 10.0.0.1:40000 -> 1.1.1.1:443 [S]"
	Rule     string // the rule's ID, such as "r1a2b3c4d5e"; empty when unknown
	RuleName string // the rule's name, such as "lan egress default"
	Reason   string // why, such as "egress-default"
}

// RuleStat is one rule with its counter.
type RuleStat struct {
	ID      string
	Name    string
	Line    int // the policy line the rule comes from; 0 for built-in rules
	Packets uint64
	Bytes   uint64
	LastHit time.Time // zero when never hit since the policy was applied
}

// FlowChange is a live flow whose verdict a policy change would alter.
type FlowChange struct {
	Flow   flows.Flow
	Before string // such as "accept r1a2b3c4d5e lan egress allow 1.1.1.1"
	After  string // such as "drop r0f1e2d3c4b lan egress default"
}

// Preview is what committing a policy text would do.
type Preview struct {
	Diagnostics policy.Diagnostics // errors stop a commit; warnings do not
	TextDiff    string             // unified diff from the policy in force
	Changes     []FlowChange       // live flows whose verdict would change
	Flows       int                // how many live flows were judged
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	Time   time.Time
	Who    string // Identity.String() of the session, or "sluice" for the box itself
	Action string // such as "commit", "confirm", "rollback", "login-failed"
	Detail string
}

// Monitor is the live state the pages show. Its methods are called from
// the TUI's commands, concurrently with each other and with other sessions;
// the slices returned are the caller's.
type Monitor interface {
	Status() Status
	Flows() []flows.Flow
	Drops() []Drop // oldest first
	Rules() []RuleStat
	Audit() []AuditEntry // oldest first
}

// Operator changes the box. Implementations check id.Role themselves; the
// TUI only hides what a viewer may not do.
type Operator interface {
	// Policy returns the text of the policy in force and its version.
	Policy() (string, Version)
	// Preview validates text and says what committing it would change.
	Preview(text string) Preview
	// Commit applies text and starts the confirm timer. It refuses a text
	// with errors, and one under which id's own connection or a declared
	// management path would be dropped, naming the rule, unless force.
	Commit(id Identity, text, why string, force bool) (Pending, error)
	// Confirm makes the pending commit permanent.
	Confirm(id Identity) error
	// KillFlow deletes a live connection.
	KillFlow(id Identity, f flows.Flow) error
}

// Power is what Recovery.Power does to the machine.
type Power uint8

const (
	Reboot Power = iota
	PowerOff
)

// Recovery is what the serial console's recovery screen does.
type Recovery interface {
	// Versions lists the policy history, oldest first.
	Versions() []Version
	// Rollback applies an earlier version (committed and confirmed at once).
	Rollback(id Identity, n int) error
	// ResetDefault applies the built-in default policy.
	ResetDefault(id Identity) error
	// AddKey adds one authorized_keys line.
	AddKey(id Identity, line string) error
	// Power reboots or powers off the machine.
	Power(id Identity, p Power) error
	// FactoryReset erases the state (history, keys, audit log, host key)
	// and applies the built-in default.
	FactoryReset(id Identity) error
}
