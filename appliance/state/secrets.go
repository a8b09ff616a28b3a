package state

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/ssh"
)

// HostKey returns the box's SSH host key as an OpenSSH PEM private key. The
// first call generates an ed25519 key and writes it with mode 0600; every
// later call, in this process or after reopening, returns the same bytes. A
// host key file that does not parse is an error, not replaced: a silently
// new host key would look like an impostor to every client.
func (s *Store) HostKey() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.path(hostKeyFile)
	data, err := os.ReadFile(p)
	if err == nil {
		if _, err := ssh.ParseRawPrivateKey(data); err != nil {
			return nil, fmt.Errorf("host key %s: %w: %v", p, ErrCorrupt, err)
		}
		return data, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("host key %s: %w", p, err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("host key %s: generate ed25519: %w", p, err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "sluice")
	if err != nil {
		return nil, fmt.Errorf("host key %s: encode: %w", p, err)
	}
	data = pem.EncodeToMemory(block)
	if err := WriteFile(p, data, fileMode); err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	return data, nil
}

// SetPassphrase stores a bcrypt hash of the recovery passphrase p,
// replacing any earlier one. p must be 1 to 72 bytes (bcrypt's limit).
func (s *Store) SetPassphrase(p string) error {
	path := s.path(passphraseFile)
	if p == "" {
		return fmt.Errorf("set passphrase %s: empty passphrase", path)
	}
	cost := s.passphraseCost
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(p), cost)
	if err != nil {
		return fmt.Errorf("set passphrase %s: %w", path, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := WriteFile(path, append(hash, '\n'), fileMode); err != nil {
		return fmt.Errorf("set passphrase: %w", err)
	}
	return nil
}

// HasPassphrase reports whether a recovery passphrase is set, as
// CheckPassphrase's set does, without comparing one.
func (s *Store) HasPassphrase() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := os.Stat(s.path(passphraseFile))
	return !errors.Is(err, fs.ErrNotExist)
}

// CheckPassphrase reports whether p is the recovery passphrase (ok) and
// whether one is set at all (set). An unreadable or damaged hash file counts
// as set but never matches.
func (s *Store) CheckPassphrase(p string) (ok, set bool) {
	path := s.path(passphraseFile)
	s.mu.Lock()
	data, err := os.ReadFile(path)
	s.mu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return false, false
	}
	if err != nil {
		return false, true
	}
	hash := data
	if n := len(hash); n > 0 && hash[n-1] == '\n' {
		hash = hash[:n-1]
	}
	return bcrypt.CompareHashAndPassword(hash, []byte(p)) == nil, true
}
