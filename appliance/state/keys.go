package state

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Roles a key may have.
const (
	RoleAdmin  = "admin"  // may change the policy and the box
	RoleViewer = "viewer" // may only look
)

// Key is one line of authorized_keys.
type Key struct {
	Name string        // the line's comment, else the key's SHA256 fingerprint
	Role string        // RoleAdmin or RoleViewer
	Key  ssh.PublicKey // the public key
	Line string        // the line as written, trimmed
}

// ParseKey parses one authorized_keys line: an optional option role=admin or
// role=viewer (absent means admin), the key, and a comment naming it. Other
// options are refused: sluice would not honour them, and ignoring one such
// as from= would grant more than the line says.
func ParseKey(line string) (Key, error) {
	line = strings.TrimSpace(line)
	if line == "" || strings.HasPrefix(line, "#") {
		return Key{}, errors.New("parse authorized key: empty line")
	}
	if strings.ContainsAny(line, "\r\n") {
		return Key{}, fmt.Errorf("parse authorized key %.40q: more than one line", line)
	}
	pk, comment, opts, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return Key{}, fmt.Errorf("parse authorized key %.40q: not an OpenSSH public key line: %w", line, err)
	}
	role := RoleAdmin
	for _, o := range opts {
		name, val, ok := strings.Cut(o, "=")
		if !ok || name != "role" {
			return Key{}, fmt.Errorf("parse authorized key %.40q: unsupported option %q (only role=admin or role=viewer)", line, o)
		}
		val = strings.Trim(val, `"`)
		if val != RoleAdmin && val != RoleViewer {
			return Key{}, fmt.Errorf("parse authorized key %.40q: unknown role %q (want %s or %s)", line, val, RoleAdmin, RoleViewer)
		}
		role = val
	}
	name := strings.TrimSpace(comment)
	if name == "" {
		name = ssh.FingerprintSHA256(pk)
	}
	return Key{Name: name, Role: role, Key: pk, Line: line}, nil
}

// Keys returns the keys in authorized_keys, in file order. Blank lines and
// # comments are skipped. Lines that do not parse are left out and reported
// together in err, alongside the keys that did parse, so one bad line locks
// no one out.
func (s *Store) Keys() ([]Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys, _, err := s.keys()
	return keys, err
}

// keys also returns the file's raw contents.
func (s *Store) keys() ([]Key, []byte, error) {
	p := s.path(keysFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil // no keys yet
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read keys %s: %w", p, err)
	}
	var keys []Key
	var errs []error
	lineNo := 0
	for line := range bytes.Lines(data) {
		lineNo++
		l := strings.TrimSpace(string(line))
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, err := ParseKey(l)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", p, lineNo, err))
			continue
		}
		keys = append(keys, k)
	}
	return keys, data, errors.Join(errs...)
}

// AddKey validates line (see ParseKey), refuses a key already present, and
// appends the line to authorized_keys by rewriting the file atomically.
func (s *Store) AddKey(line string) (Key, error) {
	k, err := ParseKey(line)
	if err != nil {
		return Key{}, fmt.Errorf("add key: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Lines of the file that do not parse are kept as they are; they
	// still count for nothing.
	keys, data, err := s.keys()
	if err != nil && data == nil {
		return Key{}, fmt.Errorf("add key %s: %w", k.Name, err)
	}
	m := k.Key.Marshal()
	for _, o := range keys {
		if bytes.Equal(o.Key.Marshal(), m) {
			return Key{}, fmt.Errorf("add key %s: duplicate: the key %s is already authorized as %q (%s)", k.Name, ssh.FingerprintSHA256(k.Key), o.Name, o.Role)
		}
	}
	out := bytes.Clone(data)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	out = append(append(out, k.Line...), '\n')
	p := s.path(keysFile)
	if err := WriteFile(p, out, fileMode); err != nil {
		return Key{}, fmt.Errorf("add key %s: %w", k.Name, err)
	}
	return k, nil
}

// Authorize reports whether pk is in authorized_keys, and as which key.
func (s *Store) Authorize(pk ssh.PublicKey) (Key, bool) {
	if pk == nil {
		return Key{}, false
	}
	keys, _ := s.Keys() // bad lines authorize no one; good ones still do
	m := pk.Marshal()
	for _, k := range keys {
		if bytes.Equal(k.Key.Marshal(), m) {
			return k, true
		}
	}
	return Key{}, false
}
