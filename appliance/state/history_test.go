package state

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sum(text string) string {
	s := sha256.Sum256([]byte(text))
	return hex.EncodeToString(s[:])
}

// at is the fake clock's n-th reading.
func at(n int) time.Time {
	return time.Date(2026, 3, 1, 12, 0, n, 0, time.UTC)
}

func TestEmptyStoreIsBuiltInDefault(t *testing.T) {
	s, _ := openStore(t)
	text, v, warnings, err := s.Current()
	if err != nil {
		t.Fatal(err)
	}
	if text != nil || warnings != nil {
		t.Errorf("Current() text, warnings = %q, %q; want nil, nil", text, warnings)
	}
	if diff := cmp.Diff(Version{N: 0}, v); diff != "" {
		t.Errorf("Current version (-want +got):\n%s", diff)
	}
	vs, err := s.Versions()
	if err != nil || len(vs) != 0 {
		t.Errorf("Versions() = %v, %v; want none", vs, err)
	}
	text, v, err = s.Read(0)
	if err != nil || text != nil || v.N != 0 {
		t.Errorf("Read(0) = %q, %+v, %v; want built-in default", text, v, err)
	}
}

func TestHistory(t *testing.T) {
	s, _ := openStore(t)
	texts := []string{"policy: one\n", "policy: two\n", ""}
	var want []Version
	for i, text := range texts {
		v, err := s.Add([]byte(text), "alice", "change "+text)
		if err != nil {
			t.Fatal(err)
		}
		w := Version{N: i + 1, Who: "alice", Why: "change " + text, When: at(i + 1), SHA256: sum(text)}
		if diff := cmp.Diff(w, v); diff != "" {
			t.Errorf("Add %d (-want +got):\n%s", i+1, diff)
		}
		want = append(want, w)
	}

	// Add does not put a version in force.
	if _, v, _, err := s.Current(); err != nil || v.N != 0 {
		t.Errorf("Current() after Add = %d, %v; want 0 (nothing confirmed)", v.N, err)
	}

	got, err := s.Versions()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Versions (-want +got):\n%s", diff)
	}
	for i, text := range texts {
		gotText, v, err := s.Read(i + 1)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(text, string(gotText)); diff != "" {
			t.Errorf("Read(%d) text (-want +got):\n%s", i+1, diff)
		}
		if diff := cmp.Diff(want[i], v); diff != "" {
			t.Errorf("Read(%d) version (-want +got):\n%s", i+1, diff)
		}
	}

	for _, n := range []int{2, 1, 3, 0} {
		if err := s.SetCurrent(n); err != nil {
			t.Fatal(err)
		}
		text, v, warnings, err := s.Current()
		if err != nil || warnings != nil {
			t.Fatalf("Current() after SetCurrent(%d) = _, _, %q, %v", n, warnings, err)
		}
		wantText, wantV := []byte(nil), Version{}
		if n > 0 {
			wantText, wantV = []byte(texts[n-1]), want[n-1]
		}
		if diff := cmp.Diff(string(wantText), string(text)); diff != "" {
			t.Errorf("Current text after SetCurrent(%d) (-want +got):\n%s", n, diff)
		}
		if diff := cmp.Diff(wantV, v); diff != "" {
			t.Errorf("Current version after SetCurrent(%d) (-want +got):\n%s", n, diff)
		}
	}

	// Reopening finds the same history and pointer.
	if err := s.SetCurrent(2); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.Dir(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, v, _, err := s2.Current(); err != nil || v.N != 2 {
		t.Errorf("Current() after reopen = %d, %v; want 2", v.N, err)
	}
	if v, err := s2.Add([]byte("four"), "bob", "x"); err != nil || v.N != 4 {
		t.Errorf("Add after reopen = %d, %v; want version 4", v.N, err)
	}
}

func TestSetCurrentRefuses(t *testing.T) {
	s, dir := openStore(t)
	if _, err := s.Add([]byte("one"), "a", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add([]byte("two"), "a", "b"); err != nil {
		t.Fatal(err)
	}
	corrupt(t, filepath.Join(dir, "history", "000002.policy"), flipLastByte)
	tests := []struct {
		name string
		n    int
		is   error
	}{
		{name: "missing", n: 7, is: fs.ErrNotExist},
		{name: "corrupt", n: 2, is: ErrCorrupt},
		{name: "negative", n: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.SetCurrent(tt.n)
			if err == nil {
				t.Fatalf("SetCurrent(%d) succeeded", tt.n)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("SetCurrent(%d) = %v, want it to wrap %v", tt.n, err, tt.is)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "current")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("refused SetCurrent wrote the pointer: stat = %v", err)
	}
}

func flipLastByte(b []byte) []byte { b[len(b)-1] ^= 0x20; return b }

func corrupt(t *testing.T, p string, f func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, f(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCurrentFallsBack(t *testing.T) {
	tests := []struct {
		name     string
		damage   map[int]func(p string) error // version -> what happens to its file
		current  int
		wantN    int
		wantWarn []string // substrings, one per warning
	}{
		{
			name:     "flipped byte",
			damage:   map[int]func(string) error{3: rewrite(flipLastByte)},
			current:  3,
			wantN:    2,
			wantWarn: []string{"current policy version 3 is bad", "checksum mismatch", "using version 2"},
		},
		{
			name:     "truncated text",
			damage:   map[int]func(string) error{3: rewrite(func(b []byte) []byte { return b[:len(b)-4] })},
			current:  3,
			wantN:    2,
			wantWarn: []string{"version 3 is bad", "checksum mismatch", "using version 2"},
		},
		{
			name:     "truncated in metadata",
			damage:   map[int]func(string) error{3: rewrite(func(b []byte) []byte { return b[:20] })},
			current:  3,
			wantN:    2,
			wantWarn: []string{"version 3 is bad", "no metadata line", "using version 2"},
		},
		{
			name:     "bad metadata",
			damage:   map[int]func(string) error{3: rewrite(func(b []byte) []byte { return append([]byte("{nope\n"), b...) })},
			current:  3,
			wantN:    2,
			wantWarn: []string{"version 3 is bad", "bad metadata", "using version 2"},
		},
		{
			name:     "deleted",
			damage:   map[int]func(string) error{3: os.Remove},
			current:  3,
			wantN:    2,
			wantWarn: []string{"version 3 is bad", "no such file", "using version 2"},
		},
		{
			name:     "newer versions are not used",
			damage:   map[int]func(string) error{2: os.Remove},
			current:  2,
			wantN:    1,
			wantWarn: []string{"version 2 is bad", "using version 1"},
		},
		{
			name: "skips several bad",
			damage: map[int]func(string) error{
				3: rewrite(flipLastByte),
				2: rewrite(func(b []byte) []byte { return nil }),
			},
			current:  3,
			wantN:    1,
			wantWarn: []string{"version 3 is bad", "version 2 is bad, skipped"},
		},
		{
			name: "nothing good left",
			damage: map[int]func(string) error{
				1: os.Remove,
				2: rewrite(flipLastByte),
			},
			current:  2,
			wantN:    0,
			wantWarn: []string{"version 2 is bad", "built-in default"},
		},
		{
			name:     "corrupt pointer",
			damage:   map[int]func(string) error{0: func(string) error { return nil }},
			current:  -1,
			wantN:    0,
			wantWarn: []string{"pointer", "corrupt", "built-in default"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, dir := openStore(t)
			texts := []string{"", "policy one\n", "policy two\n", "policy three\n", "policy four\n"}
			var want []Version
			for _, text := range texts[1:] {
				v, err := s.Add([]byte(text), "alice", "why")
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, v)
			}
			if tt.current >= 0 {
				if err := s.SetCurrent(tt.current); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(filepath.Join(dir, "current"), []byte("3\x00garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
			for n, f := range tt.damage {
				if n == 0 {
					continue
				}
				if err := f(filepath.Join(dir, "history", filepathVersion(n))); err != nil {
					t.Fatal(err)
				}
			}

			text, v, warnings, err := s.Current()
			if err != nil {
				t.Fatal(err)
			}
			if got, want := v.N, tt.wantN; got != want {
				t.Errorf("Current version = %d, want %d (warnings %q)", got, want, warnings)
			}
			wantText := []byte(nil)
			if tt.wantN > 0 {
				wantText = []byte(texts[tt.wantN])
			}
			if diff := cmp.Diff(string(wantText), string(text)); diff != "" {
				t.Errorf("Current text (-want +got):\n%s", diff)
			}
			all := strings.Join(warnings, "\n")
			for _, w := range tt.wantWarn {
				if !strings.Contains(all, w) {
					t.Errorf("warnings %q do not mention %q", warnings, w)
				}
			}
			if len(warnings) == 0 {
				t.Error("no warnings")
			}

			// Versions lists the bad ones, flagged.
			vs, err := s.Versions()
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vs {
				_, damaged := tt.damage[v.N]
				if got := v.Bad != ""; got != damaged {
					t.Errorf("version %d Bad = %q, want damaged=%v", v.N, v.Bad, damaged)
				}
				if !damaged {
					if diff := cmp.Diff(want[v.N-1], v); diff != "" {
						t.Errorf("good version %d (-want +got):\n%s", v.N, diff)
					}
				}
			}
			// Read reports the damage as an error.
			for n := range tt.damage {
				if n == 0 {
					continue
				}
				if _, _, err := s.Read(n); err == nil {
					t.Errorf("Read(%d) of a damaged version succeeded", n)
				}
			}
		})
	}
}

func filepathVersion(n int) string {
	return filepath.Base((&Store{}).versionPath(n))
}

func rewrite(f func([]byte) []byte) func(string) error {
	return func(p string) error {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(p, f(b), 0o600)
	}
}
