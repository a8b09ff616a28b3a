// Package kmod resolves the kernel modules sluice's initramfs must carry, and their load order, from an extracted kernel tree.
//
// It reads each module's .modinfo section itself, so an image can be built
// from a kernel package as Debian ships it, without depmod's modules.dep.
package kmod

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Module is a loadable kernel module.
type Module struct {
	Name string // as the kernel names it: "nf_tables", "virtio_net"
	// Path is the module's file relative to the tree's root, with forward
	// slashes: "lib/modules/KVER/kernel/net/netfilter/nf_tables.ko".
	Path string
}

// info is what a module's .modinfo says about its relations.
type info struct {
	Module
	depends []string // module names
	pre     []string // softdep targets to load before it: names or aliases
	post    []string // softdep targets to load after it
	aliases []string
}

// Index holds the modules of one kernel tree and how they relate. It is
// immutable once made and safe for concurrent use.
type Index struct {
	kver    string
	modules map[string]*info // by normalized name

	// builtin holds the normalized names of modules built into the kernel.
	builtin map[string]bool

	// Aliases: literal ones by normalized alias, patterns in the order of
	// the modules' paths.
	aliases        map[string][]string // alias to module names
	patterns       []pattern
	builtinAliases map[string]bool
	builtinPattern []string
}

// pattern is an alias with shell wildcards, like "pci:v00001AF4d*".
type pattern struct {
	glob, module string
}

// Load reads the modules of kernel version kver in the tree at root:
// every root/lib/modules/kver/kernel/**/*.ko, and modules.builtin and
// modules.builtin.modinfo for those built into the kernel. Compressed
// modules (.ko.xz, .ko.zst, .ko.gz) are an error: sluice's kernels ship
// them uncompressed and the kernel it boots would need to decompress them.
func Load(root, kver string) (*Index, error) {
	dir := filepath.Join(root, "lib", "modules", kver)
	var mods []*info
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		switch {
		case d.IsDir():
			return nil // descend
		case strings.HasSuffix(name, ".ko"):
		case strings.HasSuffix(name, ".ko.xz"), strings.HasSuffix(name, ".ko.zst"), strings.HasSuffix(name, ".ko.gz"):
			return fmt.Errorf("module %s is compressed; only uncompressed .ko files are supported", p)
		default:
			return nil // not a module
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		m, err := readModinfo(p, kver)
		if err != nil {
			return err
		}
		m.Path = filepath.ToSlash(rel)
		if m.Name == "" {
			m.Name = normalize(strings.TrimSuffix(name, ".ko"))
		}
		mods = append(mods, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kmod load %s %s: %w", root, kver, err)
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("kmod load %s %s: no modules under %s", root, kver, filepath.Join(dir, "kernel"))
	}
	builtin, err := readBuiltin(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return nil, fmt.Errorf("kmod load %s %s: %w", root, kver, err)
	}
	builtinAliases, err := readBuiltinModinfo(filepath.Join(dir, "modules.builtin.modinfo"))
	if err != nil {
		return nil, fmt.Errorf("kmod load %s %s: %w", root, kver, err)
	}
	ix, err := newIndex(kver, mods, builtin, builtinAliases)
	if err != nil {
		return nil, fmt.Errorf("kmod load %s %s: %w", root, kver, err)
	}
	return ix, nil
}

// newIndex indexes mods, the modules built into the kernel (by name) and
// the aliases those provide.
func newIndex(kver string, mods []*info, builtin, builtinAliases []string) (*Index, error) {
	ix := &Index{
		kver:           kver,
		modules:        map[string]*info{},
		builtin:        map[string]bool{},
		aliases:        map[string][]string{},
		builtinAliases: map[string]bool{},
	}
	for _, name := range builtin {
		ix.builtin[normalize(name)] = true
	}
	slices.SortFunc(mods, func(a, b *info) int { return strings.Compare(a.Path, b.Path) })
	for _, m := range mods {
		m.Name = normalize(m.Name)
		if prev, ok := ix.modules[m.Name]; ok {
			return nil, fmt.Errorf("two modules named %s: %s and %s", m.Name, prev.Path, m.Path)
		}
		if ix.builtin[m.Name] {
			return nil, fmt.Errorf("module %s (%s) is also built into the kernel", m.Name, m.Path)
		}
		ix.modules[m.Name] = m
		for _, a := range m.aliases {
			a = normalize(a)
			if isGlob(a) {
				ix.patterns = append(ix.patterns, pattern{a, m.Name})
			} else if !slices.Contains(ix.aliases[a], m.Name) {
				ix.aliases[a] = append(ix.aliases[a], m.Name)
			}
		}
	}
	for _, a := range builtinAliases {
		a = normalize(a)
		if isGlob(a) {
			ix.builtinPattern = append(ix.builtinPattern, a)
		} else {
			ix.builtinAliases[a] = true
		}
	}
	return ix, nil
}

// Builtin reports whether module name is built into the kernel.
func (ix *Index) Builtin(name string) bool { return ix.builtin[normalize(name)] }

// Closure returns the modules to load, in order, so that the kernel has
// every module named in wanted: each is a module name ("nf_tables") or an
// alias ("crc32c", "fs-vfat"), and '-' and '_' are the same in both.
//
// Names are looked up as modprobe does: a module of that name, else every
// module with a matching alias, else a module or alias built into the
// kernel, which needs nothing loaded. The result holds the modules of
// wanted and, recursively, their dependencies and soft dependencies; each
// module comes after its dependencies and its softdep "pre:" modules, and
// "post:" modules come after the module that names them. Soft dependencies
// that name nothing are ignored, as modprobe ignores them; unlike modprobe,
// which reads only the first, every softdep entry of a module counts.
//
// The order is the same for the same tree and wanted. A name that is
// neither a module nor an alias, a dependency on a missing module and a
// cycle are errors.
func (ix *Index) Closure(wanted ...string) ([]Module, error) {
	c := closure{ix: ix, state: map[string]int{}}
	for _, w := range wanted {
		names, err := ix.resolve(w)
		if err != nil {
			return nil, fmt.Errorf("kmod closure %s: %w", w, err)
		}
		for _, n := range names {
			if err := c.visit(n); err != nil {
				return nil, fmt.Errorf("kmod closure %s: %w", w, err)
			}
		}
		// Post softdeps of this module and everything it pulled in, then of
		// those, until none are left.
		for len(c.post) > 0 {
			n := c.post[0]
			c.post = c.post[1:]
			if err := c.visit(n); err != nil {
				return nil, fmt.Errorf("kmod closure %s: %w", w, err)
			}
		}
	}
	return c.order, nil
}

// The states of a module during a closure.
const (
	unseen = iota
	visiting
	done
)

// closure is one depth-first walk of the dependency graph.
type closure struct {
	ix    *Index
	state map[string]int
	stack []string // modules being visited, for cycle errors
	order []Module
	post  []string // post softdep modules still to visit
}

// visit appends module name to the order after its pre softdeps and
// dependencies, and queues its post softdeps.
func (c *closure) visit(name string) error {
	switch c.state[name] {
	case done:
		return nil // already in the order
	case visiting:
		i := slices.Index(c.stack, name)
		return fmt.Errorf("dependency cycle %s", strings.Join(append(slices.Clone(c.stack[i:]), name), " -> "))
	}
	m := c.ix.modules[name]
	c.state[name] = visiting
	c.stack = append(c.stack, name)
	for _, target := range m.pre {
		for _, n := range c.ix.resolveSoft(target) {
			if n == name {
				continue // a module cannot come before itself
			}
			if err := c.visit(n); err != nil {
				return err
			}
		}
	}
	for _, dep := range m.depends {
		dep = normalize(dep)
		if c.ix.builtin[dep] {
			continue // always present
		}
		if _, ok := c.ix.modules[dep]; !ok {
			return fmt.Errorf("module %s depends on %s, which is neither a module nor built in", name, dep)
		}
		if err := c.visit(dep); err != nil {
			return err
		}
	}
	c.stack = c.stack[:len(c.stack)-1]
	c.state[name] = done
	c.order = append(c.order, m.Module)
	for _, target := range m.post {
		c.post = append(c.post, c.ix.resolveSoft(target)...)
	}
	return nil
}

// resolve returns the modules that provide name; none when it is built
// into the kernel.
func (ix *Index) resolve(name string) ([]string, error) {
	n := normalize(name)
	if _, ok := ix.modules[n]; ok {
		return []string{n}, nil
	}
	if mods := ix.aliasModules(n); len(mods) > 0 {
		return mods, nil
	}
	if ix.builtin[n] || ix.builtinAliases[n] {
		return nil, nil
	}
	for _, p := range ix.builtinPattern {
		if match(p, n) {
			return nil, nil
		}
	}
	return nil, fmt.Errorf("no module or alias %q in kernel %s", name, ix.kver)
}

// resolveSoft is resolve for a softdep target, which may name nothing.
func (ix *Index) resolveSoft(name string) []string {
	mods, err := ix.resolve(name)
	if err != nil {
		return nil // modprobe ignores a softdep it cannot find
	}
	return mods
}

// aliasModules returns the names of the modules with an alias matching the
// normalized name n, sorted.
func (ix *Index) aliasModules(n string) []string {
	mods := slices.Clone(ix.aliases[n])
	for _, p := range ix.patterns {
		if match(p.glob, n) && !slices.Contains(mods, p.module) {
			mods = append(mods, p.module)
		}
	}
	slices.Sort(mods)
	return mods
}

// normalize spells a module name or alias as the kernel and kmod compare
// them: '-' becomes '_', except inside a bracket expression of a pattern.
func normalize(s string) string {
	if !strings.Contains(s, "-") {
		return s
	}
	b := []byte(s)
	inBracket := false
	for i, c := range b {
		switch {
		case c == '[':
			inBracket = true
		case c == ']':
			inBracket = false
		case c == '-' && !inBracket:
			b[i] = '_'
		}
	}
	return string(b)
}

func isGlob(s string) bool { return strings.ContainsAny(s, "*?[") }

// match reports whether name matches the shell pattern glob. It is
// path.Match, whose '*' does not cross a '/', which no module alias
// relies on; a malformed pattern matches nothing.
func match(glob, name string) bool {
	ok, err := path.Match(glob, name)
	return err == nil && ok
}

// readModinfo reads the .modinfo section of the module file p, checking
// that it was built for kernel kver.
func readModinfo(p, kver string) (*info, error) {
	f, err := elf.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", p, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("read module %s: no .modinfo section", p)
	}
	data, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("read module %s .modinfo: %w", p, err)
	}
	m := &info{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		key, value, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue // padding between entries
		}
		switch key {
		case "name":
			m.Name = value
		case "depends":
			for _, d := range strings.Split(value, ",") {
				if d != "" {
					m.depends = append(m.depends, d)
				}
			}
		case "softdep":
			pre, post := parseSoftdep(value)
			m.pre = append(m.pre, pre...)
			m.post = append(m.post, post...)
		case "alias":
			m.aliases = append(m.aliases, value)
		case "vermagic":
			if v, _, _ := strings.Cut(value, " "); v != kver {
				return nil, fmt.Errorf("read module %s: built for kernel %s, not %s", p, v, kver)
			}
		}
	}
	return m, nil
}

// parseSoftdep splits a softdep value, "pre: a b post: c", into its pre
// and post module names. Names before any "pre:" or "post:" are ignored, as
// modprobe ignores them.
func parseSoftdep(s string) (pre, post []string) {
	var into *[]string
	for _, f := range strings.Fields(s) {
		switch f {
		case "pre:":
			into = &pre
		case "post:":
			into = &post
		default:
			if into != nil {
				*into = append(*into, f)
			}
		}
	}
	return pre, post
}

// readBuiltin reads modules.builtin: the paths, relative to the modules
// directory, of the modules built into the kernel. It returns their names.
func readBuiltin(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		names = append(names, strings.TrimSuffix(path.Base(line), ".ko"))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return names, nil
}

// readBuiltinModinfo reads the aliases of built-in modules from
// modules.builtin.modinfo, whose NUL-separated entries read
// "module.key=value".
func readBuiltinModinfo(p string) ([]string, error) {
	data, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return nil, nil // kernels before 5.2 have no modules.builtin.modinfo
	}
	if err != nil {
		return nil, err
	}
	var aliases []string
	for _, entry := range bytes.Split(data, []byte{0}) {
		key, value, ok := strings.Cut(string(entry), "=")
		if !ok {
			continue
		}
		if _, field, ok := strings.Cut(key, "."); ok && field == "alias" {
			aliases = append(aliases, value)
		}
	}
	return aliases, nil
}
