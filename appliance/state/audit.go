package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// Entry is one line of the audit log.
type Entry struct {
	Time   time.Time `json:"time"`
	Who    string    `json:"who"`
	Action string    `json:"action"`
	Detail string    `json:"detail,omitempty"`
}

// Audit appends e to the audit log as one JSON line and syncs it. A zero
// e.Time is stamped with the store's clock. When the log passes 1 MiB it is
// rewritten, atomically, to its newest half.
func (s *Store) Audit(e Entry) error {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	e.Time = e.Time.Round(0).UTC()
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit %q: encode: %w", e.Action, err)
	}
	line = append(line, '\n')

	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.path(auditFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return fmt.Errorf("audit %q: open %s: %w", e.Action, p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("audit %q: stat %s: %w", e.Action, p, err)
	}
	size := fi.Size()
	if size > 0 {
		// A write torn by a power cut leaves a line without its newline;
		// end it so this entry starts a line of its own.
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, size-1); err != nil {
			return fmt.Errorf("audit %q: read %s: %w", e.Action, p, err)
		}
		if last[0] != '\n' {
			line = append([]byte{'\n'}, line...)
		}
	}
	if _, err := f.Write(line); err != nil {
		return fmt.Errorf("audit %q: append to %s: %w", e.Action, p, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("audit %q: sync %s: %w", e.Action, p, err)
	}
	if size == 0 {
		if err := syncDir(s.dir); err != nil {
			return fmt.Errorf("audit %q: %w", e.Action, err)
		}
	}
	if size+int64(len(line)) > auditMaxBytes {
		if err := s.trimAudit(f); err != nil {
			return fmt.Errorf("audit %q: %w", e.Action, err)
		}
	}
	return nil
}

// trimAudit rewrites the audit log to its newest auditKeepBytes at most,
// starting at a line boundary.
func (s *Store) trimAudit(f *os.File) error {
	p := s.path(auditFile)
	data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		return fmt.Errorf("trim %s: %w", p, err)
	}
	if len(data) <= auditKeepBytes {
		return nil // already small enough
	}
	cut := len(data) - auditKeepBytes
	if data[cut-1] != '\n' {
		i := bytes.IndexByte(data[cut:], '\n')
		if i < 0 {
			data = data[:0]
		} else {
			cut += i + 1
		}
	}
	if err := WriteFile(p, data[cut:], fileMode); err != nil {
		return fmt.Errorf("trim audit log: %w", err)
	}
	return nil
}

// AuditLog returns the newest max entries of the audit log, oldest first;
// max <= 0 returns them all. Lines that do not decode or name no action,
// such as one torn by a power cut, are skipped.
func (s *Store) AuditLog(max int) ([]Entry, error) {
	s.mu.Lock()
	p := s.path(auditFile)
	data, err := os.ReadFile(p)
	s.mu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // nothing audited yet
	}
	if err != nil {
		return nil, fmt.Errorf("read audit log %s: %w", p, err)
	}
	var es []Entry
	for line := range bytes.Lines(data) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var e Entry
		if json.Unmarshal(line, &e) != nil || e.Action == "" {
			continue // torn or damaged line
		}
		es = append(es, e)
	}
	if max > 0 && len(es) > max {
		es = es[len(es)-max:]
	}
	return es, nil
}
