package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	gossh "golang.org/x/crypto/ssh"

	"github.com/sluicefw/sluice/appliance/state"
)

func runKey(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("key", "add|list --state DIR [--role admin|viewer] [FILE]", `Manage the SSH keys that may log in to "sluice run --ssh", in the state
directory's authorized_keys. "add" adds every key in FILE (an OpenSSH
public key file such as ~/.ssh/id_ed25519.pub, or "-" for stdin) with the
role given; the key's comment names it in the audit log. "list" prints the
keys with their roles and fingerprints.

An admin may commit policies, confirm them and kill connections; a viewer
sees every page and changes nothing.`, stderr)
	dir := fs.String("state", "", "the state directory (required)")
	role := fs.String("role", state.RoleAdmin, "admin or viewer")
	action := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		action, args = args[0], args[1:]
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *dir == "" || (action != "add" && action != "list") || (action == "list" && fs.NArg() > 0) || fs.NArg() > 1 {
		fs.Usage()
		return 2
	}
	store, err := state.Open(*dir, nil)
	if err != nil {
		fmt.Fprintf(stderr, "sluice key: %v\n", err)
		return 1
	}
	if action == "list" {
		keys, err := store.Keys()
		for _, k := range keys {
			fmt.Fprintf(stdout, "%s\t%s\t%s\n", k.Role, k.Name, gossh.FingerprintSHA256(k.Key))
		}
		if err != nil {
			fmt.Fprintf(stderr, "sluice key: %v\n", err)
			return 1
		}
		return 0
	}
	if *role != state.RoleAdmin && *role != state.RoleViewer {
		fmt.Fprintf(stderr, "sluice key: --role %q: want admin or viewer\n", *role)
		return 2
	}
	in := stdin
	name := "<stdin>"
	if f := fs.Arg(0); f != "" && f != "-" {
		file, err := os.Open(f)
		if err != nil {
			fmt.Fprintf(stderr, "sluice key: %v\n", err)
			return 1
		}
		defer file.Close()
		in, name = file, f
	}
	added, code := 0, 0
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(line, "role=") {
			line = "role=" + *role + " " + line
		}
		k, err := store.AddKey(line)
		if err != nil {
			fmt.Fprintf(stderr, "%s:%d: %v\n", name, n, err)
			code = 1
			continue
		}
		added++
		fmt.Fprintf(stdout, "added %s key %s (%s)\n", k.Role, k.Name, gossh.FingerprintSHA256(k.Key))
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "sluice key: read %s: %v\n", name, err)
		return 1
	}
	if added == 0 && code == 0 {
		fmt.Fprintf(stderr, "sluice key: no key in %s\n", name)
		return 1
	}
	return code
}
