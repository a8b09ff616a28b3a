package archtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const module = "github.com/sluicefw/sluice"

// moduleRoot returns the directory holding go.mod, found by going up from
// the test's working directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the test's working directory")
		}
		dir = parent
	}
}

// undocumentedPackages returns, relative to root and in walk order, the
// directories whose package has no doc comment in any of its non-test files.
// It skips testdata, hidden and underscore directories, nested modules, and
// directories holding only tests.
func undocumentedPackages(root string) ([]string, error) {
	var missing []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil // files are read per directory, below
		}
		if path != root {
			name := d.Name()
			if name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // another module, with its own tests
			}
		}
		documented, hasPackage, err := packageDocumented(path)
		if err != nil {
			return err
		}
		if hasPackage && !documented {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			missing = append(missing, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look for undocumented packages under %s: %w", root, err)
	}
	return missing, nil
}

// packageDocumented parses the non-test Go files of dir and reports whether
// any of them carries a package doc comment. hasPackage is false when dir
// holds no such file.
func packageDocumented(dir string) (documented, hasPackage bool, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, false, err
	}
	fset := token.NewFileSet()
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") ||
			strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
			continue
		}
		hasPackage = true
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			return false, true, fmt.Errorf("parse package clause: %w", err)
		}
		if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
			documented = true
		}
	}
	return documented, hasPackage, nil
}

func TestPackageDocs(t *testing.T) {
	t.Run("module", func(t *testing.T) {
		root := moduleRoot(t)
		got, err := undocumentedPackages(root)
		if err != nil {
			t.Fatal(err)
		}
		for _, dir := range got {
			t.Errorf("package in %s has no package doc comment; add one sentence such as \"// Package name does one job.\" to one of its files", dir)
		}
	})

	t.Run("catches a missing doc", func(t *testing.T) {
		root := t.TempDir()
		files := map[string]string{
			"go.mod":                         "module example.com/fake\n",
			"documented/a.go":                "// Package documented does one job.\npackage documented\n",
			"documented/b.go":                "package documented\n",
			"second/a.go":                    "package second\n",
			"second/b.go":                    "// Package second is documented in its second file.\npackage second\n",
			"undocumented/a.go":              "package undocumented\n",
			"undocumented/a_test.go":         "// Package undocumented has its doc only in a test file, which godoc ignores.\npackage undocumented\n",
			"detached/a.go":                  "// Copyright notice, not a doc: a blank line follows it.\n\npackage detached\n",
			"cmd/tool/main.go":               "package main\n",
			"onlytests/a_test.go":            "package onlytests\n",
			"testdata/fixture/a.go":          "package fixture\n",
			".hidden/a.go":                   "package hidden\n",
			"nested/go.mod":                  "module example.com/nested\n",
			"nested/a.go":                    "package nested\n",
			"documented/sub/undocumented.go": "package sub\n",
		}
		for name, src := range files {
			path := filepath.Join(root, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := undocumentedPackages(root)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"cmd/tool", "detached", "documented/sub", "undocumented"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("undocumented packages (-want +got):\n%s", diff)
		}
	})
}

// forbiddenInDataplane are the import paths the dataplane must never depend
// on: the management UI and the libraries it is built with (bubbletea,
// bubbles, lipgloss, wish). A path is forbidden when it equals one of these
// or lies below it.
var forbiddenInDataplane = []string{
	module + "/tui",
	"github.com/charmbracelet", // bubbletea, bubbles, lipgloss, wish, ...
	"github.com/charmbracelet/wish",
}

// forbiddenImports returns the paths in deps, in order, that are forbidden
// in the dataplane.
func forbiddenImports(deps []string) []string {
	var bad []string
	for _, dep := range deps {
		for _, f := range forbiddenInDataplane {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				bad = append(bad, dep)
				break
			}
		}
	}
	return bad
}

// dataplanePatterns are the packages kept free of the UI; those whose
// directory does not exist yet are left out.
var dataplanePatterns = []string{"./dataplane/...", "./conntrack/..."}

// listDeps runs go list -deps in root and returns every package the
// patterns depend on, themselves included, with the packages each one
// imports directly.
func listDeps(t *testing.T, root string, patterns []string) (deps []string, imports map[string][]string) {
	t.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("listing dependencies needs the go tool: %v", err)
	}
	// -e lists a package even when it has errors (a work in progress, or an
	// import that does not resolve), so that its imports are still checked.
	args := append([]string{"list", "-e", "-deps", "-test", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}"}, patterns...)
	cmd := exec.Command(gotool, args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	imports = map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		deps = append(deps, f[0])
		imports[f[0]] = f[1:]
	}
	return deps, imports
}

func TestDataplaneDoesNotImportUI(t *testing.T) {
	t.Run("module", func(t *testing.T) {
		root := moduleRoot(t)
		var patterns []string
		for _, p := range dataplanePatterns {
			dir := filepath.Join(root, filepath.FromSlash(strings.TrimSuffix(p, "/...")))
			if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				continue
			} else if err != nil {
				t.Fatal(err)
			}
			patterns = append(patterns, p)
		}
		if len(patterns) == 0 {
			t.Fatalf("none of %q exists under %s; the dataplane moved, update dataplanePatterns", dataplanePatterns, root)
		}
		deps, imports := listDeps(t, root, patterns)
		// Guard against passing on an empty list.
		if !slices.Contains(deps, module+"/dataplane/policy") {
			t.Fatalf("go list -deps %q does not list %s/dataplane/policy; got %q", patterns, module, deps)
		}
		for _, bad := range forbiddenImports(deps) {
			var importers []string
			for _, pkg := range deps {
				if slices.Contains(imports[pkg], bad) {
					importers = append(importers, pkg)
				}
			}
			t.Errorf("%q depend on %s (imported by %s); the dataplane must not depend on the management UI", patterns, bad, strings.Join(importers, ", "))
		}
	})

	t.Run("catches a forbidden import", func(t *testing.T) {
		deps := []string{
			"errors",
			"net/netip",
			module + "/dataplane/policy",
			"github.com/gaissmai/bart",
			module + "/tui",
			module + "/tui/footer",
			module + "/tuition", // only shares a prefix with tui
			"github.com/charmbracelet/bubbletea",
			"github.com/charmbracelet/lipgloss",
			"github.com/charmbracelet/bubbles/list",
			"github.com/charmbracelet/wish/logging",
			"github.com/charmbracelet-fan/other", // not below github.com/charmbracelet
		}
		got := forbiddenImports(deps)
		want := []string{
			module + "/tui",
			module + "/tui/footer",
			"github.com/charmbracelet/bubbletea",
			"github.com/charmbracelet/lipgloss",
			"github.com/charmbracelet/bubbles/list",
			"github.com/charmbracelet/wish/logging",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("forbiddenImports (-want +got):\n%s", diff)
		}
	})

	t.Run("lists the imports of a real package", func(t *testing.T) {
		// The same go list call on the cmd package, which must see its
		// dependency on the policy package: proof that the listing above
		// would see a forbidden import, were there one.
		deps, imports := listDeps(t, moduleRoot(t), []string{"./cmd/sluice"})
		if !slices.Contains(deps, module+"/dataplane/policy") {
			t.Errorf("go list -deps ./cmd/sluice does not list %s/dataplane/policy; got %q", module, deps)
		}
		if got := imports[module+"/cmd/sluice"]; !slices.Contains(got, module+"/dataplane/policy") {
			t.Errorf("imports of cmd/sluice = %q, want them to include %s/dataplane/policy", got, module)
		}
	})
}
