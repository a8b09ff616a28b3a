package kmod

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicefw/sluice/internal/imagetest"
	"github.com/sluicefw/sluice/internal/netnstest"
)

const fakeKver = "6.1.0-test"

// elfModule returns a minimal relocatable ELF64 file whose .modinfo
// section holds the NUL-terminated entries.
func elfModule(entries ...string) []byte {
	var modinfo []byte
	for _, e := range entries {
		modinfo = append(append(modinfo, e...), 0)
	}
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	modinfoOff := ehsize
	shstrOff := modinfoOff + len(modinfo)
	shoff := (shstrOff + len(shstrtab) + 7) &^ 7

	var b bytes.Buffer
	le := binary.LittleEndian
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little endian */, 1 /* version */, 0})
	b.Write(make([]byte, 8))
	for _, v := range []any{
		uint16(1),  // ET_REL
		uint16(62), // EM_X86_64
		uint32(1),  // version
		uint64(0),  // entry
		uint64(0),  // phoff
		uint64(shoff),
		uint32(0), // flags
		uint16(ehsize),
		uint16(0), uint16(0), // phentsize, phnum
		uint16(shentsize),
		uint16(3), // shnum
		uint16(2), // shstrndx
	} {
		binary.Write(&b, le, v)
	}
	b.Write(modinfo)
	b.Write(shstrtab)
	b.Write(make([]byte, shoff-b.Len()))
	section := func(name, typ uint32, off, size int) {
		binary.Write(&b, le, struct {
			Name, Type             uint32
			Flags, Addr, Off, Size uint64
			Link, Info             uint32
			Addralign, Entsize     uint64
		}{name, typ, 2 /* SHF_ALLOC */, 0, uint64(off), uint64(size), 0, 0, 1, 0})
	}
	b.Write(make([]byte, shentsize))                       // the null section
	section(1, 1 /* PROGBITS */, modinfoOff, len(modinfo)) // .modinfo
	section(10, 3 /* STRTAB */, shstrOff, len(shstrtab))   // .shstrtab
	return b.Bytes()
}

// fakeTree writes a kernel tree under a temp dir: modules maps a path
// below kernel/ to its .modinfo entries (a "vermagic=" entry for fakeKver
// is added); builtin lists modules.builtin's lines and builtinModinfo the
// entries of modules.builtin.modinfo.
func fakeTree(t *testing.T, modules map[string][]string, builtin, builtinModinfo []string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "lib", "modules", fakeKver)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for p, entries := range modules {
		file := filepath.Join(dir, "kernel", filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		entries = append(slices.Clone(entries), "vermagic="+fakeKver+" SMP mod_unload modversions ")
		if err := os.WriteFile(file, elfModule(entries...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var bm []byte
	for _, e := range builtinModinfo {
		bm = append(append(bm, e...), 0)
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("modules.builtin", []byte(strings.Join(builtin, "\n")+"\n"))
	write("modules.builtin.modinfo", bm)
	return root
}

func names(mods []Module) []string {
	var s []string
	for _, m := range mods {
		s = append(s, m.Name)
	}
	return s
}

func TestClosureFake(t *testing.T) {
	root := fakeTree(t, map[string][]string{
		"net/a.ko":         {"name=a", "depends=b,c"},
		"net/b.ko":         {"name=b", "depends=builtin_one"},
		"net/c.ko":         {"name=c", "softdep=pre: crc-alias post: p", "depends="},
		"crypto/crc_x.ko":  {"name=crc_x", "alias=crc-alias", "alias=crypto-crc_alias"},
		"crypto/crc_y.ko":  {"name=crc_y", "alias=crc_alias"},
		"net/p.ko":         {"name=p", "depends=c"},
		"net/q.ko":         {"name=q", "softdep=pre: missing_mod also_missing post: nothing"},
		"net/self.ko":      {"name=self", "alias=selfish", "softdep=pre: selfish"},
		"net/cyc1.ko":      {"name=cyc1", "depends=cyc2"},
		"net/cyc2.ko":      {"name=cyc2", "depends=cyc3"},
		"net/cyc3.ko":      {"name=cyc3", "depends=cyc1"},
		"net/s1.ko":        {"name=s1", "softdep=pre: s2"},
		"net/s2.ko":        {"name=s2", "softdep=pre: s1-alias"},
		"net/s1alias.ko":   {"name=s1alias", "alias=s1-alias", "depends=s1"},
		"net/broken.ko":    {"name=broken", "depends=gone"},
		"fs/nls_8859-1.ko": {"alias=nls-latin1"}, // no name=: from the file name
		"drivers/virt.ko":  {"name=virt", "alias=pci:v00001AF4d*sv*sd*bc*sc*i*"},
		"net/twosoft.ko":   {"name=twosoft", "softdep=pre: b", "softdep=pre: p", "softdep=weird"},
		"net/noprefix.ko":  {"name=noprefix", "softdep=b"},
	}, []string{
		"kernel/lib/builtin-one.ko",
		"kernel/crypto/builtin_two.ko",
	}, []string{
		"builtin_two.alias=fs-bi",
		"builtin_two.alias=bi-glob-*",
		"builtin_two.license=GPL",
	})
	ix, err := Load(root, fakeKver)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		wanted  []string
		want    []string
		wantErr string
	}{
		{"depends first", []string{"b"}, []string{"b"}, ""},
		{"softdep pre alias, post", []string{"a"}, []string{"b", "crc_x", "crc_y", "c", "a", "p"}, ""},
		{"post after its module", []string{"c"}, []string{"crc_x", "crc_y", "c", "p"}, ""},
		{"post module wanted first", []string{"p", "c"}, []string{"crc_x", "crc_y", "c", "p"}, ""},
		{"alias with dashes", []string{"crc-alias"}, []string{"crc_x", "crc_y"}, ""},
		{"alias with prefix", []string{"crypto-crc_alias"}, []string{"crc_x"}, ""},
		{"wildcard alias", []string{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"}, []string{"virt"}, ""},
		{"name from file, dashes", []string{"nls_8859-1", "nls-latin1"}, []string{"nls_8859_1"}, ""},
		{"missing softdeps ignored", []string{"q"}, []string{"q"}, ""},
		{"softdep on itself ignored", []string{"self"}, []string{"self"}, ""},
		{"every softdep entry", []string{"twosoft"}, []string{"b", "crc_x", "crc_y", "c", "p", "twosoft"}, ""},
		{"softdep without pre or post", []string{"noprefix"}, []string{"noprefix"}, ""},
		{"builtin name", []string{"builtin_one", "builtin-two"}, nil, ""},
		{"builtin alias", []string{"fs-bi", "bi_glob_x"}, nil, ""},
		{"duplicates once", []string{"b", "a", "b", "a"}, []string{"b", "crc_x", "crc_y", "c", "a", "p"}, ""},
		{"unknown", []string{"b", "nosuch"}, nil, `kmod closure nosuch: no module or alias "nosuch" in kernel 6.1.0-test`},
		{"cycle", []string{"cyc2"}, nil, "dependency cycle cyc2 -> cyc3 -> cyc1 -> cyc2"},
		{"softdep cycle through alias", []string{"s1"}, nil, "dependency cycle s1 -> s2 -> s1alias -> s1"},
		{"missing dependency", []string{"broken"}, nil, "module broken depends on gone, which is neither a module nor built in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ix.Closure(tc.wanted...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Closure(%q) = %v, %v; want error containing %q", tc.wanted, names(got), err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Closure(%q): %v", tc.wanted, err)
			}
			if diff := cmp.Diff(tc.want, names(got)); diff != "" {
				t.Errorf("Closure(%q) (-want +got):\n%s", tc.wanted, diff)
			}
		})
	}

	got, err := ix.Closure("b")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Module{{Name: "b", Path: "lib/modules/" + fakeKver + "/kernel/net/b.ko"}}; !cmp.Equal(want, got) {
		t.Errorf("Closure(b) = %+v, want %+v", got, want)
	}
}

func TestLoadRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		modules map[string][]string
		file    string // an extra file below kernel/
		builtin []string
		want    string
	}{
		{"compressed", map[string][]string{"a.ko": {"name=a"}}, "net/b.ko.xz", nil, "b.ko.xz is compressed"},
		{"zstd", nil, "b.ko.zst", nil, "b.ko.zst is compressed"},
		{"not ELF", map[string][]string{"a.ko": {"name=a"}}, "net/b.ko", nil, "read module"},
		{"duplicate", map[string][]string{"x/a.ko": {"name=a"}, "y/a.ko": {"name=a"}}, "", nil, "two modules named a"},
		{"built in too", map[string][]string{"x/a.ko": {"name=a"}}, "", []string{"kernel/a.ko"}, "also built into the kernel"},
		{"empty", nil, "README", nil, "no modules under"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeTree(t, tc.modules, tc.builtin, nil)
			if tc.file != "" {
				p := filepath.Join(root, "lib", "modules", fakeKver, "kernel", tc.file)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte("not a module"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Load(root, fakeKver)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want an error containing %q", err, tc.want)
			}
		})
	}

	t.Run("other kernel", func(t *testing.T) {
		root := fakeTree(t, nil, nil, nil)
		p := filepath.Join(root, "lib", "modules", fakeKver, "kernel", "a.ko")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, elfModule("name=a", "vermagic=5.10.0-9-amd64 SMP mod_unload"), 0o644)
		_, err := Load(root, fakeKver)
		if want := "built for kernel 5.10.0-9-amd64, not " + fakeKver; err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Load = %v, want an error containing %q", err, want)
		}
	})
}

// applianceModules are the modules sluice's appliance loads.
var applianceModules = []string{
	"nf_tables", "nft_ct", "nft_fib_inet", "nft_nat", "nft_chain_nat", "nft_masq",
	"nft_limit", "nft_log", "nf_log_syslog", "nfnetlink_log", "nf_conntrack_netlink",
	"virtio_net", "virtio_pci", "virtio_blk", "vfat", "nls_cp437", "nls_iso8859_1",
}

// kernelVersion returns the one kernel version under root/lib/modules.
func kernelVersion(t *testing.T, root string) string {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(root, "lib", "modules", "*"))
	if len(dirs) != 1 {
		t.Fatalf("want one kernel under %s/lib/modules, have %q", root, dirs)
	}
	return filepath.Base(dirs[0])
}

// linkTree recreates the modules directory of kver from root under a new
// temp dir with hard links (copies across file systems), for depmod to
// write into.
func linkTree(t *testing.T, root, kver string) string {
	t.Helper()
	dst := t.TempDir()
	src := filepath.Join(root, "lib", "modules", kver)
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		if os.Link(p, to) == nil {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// depmodReference returns, for the tree at root, what depmod and modprobe
// say wanted needs: the set of module paths (relative to root) from
// `modprobe --show-depends`, each module's dependencies from modules.dep,
// and its softdep pre targets resolved through modules.alias.
func depmodReference(t *testing.T, root, kver string, wanted []string) (paths []string, before map[string][]string) {
	t.Helper()
	for _, tool := range []string{"depmod", "modprobe"} {
		_, err := exec.LookPath(tool)
		netnstest.Require(t, err == nil, "needs %s (make deps installs kmod)", tool)
	}
	tmp := linkTree(t, root, kver)
	if out, err := exec.Command("depmod", "-b", tmp, kver).CombinedOutput(); err != nil {
		t.Fatalf("depmod -b %s %s: %v\n%s", tmp, kver, err, out)
	}
	noConfig := t.TempDir() // keep the host's modprobe.d out of it
	set := map[string]bool{}
	for _, w := range wanted {
		out, err := exec.Command("modprobe", "-C", noConfig, "-d", tmp, "-S", kver, "--show-depends", w).CombinedOutput()
		if err != nil {
			t.Fatalf("modprobe --show-depends %s: %v\n%s", w, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) >= 2 && f[0] == "insmod":
				rel, err := filepath.Rel(tmp, f[1])
				if err != nil {
					t.Fatal(err)
				}
				set[filepath.ToSlash(rel)] = true
			case len(f) == 2 && f[0] == "builtin":
			default:
				t.Fatalf("modprobe --show-depends %s: unexpected line %q", w, line)
			}
		}
	}
	for p := range set {
		paths = append(paths, p)
	}
	slices.Sort(paths)

	// modules.dep: "kernel/a.ko: kernel/b.ko kernel/c.ko", paths relative
	// to the modules directory.
	modDir := "lib/modules/" + kver + "/"
	byName := map[string]string{}
	before = map[string][]string{}
	eachLine(t, filepath.Join(tmp, modDir, "modules.dep"), func(f []string) {
		mod := modDir + strings.TrimSuffix(f[0], ":")
		byName[strings.ReplaceAll(strings.TrimSuffix(path.Base(mod), ".ko"), "-", "_")] = mod
		for _, d := range f[1:] {
			before[mod] = append(before[mod], modDir+d)
		}
	})
	aliases := map[string][]string{}
	eachLine(t, filepath.Join(tmp, modDir, "modules.alias"), func(f []string) {
		aliases[strings.ReplaceAll(f[1], "-", "_")] = append(aliases[strings.ReplaceAll(f[1], "-", "_")], f[2])
	})
	eachLine(t, filepath.Join(tmp, modDir, "modules.softdep"), func(f []string) {
		mod := byName[f[1]]
		pre := false
		for _, target := range f[2:] {
			switch target {
			case "pre:":
				pre = true
				continue
			case "post:":
				pre = false
				continue
			}
			if !pre {
				continue
			}
			target = strings.ReplaceAll(target, "-", "_")
			if p, ok := byName[target]; ok {
				before[mod] = append(before[mod], p)
			}
			for _, name := range aliases[target] {
				before[mod] = append(before[mod], byName[name])
			}
		}
	})
	return paths, before
}

// eachLine calls fn with the fields of each non-comment line of a file.
func eachLine(t *testing.T, file string, fn func(fields []string)) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 0 && !strings.HasPrefix(fields[0], "#") {
			fn(fields)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestClosureMatchesDepmod(t *testing.T) {
	root := imagetest.KernelDir(t)
	kver := kernelVersion(t, root)
	ix, err := Load(root, kver)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ix.Closure(applianceModules...)
	if err != nil {
		t.Fatal(err)
	}
	wantPaths, before := depmodReference(t, root, kver, applianceModules)

	var gotPaths []string
	pos := map[string]int{}
	for i, m := range got {
		gotPaths = append(gotPaths, m.Path)
		pos[m.Path] = i
		if _, err := os.Stat(filepath.Join(root, m.Path)); err != nil {
			t.Errorf("module %s: %v", m.Name, err)
		}
	}
	slices.Sort(gotPaths)
	if diff := cmp.Diff(wantPaths, gotPaths); diff != "" {
		t.Errorf("modules to load, against modprobe --show-depends (-want +got):\n%s", diff)
	}
	constraints := 0
	for i, m := range got {
		constraints += len(before[m.Path])
		for _, dep := range before[m.Path] {
			if j, ok := pos[dep]; !ok || j > i {
				t.Errorf("module %s (position %d) needs %s first (position %d, present %v)", m.Path, i, dep, j, ok)
			}
		}
	}
	if constraints == 0 {
		t.Errorf("modules.dep and modules.softdep order none of the modules")
	}
	t.Logf("%d modules for %d wanted, %d ordering constraints hold: %q", len(got), len(applianceModules), constraints, names(got))

	// The same tree and wanted give the same order.
	ix2, err := Load(root, kver)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ix2.Closure(applianceModules...)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, again); diff != "" {
		t.Errorf("second Load and Closure differ (-first +second):\n%s", diff)
	}
}

func TestClosureRealAliases(t *testing.T) {
	root := imagetest.KernelDir(t)
	kver := kernelVersion(t, root)
	ix, err := Load(root, kver)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		wanted  string
		want    []string
		wantErr string
	}{
		{wanted: "fs-vfat", want: []string{"fat", "vfat"}},
		{wanted: "nls_iso8859-1", want: []string{"nls_iso8859_1"}},
		{wanted: "crc32c_generic"}, // built into the cloud kernel
		{wanted: "no_such_module", wantErr: `no module or alias "no_such_module"`},
	} {
		got, err := ix.Closure(tc.wanted)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Closure(%s) = %v, want an error containing %q", tc.wanted, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Closure(%s): %v", tc.wanted, err)
			continue
		}
		if diff := cmp.Diff(tc.want, names(got)); diff != "" {
			t.Errorf("Closure(%s) (-want +got):\n%s", tc.wanted, diff)
		}
	}
}

func BenchmarkLoad(b *testing.B) {
	root := imagetest.KernelDir(b)
	dirs, _ := filepath.Glob(filepath.Join(root, "lib", "modules", "*"))
	if len(dirs) != 1 {
		b.Fatalf("want one kernel, have %q", dirs)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(root, filepath.Base(dirs[0])); err != nil {
			b.Fatal(err)
		}
	}
}
