package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestAudit(t *testing.T) {
	s, _ := openStore(t)
	given := time.Date(2025, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))
	in := []Entry{
		{Who: "alice", Action: "commit", Detail: "version 1"},
		{Who: "bob", Action: "login"},
		{Time: given, Who: "carol", Action: "confirm", Detail: "multi\nline \"detail\""},
	}
	for _, e := range in {
		if err := s.Audit(e); err != nil {
			t.Fatal(err)
		}
	}
	want := []Entry{
		{Time: at(1), Who: "alice", Action: "commit", Detail: "version 1"},
		{Time: at(2), Who: "bob", Action: "login"},
		{Time: given.UTC(), Who: "carol", Action: "confirm", Detail: "multi\nline \"detail\""},
	}
	for _, tt := range []struct {
		max  int
		want []Entry
	}{
		{max: 0, want: want},
		{max: 10, want: want},
		{max: 3, want: want},
		{max: 2, want: want[1:]},
		{max: 1, want: want[2:]},
	} {
		t.Run(fmt.Sprint("max ", tt.max), func(t *testing.T) {
			got, err := s.AuditLog(tt.max)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("AuditLog(%d) (-want +got):\n%s", tt.max, diff)
			}
		})
	}
}

func TestAuditEmpty(t *testing.T) {
	s, _ := openStore(t)
	got, err := s.AuditLog(10)
	if err != nil || len(got) != 0 {
		t.Errorf("AuditLog on a fresh store = %v, %v; want none", got, err)
	}
}

// A power cut mid-append leaves a torn last line: reading skips it, and the
// next append starts a fresh line instead of gluing onto it.
func TestAuditTornLines(t *testing.T) {
	tests := []struct {
		name string
		tail string // appended to a log of one good entry
	}{
		{name: "torn mid-object", tail: `{"time":"2026-03-01T12:00:09Z","who":"bo`},
		{name: "torn mid-string with newline", tail: `{"time":"2026-03-01T12:00:09Z","who":"bob","act` + "\n"},
		{name: "zero bytes", tail: "\x00\x00\x00\x00"},
		{name: "garbage in the middle", tail: "not json\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, dir := openStore(t)
			if err := s.Audit(Entry{Who: "alice", Action: "commit"}); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(filepath.Join(dir, "audit.log"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(tt.tail); err != nil {
				t.Fatal(err)
			}
			f.Close()

			got, err := s.AuditLog(0)
			if err != nil {
				t.Fatal(err)
			}
			want := []Entry{{Time: at(1), Who: "alice", Action: "commit"}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("AuditLog with torn line (-want +got):\n%s", diff)
			}

			if err := s.Audit(Entry{Who: "bob", Action: "login"}); err != nil {
				t.Fatal(err)
			}
			got, err = s.AuditLog(0)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, Entry{Time: at(2), Who: "bob", Action: "login"})
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("AuditLog after the next append (-want +got):\n%s", diff)
			}
		})
	}
}

// Past 1 MiB the log keeps its newest half, whole lines only.
func TestAuditBound(t *testing.T) {
	s, dir := openStore(t)
	p := filepath.Join(dir, "audit.log")
	var buf bytes.Buffer
	n := 0
	for buf.Len() <= 1<<20-200 {
		b, _ := json.Marshal(Entry{Time: at(0), Who: "seed", Action: "fill", Detail: fmt.Sprintf("%06d %s", n, strings.Repeat("x", 80))})
		buf.Write(append(b, '\n'))
		n++
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// Below the bound: nothing trimmed.
	if err := s.Audit(Entry{Who: "alice", Action: "first"}); err != nil {
		t.Fatal(err)
	}
	all, err := s.AuditLog(0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(all), n+1; got != want {
		t.Fatalf("entries below the bound = %d, want %d", got, want)
	}
	// Cross it.
	for i := range 3 {
		if err := s.Audit(Entry{Who: "alice", Action: "more", Detail: fmt.Sprint(i, strings.Repeat("y", 100))}); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	// Trimmed to at most half a MiB when the bound was crossed, then
	// appended to by the remaining calls.
	if fi.Size() > 1<<19+1024 || fi.Size() < 1<<19-300 {
		t.Errorf("size after trim = %d, want about %d", fi.Size(), 1<<19)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("mode after trim = %v, want %v", got, want)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	for i, l := range lines {
		if !json.Valid(l) {
			t.Fatalf("line %d after trim is not whole JSON: %.60q", i, l)
		}
	}
	got, err := s.AuditLog(0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(got), len(lines); got != want {
		t.Errorf("entries after trim = %d, want %d (lines in file)", got, want)
	}
	if last := got[len(got)-1]; last.Action != "more" || !strings.HasPrefix(last.Detail, "2") {
		t.Errorf("newest entry after trim = %+v, want the last appended", last)
	}
	if len(got) > 0 && got[0].Who != "seed" {
		t.Errorf("oldest kept = %+v, want a seeded entry", got[0])
	}
	if entries := listTree(t, dir); !cmp.Equal([]string{"audit.log", "history"}, entries) {
		t.Errorf("directory after trim = %q, want no temp files", entries)
	}
}
