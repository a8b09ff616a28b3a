package state

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"
)

// fakeClock starts at a fixed instant and advances one second per reading.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func openStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "perm")
	s, err := Open(dir, newFakeClock().Now)
	if err != nil {
		t.Fatal(err)
	}
	s.passphraseCost = bcrypt.MinCost // keeps tests fast under -race
	return s, dir
}

// listTree returns the paths of all files and directories under dir,
// relative and sorted.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var got []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		got = append(got, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

func TestOpenCreatesLayout(t *testing.T) {
	_, dir := openStore(t)
	if diff := cmp.Diff([]string{"history"}, listTree(t, dir)); diff != "" {
		t.Errorf("layout (-want +got):\n%s", diff)
	}
}

func TestWriteFile(t *testing.T) {
	tests := []struct {
		name string
		old  []byte // existing contents; nil: no file
		data []byte
		perm os.FileMode
	}{
		{name: "new file", data: []byte("hello\n"), perm: 0o600},
		{name: "replace", old: []byte("old contents, longer than the new"), data: []byte("new"), perm: 0o644},
		{name: "empty", old: []byte("x"), data: []byte{}, perm: 0o600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "f")
			if tt.old != nil {
				if err := os.WriteFile(p, tt.old, 0o666); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteFile(p, tt.data, tt.perm); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(tt.data), string(got)); diff != "" {
				t.Errorf("contents (-want +got):\n%s", diff)
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fi.Mode().Perm(), tt.perm; got != want {
				t.Errorf("mode = %v, want %v", got, want)
			}
			if diff := cmp.Diff([]string{"f"}, listTree(t, dir)); diff != "" {
				t.Errorf("directory after write, want no temp files (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteFileErrorNamesPath(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing", "f")
	err := WriteFile(p, []byte("x"), 0o600)
	if err == nil {
		t.Fatal("WriteFile into a missing directory succeeded")
	}
	if !strings.Contains(err.Error(), p) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error = %v, want one naming %s and wrapping fs.ErrNotExist", err, p)
	}
}

// A crash between creating a temporary file and renaming it leaves the temp
// file behind, half written; the real file keeps its old contents and Open
// removes the temp file.
func TestOpenRemovesHalfWrittenTemps(t *testing.T) {
	s, dir := openStore(t)
	v, err := s.Add([]byte("policy one\n"), "alice", "first")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetCurrent(v.N); err != nil {
		t.Fatal(err)
	}
	crash := []string{
		filepath.Join(dir, ".tmp-current-123456"),
		filepath.Join(dir, ".tmp-authorized_keys-42"),
		filepath.Join(dir, "history", ".tmp-000002.policy-99"),
	}
	for _, p := range crash {
		if err := os.WriteFile(p, []byte(`{"n":2,"who":"bo`), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	s2, err := Open(dir, newFakeClock().Now)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"current", "history", "history/000001.policy"}
	if diff := cmp.Diff(want, listTree(t, dir)); diff != "" {
		t.Errorf("directory after Open (-want +got):\n%s", diff)
	}
	text, got, warnings, err := s2.Current()
	if err != nil || len(warnings) > 0 {
		t.Fatalf("Current() = _, _, %q, %v", warnings, err)
	}
	if diff := cmp.Diff(v, got); diff != "" {
		t.Errorf("Current version (-want +got):\n%s", diff)
	}
	if got, want := string(text), "policy one\n"; got != want {
		t.Errorf("Current text = %q, want %q", got, want)
	}
	vs, err := s2.Versions()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Version{v}, vs); diff != "" {
		t.Errorf("Versions (-want +got):\n%s", diff)
	}
}

func TestFactoryReset(t *testing.T) {
	s, dir := openStore(t)
	v, err := s.Add([]byte("p"), "alice", "x")
	if err != nil {
		t.Fatal(err)
	}
	steps := []error{
		s.SetCurrent(v.N),
		s.Audit(Entry{Who: "alice", Action: "commit"}),
		s.SetPassphrase("open sesame"),
		os.WriteFile(filepath.Join(dir, "stray"), []byte("x"), 0o600),
	}
	if _, err := s.AddKey(testKeyLine(t, 1, "", "alice")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HostKey(); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(steps...); err != nil {
		t.Fatal(err)
	}

	if err := s.FactoryReset(); err != nil {
		t.Fatal(err)
	}

	if diff := cmp.Diff([]string{"history"}, listTree(t, dir)); diff != "" {
		t.Errorf("directory after reset (-want +got):\n%s", diff)
	}
	text, cur, warnings, err := s.Current()
	if err != nil || text != nil || cur.N != 0 || warnings != nil {
		t.Errorf("Current() after reset = %q, %+v, %q, %v; want built-in default", text, cur, warnings, err)
	}
	if ok, set := s.CheckPassphrase("open sesame"); ok || set {
		t.Errorf("CheckPassphrase after reset = %v, %v; want false, false", ok, set)
	}
	keys, err := s.Keys()
	if err != nil || len(keys) != 0 {
		t.Errorf("Keys() after reset = %v, %v; want none", keys, err)
	}
	log, err := s.AuditLog(0)
	if err != nil || len(log) != 0 {
		t.Errorf("AuditLog after reset = %v, %v; want none", log, err)
	}
	// Still usable: numbering starts again at 1.
	v, err = s.Add([]byte("p"), "bob", "again")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := v.N, 1; got != want {
		t.Errorf("first version after reset = %d, want %d", got, want)
	}
}

// Add and Audit from several goroutines keep every entry and hand out
// unique version numbers. Run with -race.
func TestConcurrentAddAudit(t *testing.T) {
	s, _ := openStore(t)
	const workers, each = 8, 10
	var wg sync.WaitGroup
	nums := make([][]int, workers)
	errs := make(chan error, workers*each*2)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				v, err := s.Add([]byte{byte(w), byte(i)}, "w", "concurrent")
				if err != nil {
					errs <- err
					return
				}
				nums[w] = append(nums[w], v.N)
				if err := s.Audit(Entry{Who: "w", Action: "add", Detail: string(rune('a'+w)) + string(rune('a'+i))}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var got []int
	for _, ns := range nums {
		got = append(got, ns...)
	}
	slices.Sort(got)
	var want []int
	for n := 1; n <= workers*each; n++ {
		want = append(want, n)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("version numbers handed out (-want +got):\n%s", diff)
	}
	vs, err := s.Versions()
	if err != nil {
		t.Fatal(err)
	}
	var listed []int
	for _, v := range vs {
		if v.Bad != "" {
			t.Errorf("version %d bad: %s", v.N, v.Bad)
		}
		listed = append(listed, v.N)
	}
	if diff := cmp.Diff(want, listed); diff != "" {
		t.Errorf("Versions (-want +got):\n%s", diff)
	}

	log, err := s.AuditLog(0)
	if err != nil {
		t.Fatal(err)
	}
	var details []string
	for _, e := range log {
		details = append(details, e.Detail)
	}
	slices.Sort(details)
	var wantDetails []string
	for w := range workers {
		for i := range each {
			wantDetails = append(wantDetails, string(rune('a'+w))+string(rune('a'+i)))
		}
	}
	if diff := cmp.Diff(wantDetails, details); diff != "" {
		t.Errorf("audit entries (-want +got):\n%s", diff)
	}
}
