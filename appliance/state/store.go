package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Names inside the state directory.
//
//	history/000001.policy  policy version 1: one JSON metadata line, then the text
//	current                the number of the version in force ("0" or absent: built-in default)
//	audit.log              one JSON object per line, newest last
//	authorized_keys        OpenSSH authorized_keys, with an optional role= option
//	ssh_host_ed25519_key   the SSH host key, OpenSSH PEM, mode 0600
//	passphrase             bcrypt hash of the recovery passphrase, mode 0600
//
// Names starting with tmpPrefix are WriteFile's temporary files; Open
// removes any left by an interrupted write.
const (
	historyDir      = "history"
	currentFile     = "current"
	auditFile       = "audit.log"
	keysFile        = "authorized_keys"
	hostKeyFile     = "ssh_host_ed25519_key"
	passphraseFile  = "passphrase"
	tmpPrefix       = ".tmp-"
	policySuffix    = ".policy"
	dirMode         = 0o700
	fileMode        = 0o600
	auditMaxBytes   = 1 << 20
	auditKeepBytes  = auditMaxBytes / 2
	versionNameSize = 6
)

// Store is sluice's state directory, opened by Open.
//
// A Store is safe for concurrent use by any number of goroutines: one mutex
// serialises every read and write of the directory (bcrypt comparisons run
// outside it). It does not lock against other processes: one Store per
// directory per box. The zero value is not usable. Returned slices belong to
// the caller.
type Store struct {
	dir string
	now func() time.Time
	// passphraseCost is the bcrypt cost of new passphrase hashes; 0 means
	// bcrypt.DefaultCost. Tests lower it.
	passphraseCost int

	mu sync.Mutex // guards every file under dir
}

// Open opens the state directory dir, creating it and its layout if missing,
// and removes temporary files left by interrupted writes. now is the clock
// stamped on policy versions and audit entries; nil means time.Now.
func Open(dir string, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	s := &Store{dir: dir, now: now}
	if err := s.layout(); err != nil {
		return nil, err
	}
	for _, d := range []string{dir, filepath.Join(dir, historyDir)} {
		if err := removeTemps(d); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(name ...string) string {
	return filepath.Join(append([]string{s.dir}, name...)...)
}

// layout creates the directory and its history subdirectory.
func (s *Store) layout() error {
	for _, d := range []string{s.dir, s.path(historyDir)} {
		if err := os.MkdirAll(d, dirMode); err != nil {
			return fmt.Errorf("open state %s: %w", d, err)
		}
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("open state %s: %w", s.dir, err)
	}
	return nil
}

// removeTemps removes WriteFile's temporary files from dir.
func removeTemps(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("open state: list %s: %w", dir, err)
	}
	removed := false
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), tmpPrefix) || e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("open state: remove leftover temp file %s: %w", p, err)
		}
		removed = true
	}
	if !removed {
		return nil // nothing changed, nothing to sync
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("open state: %w", err)
	}
	return nil
}

// WriteFile replaces the file at path with data atomically: a reader, or
// the box after a power cut, sees either the old contents or the new, never
// a mix. It writes a temporary file in the same directory, syncs it, renames
// it over path and syncs the directory. perm is applied regardless of the
// umask.
func WriteFile(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, tmpPrefix+base+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s (%d bytes) via %s: %w", path, len(data), tmp, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: chmod %s %v: %w", path, tmp, perm, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: sync %s: %w", path, tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: close %s: %w", path, tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: rename %s: %w", path, tmp, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// syncDir makes the directory entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// FactoryReset removes everything in the state directory (policy history,
// current pointer, keys, audit log, host key, passphrase and anything else)
// and leaves an empty, usable store.
func (s *Store) FactoryReset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("factory reset %s: %w", s.dir, err)
	}
	for _, e := range ents {
		p := s.path(e.Name())
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("factory reset %s: remove %s: %w", s.dir, p, err)
		}
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("factory reset: %w", err)
	}
	if err := s.layout(); err != nil {
		return fmt.Errorf("factory reset: %w", err)
	}
	return nil
}
