package state

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/ssh"
)

func TestHostKey(t *testing.T) {
	s, dir := openStore(t)
	first, err := s.HostKey()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(first, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n")) {
		t.Errorf("host key is not OpenSSH PEM: %.40q", first)
	}
	raw, err := ssh.ParseRawPrivateKey(first)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := raw.(*ed25519.PrivateKey); !ok {
		t.Errorf("host key type = %T, want *ed25519.PrivateKey", raw)
	}
	fi, err := os.Stat(filepath.Join(dir, "ssh_host_ed25519_key"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("host key mode = %v, want %v", got, want)
	}
	again, err := s.HostKey()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, again) {
		t.Error("second HostKey call returned a different key")
	}
	s2, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	reopened, err := s2.HostKey()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, reopened) {
		t.Error("HostKey after reopening returned a different key")
	}

	// Another store gets another key.
	other, _ := openStore(t)
	o, err := other.HostKey()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first, o) {
		t.Error("two stores generated the same host key")
	}

	// A damaged key file is an error, not silently replaced.
	if err := os.WriteFile(filepath.Join(dir, "ssh_host_ed25519_key"), first[:40], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.HostKey(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("HostKey on a damaged file = %v, want ErrCorrupt", err)
	}
}

func TestPassphrase(t *testing.T) {
	s, dir := openStore(t)
	s.passphraseCost = bcrypt.MinCost
	check := func(p string, wantOK, wantSet bool) {
		t.Helper()
		if ok, set := s.CheckPassphrase(p); ok != wantOK || set != wantSet {
			t.Errorf("CheckPassphrase(%q) = %v, %v; want %v, %v", p, ok, set, wantOK, wantSet)
		}
		if has := s.HasPassphrase(); has != wantSet {
			t.Errorf("HasPassphrase() = %v, want %v", has, wantSet)
		}
	}
	check("anything", false, false)
	check("", false, false)
	if err := s.SetPassphrase(""); err == nil {
		t.Error("SetPassphrase(\"\") succeeded")
	}
	if err := s.SetPassphrase(string(bytes.Repeat([]byte("x"), 73))); err == nil {
		t.Error("SetPassphrase of 73 bytes succeeded")
	}
	if err := s.SetPassphrase("correct horse"); err != nil {
		t.Fatal(err)
	}
	check("correct horse", true, true)
	check("correct hors", false, true)
	check("", false, true)
	p := filepath.Join(dir, "passphrase")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("correct horse")) {
		t.Error("passphrase stored in clear")
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("passphrase mode = %v, want %v", got, want)
	}
	if err := s.SetPassphrase("battery staple"); err != nil {
		t.Fatal(err)
	}
	check("correct horse", false, true)
	check("battery staple", true, true)
	hash, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if cost, err := bcrypt.Cost(bytes.TrimSpace(hash)); err != nil || cost != bcrypt.MinCost {
		t.Errorf("stored hash cost = %d, %v; want %d", cost, err, bcrypt.MinCost)
	}

	s2, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, set := s2.CheckPassphrase("battery staple"); !ok || !set {
		t.Errorf("CheckPassphrase after reopen = %v, %v; want true, true", ok, set)
	}
	if err := os.WriteFile(p, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("battery staple", false, true)
}
