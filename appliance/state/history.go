package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrCorrupt is wrapped by errors about a state file whose contents cannot
// be trusted: a checksum mismatch, a truncated file, bad metadata.
var ErrCorrupt = errors.New("corrupt")

// Version describes one committed policy version.
type Version struct {
	N      int       // 1, 2, ...; 0 is the built-in default
	Who    string    // who committed it
	Why    string    // the commit message
	When   time.Time // when it was committed (UTC)
	SHA256 string    // hex SHA-256 of the policy text

	// Bad says why the version's file cannot be used; empty when it is
	// good. Only Versions reports bad versions; it fills in N and Bad and
	// whatever metadata could still be read.
	Bad string
}

// versionHeader is the first line of a version file.
type versionHeader struct {
	N      int       `json:"n"`
	Who    string    `json:"who"`
	Why    string    `json:"why"`
	When   time.Time `json:"when"`
	SHA256 string    `json:"sha256"`
}

func (s *Store) versionPath(n int) string {
	return s.path(historyDir, fmt.Sprintf("%0*d%s", versionNameSize, n, policySuffix))
}

// versionNumbers returns the numbers of the version files present, in
// ascending order, whether or not their contents are good.
func (s *Store) versionNumbers() ([]int, error) {
	dir := s.path(historyDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list policy versions %s: %w", dir, err)
	}
	var ns []int
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), policySuffix)
		if !ok || e.IsDir() {
			continue
		}
		n, err := strconv.Atoi(name)
		if err != nil || n <= 0 {
			continue // not a version file
		}
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns, nil
}

// Add stores text as a new policy version, numbered one past the highest
// version present, committed by who with the message why. It does not put
// the version in force; SetCurrent does.
func (s *Store) Add(text []byte, who, why string) (Version, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns, err := s.versionNumbers()
	if err != nil {
		return Version{}, fmt.Errorf("add policy version: %w", err)
	}
	n := 1
	if len(ns) > 0 {
		n = ns[len(ns)-1] + 1
	}
	sum := sha256.Sum256(text)
	v := Version{N: n, Who: who, Why: why, When: s.now().Round(0).UTC(), SHA256: hex.EncodeToString(sum[:])}
	hdr, err := json.Marshal(versionHeader{N: v.N, Who: v.Who, Why: v.Why, When: v.When, SHA256: v.SHA256})
	if err != nil {
		return Version{}, fmt.Errorf("add policy version %d: encode metadata: %w", n, err)
	}
	data := make([]byte, 0, len(hdr)+1+len(text))
	data = append(append(append(data, hdr...), '\n'), text...)
	if err := WriteFile(s.versionPath(n), data, fileMode); err != nil {
		return Version{}, fmt.Errorf("add policy version %d: %w", n, err)
	}
	return v, nil
}

// Read returns the text and metadata of version n. Version 0 is the
// built-in default: nil text, Version{N: 0}. A damaged version file is an
// error wrapping ErrCorrupt; a missing one wraps fs.ErrNotExist.
func (s *Store) Read(n int) ([]byte, Version, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read(n)
}

func (s *Store) read(n int) ([]byte, Version, error) {
	if n == 0 {
		return nil, Version{}, nil // the built-in default has no file
	}
	if n < 0 {
		return nil, Version{}, fmt.Errorf("read policy version %d: no such version", n)
	}
	p := s.versionPath(n)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, Version{N: n}, fmt.Errorf("read policy version %d %s: %w", n, p, err)
	}
	text, v, err := parseVersion(n, data)
	if err != nil {
		return nil, v, fmt.Errorf("read policy version %d %s: %w", n, p, err)
	}
	return text, v, nil
}

// parseVersion checks and splits a version file. On error the returned
// Version holds what metadata could be read.
func parseVersion(n int, data []byte) ([]byte, Version, error) {
	line, text, ok := bytes.Cut(data, []byte{'\n'})
	if !ok {
		return nil, Version{N: n}, fmt.Errorf("%w: no metadata line (truncated?)", ErrCorrupt)
	}
	var h versionHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, Version{N: n}, fmt.Errorf("%w: bad metadata: %v", ErrCorrupt, err)
	}
	v := Version{N: n, Who: h.Who, Why: h.Why, When: h.When, SHA256: h.SHA256}
	if h.N != n {
		return nil, v, fmt.Errorf("%w: metadata says version %d", ErrCorrupt, h.N)
	}
	sum := sha256.Sum256(text)
	if got := hex.EncodeToString(sum[:]); got != h.SHA256 {
		return nil, v, fmt.Errorf("%w: checksum mismatch: text has sha256 %s, metadata says %s", ErrCorrupt, got, h.SHA256)
	}
	return text, v, nil
}

// Versions lists every version file, oldest first. A version whose file is
// damaged is listed with Bad saying why.
func (s *Store) Versions() ([]Version, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns, err := s.versionNumbers()
	if err != nil {
		return nil, err
	}
	vs := make([]Version, 0, len(ns))
	for _, n := range ns {
		_, v, err := s.read(n)
		if err != nil {
			v.N = n
			v.Bad = err.Error()
		}
		vs = append(vs, v)
	}
	return vs, nil
}

// SetCurrent puts version n in force: the one Current returns, normally the
// one an operator confirmed. 0 puts the built-in default in force. A missing
// or damaged version is refused. The pointer is written atomically.
func (s *Store) SetCurrent(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, _, err := s.read(n); err != nil {
		return fmt.Errorf("set current policy version %d: %w", n, err)
	}
	p := s.path(currentFile)
	if err := WriteFile(p, []byte(strconv.Itoa(n)+"\n"), fileMode); err != nil {
		return fmt.Errorf("set current policy version %d: %w", n, err)
	}
	return nil
}

// Current returns the text and metadata of the version in force. With none
// set (a fresh directory) it returns nil text and Version{N: 0}: use the
// built-in default. When the version in force cannot be read, Current falls
// back to the newest good version before it, or to the built-in default, and
// says so in warnings; err is only for failures to read the directory.
func (s *Store) Current() (text []byte, v Version, warnings []string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.path(currentFile)
	raw, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Version{}, nil, nil // nothing committed yet: built-in default
	}
	if err != nil {
		return nil, Version{}, nil, fmt.Errorf("read current policy version %s: %w", p, err)
	}
	n, perr := strconv.Atoi(strings.TrimSpace(string(raw)))
	if perr != nil || n < 0 {
		return nil, Version{}, []string{fmt.Sprintf("current policy pointer %s is corrupt (%q); using the built-in default", p, raw)}, nil
	}
	if n == 0 {
		return nil, Version{}, nil, nil
	}
	text, v, rerr := s.read(n)
	if rerr == nil {
		return text, v, nil, nil
	}
	ns, err := s.versionNumbers()
	if err != nil {
		return nil, Version{}, nil, fmt.Errorf("current policy version: %w", err)
	}
	for i := len(ns) - 1; i >= 0; i-- {
		m := ns[i]
		if m >= n {
			continue
		}
		text, v, err := s.read(m)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("policy version %d is bad, skipped: %v", m, err))
			continue
		}
		warnings = append([]string{fmt.Sprintf("current policy version %d is bad (%v); using version %d", n, rerr, m)}, warnings...)
		return text, v, warnings, nil
	}
	warnings = append([]string{fmt.Sprintf("current policy version %d is bad (%v); no good earlier version, using the built-in default", n, rerr)}, warnings...)
	return nil, Version{}, warnings, nil
}
