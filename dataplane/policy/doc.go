// Package policy parses, validates and compiles a sluice firewall policy into
// one intermediate form, and evaluates packets against it.
//
// The policy file is YAML, decoded strictly from its syntax tree so that every
// problem is reported with its line and column. [Parse] turns the file into a
// [Policy] and a list of [Diagnostic]s; [Compile] turns a valid Policy into a
// [Program], the IR that both the nftables compiler and the userspace engine
// read; an [Evaluator] decides one [Packet] at a time against a Program and
// names the [Rule] that decided it. Every rule carries a stable ID derived from
// its intent, so a counter, a log line and a replay verdict name the same rule.
package policy
