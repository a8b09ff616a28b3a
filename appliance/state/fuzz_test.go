package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// FuzzParseKey checks that no line panics ParseKey, and that an accepted
// line has a known role and parses again, from its Line, to the same key.
func FuzzParseKey(f *testing.F) {
	seeds := []string{
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake alice",
		`role="viewer",role=admin ssh-ed25519 AAAA x`,
		"role=viewer",
		`role="vie wer" x`,
		"# comment",
		"",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		k, err := ParseKey(line)
		if err != nil {
			return
		}
		if k.Role != RoleAdmin && k.Role != RoleViewer {
			t.Fatalf("ParseKey(%q) role = %q", line, k.Role)
		}
		if k.Name == "" {
			t.Fatalf("ParseKey(%q) has no name", line)
		}
		again, err := ParseKey(k.Line)
		if err != nil {
			t.Fatalf("ParseKey(%q) accepted, its Line %q not: %v", line, k.Line, err)
		}
		if !bytes.Equal(again.Key.Marshal(), k.Key.Marshal()) || again.Role != k.Role || again.Name != k.Name {
			t.Fatalf("ParseKey(%q) = %+v, again from Line = %+v", line, k, again)
		}
	})
}

// FuzzParseVersion checks that no version file panics parseVersion, and
// that accepted text always matches the checksum in its metadata.
func FuzzParseVersion(f *testing.F) {
	f.Add(3, []byte(`{"n":3,"who":"a","why":"b","when":"2026-03-01T12:00:00Z","sha256":"`+hex.EncodeToString(sha256.New().Sum(nil))+`"}`+"\n"))
	f.Add(1, []byte("{\"n\":1}\nx"))
	f.Add(1, []byte(""))
	f.Fuzz(func(t *testing.T, n int, data []byte) {
		text, v, err := parseVersion(n, data)
		if err != nil {
			return
		}
		sum := sha256.Sum256(text)
		if got := hex.EncodeToString(sum[:]); got != v.SHA256 || v.N != n {
			t.Fatalf("parseVersion(%d, %q) accepted: N %d, sha256 %s, text has %s", n, data, v.N, v.SHA256, got)
		}
	})
}
