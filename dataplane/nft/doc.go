// Package nft compiles a policy into one nftables transaction, applies it
// atomically to a table sluice owns, and renders the same ruleset as nft
// syntax.
//
// Every rule is built once, from pieces that each carry both their netlink
// expressions and their nft text, so that what `sluice compile` prints is
// what `sluice apply` sends. The ruleset mirrors the order documented on
// policy.Program, and every rule counts into a named counter called by the
// policy rule's ID.
package nft
