package cpio

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicefw/sluice/internal/netnstest"
)

var update = flag.Bool("update", false, "re-record the golden archive in testdata/")

// entry is one archive member as a test writes it and reads it back.
type entry struct {
	Name         string
	Mode         fs.FileMode // type and permission bits, as os.Lstat reports them
	Data         string      // file contents
	Target       string      // symlink target
	Major, Minor uint32      // device numbers
}

// tree is an initramfs-shaped set of entries, parents first.
var tree = []entry{
	{Name: "dev", Mode: fs.ModeDir | 0o755},
	{Name: "dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1},
	{Name: "dev/null", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o666, Major: 1, Minor: 3},
	{Name: "etc", Mode: fs.ModeDir | 0o755},
	{Name: "etc/hostname", Mode: 0o644, Data: "sluice\n"},
	{Name: "etc/empty", Mode: 0o600},
	{Name: "init", Mode: 0o755, Data: "\x7fELF not really, but 23"},
	{Name: "lib", Mode: fs.ModeDir | 0o755},
	{Name: "lib/modules", Mode: fs.ModeDir | 0o700},
	{Name: "lib/modules/six", Mode: 0o644, Data: "123456"},
	{Name: "lib64", Mode: fs.ModeSymlink | 0o777, Target: "lib"},
	{Name: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
	{Name: "usr", Mode: fs.ModeDir | 0o755},
	{Name: "usr/bin", Mode: fs.ModeDir | 0o755},
	{Name: "usr/bin/suid", Mode: fs.ModeSetuid | 0o755, Data: "x"},
	{Name: "usr/bin/init", Mode: fs.ModeSymlink | 0o777, Target: "../../init"},
}

// add writes e with the Writer method for its type.
func add(w *Writer, e entry) error {
	switch {
	case e.Mode.IsDir():
		return w.Dir(e.Name, e.Mode)
	case e.Mode&fs.ModeSymlink != 0:
		return w.Symlink(e.Name, e.Target)
	case e.Mode&fs.ModeCharDevice != 0:
		return w.CharDev(e.Name, e.Mode.Perm(), e.Major, e.Minor)
	default:
		return w.File(e.Name, e.Mode, []byte(e.Data))
	}
}

// archive returns the newc archive of entries.
func archive(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, e := range entries {
		if err := add(w, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func requireCpio(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("cpio")
	netnstest.Require(t, err == nil, "needs the cpio tool (make deps installs it)")
}

// run runs name with args in dir, feeding stdin, and returns its stdout.
func run(t *testing.T, dir string, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// listed is one line of `cpio -itvn`.
type listed struct {
	Mode  string
	Nlink string
	Owner string
	Size  string // size, or "major,minor" for devices
	Date  string
	Name  string
}

func parseListing(t *testing.T, out string) []listed {
	t.Helper()
	var got []listed
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		var size string
		if strings.HasSuffix(f[4], ",") { // "5,   1"
			size = f[4] + f[5]
			f = append(f[:5], f[6:]...)
		} else {
			size = f[4]
		}
		if len(f) < 9 {
			t.Fatalf("cpio -itvn line %q: too few fields", line)
		}
		got = append(got, listed{
			Mode:  f[0],
			Nlink: f[1],
			Owner: f[2] + ":" + f[3],
			Size:  size,
			Date:  strings.Join(f[5:8], " "),
			Name:  strings.Join(f[8:], " "),
		})
	}
	return got
}

// wantListing is what `cpio -itvn` prints for entries.
func wantListing(entries []entry) []listed {
	var want []listed
	for _, e := range entries {
		l := listed{
			Mode:  lsMode(e.Mode),
			Nlink: "1",
			Owner: "0:0",
			Size:  strconv.Itoa(len(e.Data)),
			Date:  "Jan 1 1970",
			Name:  e.Name,
		}
		switch {
		case e.Mode.IsDir():
			l.Nlink = "2"
		case e.Mode&fs.ModeSymlink != 0:
			l.Size = strconv.Itoa(len(e.Target))
			l.Name = e.Name + " -> " + e.Target
		case e.Mode&fs.ModeCharDevice != 0:
			l.Size = fmt.Sprintf("%d,%d", e.Major, e.Minor)
		}
		want = append(want, l)
	}
	return want
}

// lsMode spells a mode as ls -l does.
func lsMode(m fs.FileMode) string {
	b := []byte("-rwxrwxrwx")
	switch {
	case m.IsDir():
		b[0] = 'd'
	case m&fs.ModeSymlink != 0:
		b[0] = 'l'
	case m&fs.ModeCharDevice != 0:
		b[0] = 'c'
	}
	for i := 0; i < 9; i++ {
		if m&(1<<(8-i)) == 0 {
			b[i+1] = '-'
		}
	}
	set := func(i int, on bool, lower, upper byte) {
		if !on {
			return
		}
		if b[i] == '-' {
			b[i] = upper
		} else {
			b[i] = lower
		}
	}
	set(3, m&fs.ModeSetuid != 0, 's', 'S')
	set(6, m&fs.ModeSetgid != 0, 's', 'S')
	set(9, m&fs.ModeSticky != 0, 't', 'T')
	return string(b)
}

func TestListedByCpio(t *testing.T) {
	requireCpio(t)
	got := parseListing(t, run(t, t.TempDir(), archive(t, tree), "cpio", "-itvn", "--quiet"))
	if diff := cmp.Diff(wantListing(tree), got); diff != "" {
		t.Errorf("cpio -itvn (-want +got):\n%s", diff)
	}
}

func TestExtractedByCpio(t *testing.T) {
	requireCpio(t)
	dir := t.TempDir()
	args := []string{"-idm", "--quiet", "--no-absolute-filenames"}
	root := os.Geteuid() == 0
	if !root {
		args = append(args, "-f", "dev/*") // only root may make device nodes
	}
	run(t, dir, archive(t, tree), "cpio", args...)

	for _, e := range tree {
		if !root && strings.HasPrefix(e.Name, "dev/") {
			continue
		}
		p := filepath.Join(dir, e.Name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("extracted %s: %v", e.Name, err)
			continue
		}
		if got, want := fi.Mode(), e.Mode; got != want {
			t.Errorf("extracted %s: mode %v, want %v", e.Name, got, want)
		}
		switch {
		case e.Mode.IsDir():
		case e.Mode&fs.ModeSymlink != 0:
			got, err := os.Readlink(p)
			if err != nil || got != e.Target {
				t.Errorf("extracted %s: link to %q (%v), want %q", e.Name, got, err, e.Target)
			}
		case e.Mode&fs.ModeCharDevice != 0:
			rdev := uint64(fi.Sys().(*syscall.Stat_t).Rdev)
			major := uint32((rdev>>8)&0xfff | (rdev>>32)&^0xfff)
			minor := uint32(rdev&0xff | (rdev>>12)&^0xff)
			if major != e.Major || minor != e.Minor {
				t.Errorf("extracted %s: device %d:%d, want %d:%d", e.Name, major, minor, e.Major, e.Minor)
			}
		default:
			got, err := os.ReadFile(p)
			if err != nil || string(got) != e.Data {
				t.Errorf("extracted %s: %q (%v), want %q", e.Name, got, err, e.Data)
			}
			if fi.ModTime().Unix() != 0 {
				t.Errorf("extracted %s: mtime %v, want the epoch", e.Name, fi.ModTime())
			}
		}
	}
}

func TestGzipReadByCpio(t *testing.T) {
	requireCpio(t)
	gz := func() []byte {
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		if err != nil {
			t.Fatal(err)
		}
		// The zero Header has no name and a zero ModTime, so the gzip
		// header holds no time either.
		zw.Header = gzip.Header{}
		w := NewWriter(zw)
		for _, e := range tree {
			if err := add(w, e); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	first, second := gz(), gz()
	if !bytes.Equal(first, second) {
		t.Errorf("two gzip archives of the same tree differ")
	}
	if mtime := first[4:8]; !bytes.Equal(mtime, []byte{0, 0, 0, 0}) {
		t.Errorf("gzip header MTIME = %x, want 0", mtime)
	}
	out := run(t, t.TempDir(), first, "sh", "-c", "zcat | cpio -it --quiet")
	var want []string
	for _, e := range tree {
		want = append(want, e.Name)
	}
	if diff := cmp.Diff(want, strings.Fields(out)); diff != "" {
		t.Errorf("zcat | cpio -it (-want +got):\n%s", diff)
	}
}

// header is a decoded newc header.
type header struct {
	Ino, Mode, UID, GID, Nlink, Mtime, Size, Major, Minor, RMajor, RMinor, NameSize, Check uint32
	Name                                                                                   string
}

// decode reads every header of a newc archive, checking the alignment of
// names and data and the zero padding after the trailer.
func decode(t *testing.T, b []byte) []header {
	t.Helper()
	var hs []header
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off%4 != 0 {
			t.Fatalf("header at %d: not 4-byte aligned", off)
		}
		if string(b[off:off+6]) != magic {
			t.Fatalf("header at %d: magic %q", off, b[off:off+6])
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("header at %d field %d: %v", off, i, err)
			}
			f[i] = uint32(v)
		}
		h := header{f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], ""}
		h.Name = string(b[off+headerSize : off+headerSize+int(h.NameSize)-1])
		if b[off+headerSize+int(h.NameSize)-1] != 0 {
			t.Fatalf("header %s: name not NUL-terminated", h.Name)
		}
		hs = append(hs, h)
		off = align(off + headerSize + int(h.NameSize))
		off = align(off + int(h.Size))
		if h.Name == trailer {
			break
		}
	}
	if len(b)%blockSize != 0 {
		t.Errorf("archive is %d bytes, not a multiple of %d", len(b), blockSize)
	}
	if bytes.Count(b[off:], []byte{0}) != len(b)-off {
		t.Errorf("bytes after the trailer are not all zero")
	}
	return hs
}

func TestHeaders(t *testing.T) {
	hs := decode(t, archive(t, tree))
	if got, want := len(hs), len(tree)+1; got != want {
		t.Fatalf("%d headers, want %d", got, want)
	}
	for i, h := range hs[:len(tree)] {
		want := uint32(1)
		if tree[i].Mode.IsDir() {
			want = 2
		}
		if h.Ino != uint32(i+1) || h.Nlink != want || h.UID != 0 || h.GID != 0 || h.Mtime != 0 || h.Check != 0 || h.Major != 0 || h.Minor != 0 {
			t.Errorf("header %s: ino %d nlink %d uid %d gid %d mtime %d check %d dev %d:%d, want ino %d nlink %d and zeros",
				h.Name, h.Ino, h.Nlink, h.UID, h.GID, h.Mtime, h.Check, h.Major, h.Minor, i+1, want)
		}
	}
	if got, want := hs[len(tree)], (header{Nlink: 1, NameSize: uint32(len(trailer) + 1), Name: trailer}); got != want {
		t.Errorf("trailer = %+v, want %+v", got, want)
	}
}

func TestDeterministic(t *testing.T) {
	first, second := archive(t, tree), archive(t, tree)
	if !bytes.Equal(first, second) {
		t.Fatalf("two archives of the same tree differ")
	}
	golden := filepath.Join("testdata", "tree.cpio")
	if *update {
		if err := os.WriteFile(golden, first, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to record it)", err)
	}
	if !bytes.Equal(first, want) {
		t.Errorf("archive differs from %s (go test -update re-records it after a deliberate change)", golden)
	}
}

func TestEmpty(t *testing.T) {
	hs := decode(t, archive(t, nil))
	if len(hs) != 1 || hs[0].Name != trailer {
		t.Errorf("empty archive headers = %+v, want only the trailer", hs)
	}
}

func TestRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		add  func(w *Writer) error
		want string
	}{
		{"leading slash", func(w *Writer) error { return w.File("/init", 0o755, nil) }, "must not start with /"},
		{"empty name", func(w *Writer) error { return w.Dir("", 0o755) }, "not a name"},
		{"dot", func(w *Writer) error { return w.Dir(".", 0o755) }, "not a name"},
		{"unclean", func(w *Writer) error { return w.File("a//b", 0o644, nil) }, "not clean"},
		{"trailing slash", func(w *Writer) error { return w.Dir("etc/", 0o755) }, "not clean"},
		{"parent", func(w *Writer) error { return w.File("../x", 0o644, nil) }, "leaves the archive root"},
		{"trailer", func(w *Writer) error { return w.File(trailer, 0o644, nil) }, "trailer"},
		{"no parent", func(w *Writer) error { return w.File("etc/hostname", 0o644, nil) }, "parent directory etc not added"},
		{"parent is a file", func(w *Writer) error {
			w.File("etc", 0o644, nil)
			return w.File("etc/hostname", 0o644, nil)
		}, "parent directory etc not added"},
		{"duplicate", func(w *Writer) error {
			w.Dir("etc", 0o755)
			return w.Dir("etc", 0o755)
		}, "already in the archive"},
		{"wrong type", func(w *Writer) error { return w.File("x", fs.ModeDir|0o755, nil) }, "wrong file type"},
		{"empty link", func(w *Writer) error { return w.Symlink("x", "") }, "empty target"},
		{"after close", func(w *Writer) error {
			w.Close()
			return w.Dir("etc", 0o755)
		}, "archive closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWriter(&bytes.Buffer{})
			err := tc.add(w)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			// The first error sticks.
			if err2 := w.Dir("later", 0o755); err2 == nil {
				t.Errorf("a later Dir succeeded after %v", err)
			}
			if err2 := w.Close(); err2 == nil {
				t.Errorf("Close succeeded after %v", err)
			}
		})
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(b []byte) (int, error) {
	if f.after < len(b) {
		n := max(f.after, 0)
		f.after = 0
		return n, errors.New("disk full")
	}
	f.after -= len(b)
	return len(b), nil
}

func TestWriteError(t *testing.T) {
	w := NewWriter(&failWriter{after: 200})
	if err := w.File("init", 0o755, bytes.Repeat([]byte("x"), 1000)); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("File = %v, want the writer's error", err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Close = %v, want the first error again", err)
	}
}
