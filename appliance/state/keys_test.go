package state

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

// testKey returns a deterministic ed25519 public key chosen by seed.
func testKey(t *testing.T, seed byte) ssh.PublicKey {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	pk, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(s).Public())
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// testKeyLine returns an authorized_keys line for key seed with the given
// options (may be empty) and comment.
func testKeyLine(t *testing.T, seed byte, options, comment string) string {
	t.Helper()
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(testKey(t, seed))))
	if options != "" {
		line = options + " " + line
	}
	if comment != "" {
		line += " " + comment
	}
	return line
}

// keyView is what tests compare of a Key.
type keyView struct {
	Name, Role, Fingerprint string
}

func view(k Key) keyView {
	return keyView{Name: k.Name, Role: k.Role, Fingerprint: ssh.FingerprintSHA256(k.Key)}
}

func TestParseKey(t *testing.T) {
	fp := func(seed byte) string { return ssh.FingerprintSHA256(testKey(t, seed)) }
	tests := []struct {
		name    string
		line    string
		want    keyView
		wantErr string
	}{
		{name: "no role is admin", line: testKeyLine(t, 1, "", "alice"), want: keyView{"alice", "admin", fp(1)}},
		{name: "viewer", line: testKeyLine(t, 2, "role=viewer", "bob"), want: keyView{"bob", "viewer", fp(2)}},
		{name: "explicit admin", line: testKeyLine(t, 3, "role=admin", "carol"), want: keyView{"carol", "admin", fp(3)}},
		{name: "quoted role", line: testKeyLine(t, 4, `role="viewer"`, "dave"), want: keyView{"dave", "viewer", fp(4)}},
		{name: "comment with spaces", line: testKeyLine(t, 5, "", "erin laptop"), want: keyView{"erin laptop", "admin", fp(5)}},
		{name: "no comment: fingerprint", line: testKeyLine(t, 6, "", ""), want: keyView{fp(6), "admin", fp(6)}},
		{name: "surrounding space", line: "  " + testKeyLine(t, 7, "", "frank") + "\n", want: keyView{"frank", "admin", fp(7)}},
		{name: "garbage", line: "hello world", wantErr: "not an OpenSSH public key line"},
		{name: "bad base64", line: "ssh-ed25519 AAAA!!!! x", wantErr: "not an OpenSSH public key line"},
		{name: "empty", line: "", wantErr: "empty line"},
		{name: "comment line", line: "# alice", wantErr: "empty line"},
		{name: "unknown role", line: testKeyLine(t, 1, "role=root", "x"), wantErr: `unknown role "root"`},
		{name: "other option", line: testKeyLine(t, 1, `from="10.0.0.1"`, "x"), wantErr: "unsupported option"},
		{name: "two lines", line: testKeyLine(t, 1, "", "a") + "\n" + testKeyLine(t, 2, "", "b"), wantErr: "more than one line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKey(tt.line)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseKey error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, view(k)); diff != "" {
				t.Errorf("ParseKey (-want +got):\n%s", diff)
			}
			if got, want := k.Line, strings.TrimSpace(tt.line); got != want {
				t.Errorf("Line = %q, want %q", got, want)
			}
		})
	}
}

func TestAddKeyAndAuthorize(t *testing.T) {
	s, dir := openStore(t)
	steps := []struct {
		line    string
		wantErr string
	}{
		{line: testKeyLine(t, 1, "", "alice")},
		{line: testKeyLine(t, 2, "role=viewer", "bob")},
		{line: "ssh-rsa garbage", wantErr: "not an OpenSSH public key line"},
		{line: testKeyLine(t, 3, "role=superuser", "eve"), wantErr: "unknown role"},
		{line: testKeyLine(t, 1, "role=viewer", "alice again"), wantErr: `duplicate: the key ` + ssh.FingerprintSHA256(testKey(t, 1)) + ` is already authorized as "alice"`},
		{line: testKeyLine(t, 3, "", "")},
	}
	for i, st := range steps {
		_, err := s.AddKey(st.line)
		if st.wantErr == "" && err != nil {
			t.Fatalf("step %d: AddKey: %v", i, err)
		}
		if st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)) {
			t.Fatalf("step %d: AddKey error = %v, want one containing %q", i, err, st.wantErr)
		}
	}

	keys, err := s.Keys()
	if err != nil {
		t.Fatal(err)
	}
	var got []keyView
	for _, k := range keys {
		got = append(got, view(k))
	}
	fp := func(seed byte) string { return ssh.FingerprintSHA256(testKey(t, seed)) }
	want := []keyView{{"alice", "admin", fp(1)}, {"bob", "viewer", fp(2)}, {fp(3), "admin", fp(3)}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Keys (-want +got):\n%s", diff)
	}
	file, err := os.ReadFile(filepath.Join(dir, "authorized_keys"))
	if err != nil {
		t.Fatal(err)
	}
	wantFile := testKeyLine(t, 1, "", "alice") + "\n" + testKeyLine(t, 2, "role=viewer", "bob") + "\n" + testKeyLine(t, 3, "", "") + "\n"
	if diff := cmp.Diff(wantFile, string(file)); diff != "" {
		t.Errorf("authorized_keys (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		seed   byte
		wantOK bool
		want   keyView
	}{
		{seed: 1, wantOK: true, want: keyView{"alice", "admin", fp(1)}},
		{seed: 2, wantOK: true, want: keyView{"bob", "viewer", fp(2)}},
		{seed: 9, wantOK: false},
	} {
		t.Run(fmt.Sprintf("authorize %d", tt.seed), func(t *testing.T) {
			k, ok := s.Authorize(testKey(t, tt.seed))
			if ok != tt.wantOK {
				t.Fatalf("Authorize ok = %v, want %v", ok, tt.wantOK)
			}
			if ok {
				if diff := cmp.Diff(tt.want, view(k)); diff != "" {
					t.Errorf("Authorize (-want +got):\n%s", diff)
				}
			}
		})
	}
	if _, ok := s.Authorize(nil); ok {
		t.Error("Authorize(nil) = true")
	}
}

// A bad line written by hand into authorized_keys is reported but locks no
// one out, and AddKey keeps it.
func TestKeysFileWithBadLine(t *testing.T) {
	s, dir := openStore(t)
	p := filepath.Join(dir, "authorized_keys")
	content := "# keys\n\n" + testKeyLine(t, 1, "", "alice") + "\nnot a key\n" + testKeyLine(t, 2, "role=god", "bob") + "\n" + testKeyLine(t, 3, "role=viewer", "carol")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := s.Keys()
	if err == nil || !strings.Contains(err.Error(), p+":4:") || !strings.Contains(err.Error(), p+":5:") {
		t.Errorf("Keys error = %v, want one naming lines 4 and 5 of %s", err, p)
	}
	var names []string
	for _, k := range keys {
		names = append(names, k.Name)
	}
	if diff := cmp.Diff([]string{"alice", "carol"}, names); diff != "" {
		t.Errorf("Keys names (-want +got):\n%s", diff)
	}
	if _, ok := s.Authorize(testKey(t, 2)); ok {
		t.Error("a key on a bad line was authorized")
	}
	if k, ok := s.Authorize(testKey(t, 3)); !ok || k.Role != RoleViewer {
		t.Errorf("Authorize(carol) = %+v, %v; want viewer", view(k), ok)
	}
	if _, err := s.AddKey(testKeyLine(t, 4, "", "dave")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(content+"\n"+testKeyLine(t, 4, "", "dave")+"\n", string(got)); diff != "" {
		t.Errorf("authorized_keys after AddKey (-want +got):\n%s", diff)
	}
}
