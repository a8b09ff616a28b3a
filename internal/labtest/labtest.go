// Package labtest gives tests a lab whose router runs a sluice policy: the
// namespaces, a descriptor of the router's namespace, and a connection to
// its nf_tables.
package labtest

import (
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicefw/sluice/dataplane/nft"
	"github.com/sluicefw/sluice/dataplane/policy"
	"github.com/sluicefw/sluice/internal/lab"
	"github.com/sluicefw/sluice/internal/netnstest"
)

var seq atomic.Int64

// Lab is a lab whose router applies policies.
type Lab struct {
	*lab.Lab
	NSFd int       // the router's namespace, open until the test ends
	NFT  *nft.Conn // the router's nf_tables
}

// New brings up a lab (removed when the test ends) with the lab policy
// applied on its router. It needs root, and skips without it (fails under
// CI=true).
func New(t testing.TB) *Lab {
	t.Helper()
	netnstest.RequireRoot(t)
	l := lab.New(netnstest.Name("lab"))
	if err := l.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Down)
	f, err := os.Open("/run/netns/" + l.Router)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	conn, err := nft.Dial(int(f.Fd()), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	r := &Lab{Lab: l, NSFd: int(f.Fd()), NFT: conn}
	r.Apply(t, Compile(t, "lab.yaml", lab.Policy()))
	return r
}

// Apply puts prog's ruleset on the router.
func (r *Lab) Apply(t testing.TB, prog *policy.Program) {
	t.Helper()
	rs, err := nft.Build(prog, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := nft.Apply(r.NFT, rs); err != nil {
		t.Fatal(err)
	}
}

// Compile parses and compiles a policy, failing the test on any error.
func Compile(t testing.TB, name string, src []byte) *policy.Program {
	t.Helper()
	pol, diags := policy.Parse(name, src)
	if err := diags.Err(); err != nil {
		t.Fatalf("parse %s:\n%v", name, err)
	}
	prog, err := policy.Compile(pol)
	if err != nil {
		t.Fatalf("compile %s: %v", name, err)
	}
	return prog
}
