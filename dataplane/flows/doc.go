// Package flows lists, follows and deletes the kernel's connection-tracking
// entries, and revokes the ones a new policy no longer allows.
//
// The ruleset accepts packets of established flows before any policy rule
// looks at them, so a connection the old policy let start outlives a policy
// that forbids it. Revoke closes that gap after an apply: it judges every
// tracked flow as the first packet that started it and deletes those the new
// policy would drop; their next packet is then a new flow that does not start
// with SYN, and the ruleset drops it.
package flows
