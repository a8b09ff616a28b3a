// Package state keeps sluice's persistent state in one directory: every
// committed policy version and which one is in force, the audit log, the SSH
// keys allowed to manage the box, its SSH host key and the recovery
// passphrase.
//
// It exists so that a power cut at any moment leaves the box bootable: every
// file is replaced atomically, every policy version carries its own checksum,
// and a damaged file costs a warning and a fallback, never the router.
package state
