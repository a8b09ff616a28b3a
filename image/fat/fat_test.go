package fat

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// esp returns files like those of the appliance's EFI system partition.
func esp() []File {
	big := make([]byte, 3<<20+123) // several clusters and a partial last one
	for i := range big {
		big[i] = byte(i*7 + i>>11)
	}
	files := []File{
		{Path: "EFI/BOOT/BOOTX64.EFI", Data: []byte("systemd-boot stand-in\n")},
		{Path: "EFI/Linux/sluice-a+3.efi", Data: big},
		{Path: "EFI/Linux/sluice-b.efi", Data: big[:4096]},
		{Path: "loader/loader.conf", Data: []byte("timeout 0\ndefault sluice-*\n")},
		{Path: "loader/entries.srel", Data: []byte("type1\n")},
		{Path: "loader/random-seed", Data: nil},
		{Path: "A/B/C/D/deep file with spaces and a long name.txt", Data: []byte("deep\n")},
		{Path: "README", Data: []byte("readme\n")},
	}
	// Enough long names that their directory spans several clusters.
	for i := range 40 {
		files = append(files, File{Path: fmt.Sprintf("loader/entries/entry-%02d.conf", i), Data: []byte{byte(i)}})
	}
	return files
}

const testSize = 64 << 20

// writeImage writes files into a new file of size bytes and returns its path.
func writeImage(t *testing.T, size int64, files []File) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "esp.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := Write(f, size, "SLUICE ESP", 0x5a17ce01, files); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// requireTool skips the test when tool is not installed.
func requireTool(t *testing.T, tool, pkg string) {
	t.Helper()
	_, err := exec.LookPath(tool)
	netnstest.Require(t, err == nil, "needs %s (from %s)", tool, pkg)
}

// run runs a command with mtools' geometry check off and returns its
// output, failing the test when it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// fsck runs fsck.fat read-only and fails the test on any complaint.
func fsck(t *testing.T, img string) {
	t.Helper()
	out := run(t, "fsck.fat", "-n", "-v", img)
	for _, bad := range []string{"arning", "rror", "wrong", "orrupt", "ad short", "ismatch", "Label"} {
		if strings.Contains(out, bad) {
			t.Errorf("fsck.fat -n -v %s reports %q:\n%s", img, bad, out)
		}
	}
	t.Logf("fsck.fat -n -v:\n%s", out)
}

func TestWriteReadByTools(t *testing.T) {
	for _, tool := range []string{"mdir", "mcopy", "mren"} {
		requireTool(t, tool, "mtools")
	}
	requireTool(t, "fsck.fat", "dosfstools")

	files := esp()
	img := writeImage(t, testSize, files)
	fsck(t, img)

	listing := run(t, "mdir", "-i", img, "-/", "::")
	bare := run(t, "mdir", "-i", img, "-/", "-b", "::")
	for _, f := range files {
		if want := "::/" + f.Path + "\n"; !strings.Contains(bare, want) {
			t.Errorf("mdir -/ -b does not list %q:\n%s", want, bare)
		}
	}
	if !strings.Contains(listing, "SLUICE ESP") {
		t.Errorf("mdir does not show the label SLUICE ESP:\n%s", listing)
	}

	out := t.TempDir()
	for i, f := range files {
		dst := filepath.Join(out, string(rune('a'+i)))
		run(t, "mcopy", "-i", img, "::/"+f.Path, dst)
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, f.Data) {
			t.Errorf("mcopy ::/%s: got %d bytes, want the %d written", f.Path, len(got), len(f.Data))
		}
	}

	// systemd-boot counts boot attempts by renaming the entry.
	run(t, "mren", "-i", img, "::/EFI/Linux/sluice-a+3.efi", "sluice-a+2-1.efi")
	fsck(t, img)
	got := run(t, "mdir", "-i", img, "-b", "::/EFI/Linux")
	if want := "::/EFI/Linux/sluice-a+2-1.efi"; !strings.Contains(got, want) {
		t.Errorf("after mren, mdir -b ::/EFI/Linux = %q, want it to hold %q", got, want)
	}
}

func TestDeterministic(t *testing.T) {
	a, err := os.ReadFile(writeImage(t, testSize, esp()))
	if err != nil {
		t.Fatal(err)
	}
	// The same files in another order make the same volume.
	files := esp()
	for i, j := 0, len(files)-1; i < j; i, j = i+1, j-1 {
		files[i], files[j] = files[j], files[i]
	}
	b, err := os.ReadFile(writeImage(t, testSize, files))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("two writes of the same files differ")
	}
}

func TestSizes(t *testing.T) {
	requireTool(t, "fsck.fat", "dosfstools")
	for _, tc := range []struct {
		name    string
		size    int64
		wantSPC int64
	}{
		{"smallest", MinSize(), 1},
		{"64 MiB", 64 << 20, 1},
		{"128 MiB", 128 << 20, 2},
		{"256 MiB", 256 << 20, 4},
		{"512 MiB", 512 << 20, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := newGeometry(tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if g.sectorsPerCluster != tc.wantSPC {
				t.Errorf("newGeometry(%d) chose %d sectors per cluster, want %d", tc.size, g.sectorsPerCluster, tc.wantSPC)
			}
			if g.clusters < minClusters {
				t.Errorf("newGeometry(%d) has %d clusters, fewer than %d", tc.size, g.clusters, minClusters)
			}
			fsck(t, writeImage(t, tc.size, esp()[:1]))
		})
	}
}

func TestShortNames(t *testing.T) {
	for _, tc := range []struct {
		names []string
		want  []string // short names, in sorted name order
	}{
		{[]string{"BOOTX64.EFI", "EFI", "README"}, []string{"BOOTX64 EFI", "EFI        ", "README     "}},
		{[]string{"loader", "Linux", "loader.conf"}, []string{"LINUX      ", "LOADER     ", "LOADER~1CON"}},
		{[]string{"sluice-a+3.efi", "sluice-b+3.efi"}, []string{"SLUICE~1EFI", "SLUICE~2EFI"}},
		{[]string{".hidden", "a.b.c", "é.txt"}, []string{"HIDDEN~1   ", "AB~1    C  ", "_~1     TXT"}},
	} {
		t.Run(strings.Join(tc.names, ","), func(t *testing.T) {
			var files []File
			for _, n := range tc.names {
				files = append(files, File{Path: n})
			}
			root, err := buildTree(files)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range root.children {
				got = append(got, string(c.short[:]))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("short names (-want +got):\n%s", diff)
			}
		})
	}
}

// TestChecksumMatchesMtools checks checksum against the long name entries
// mtools writes for a file it copies in.
func TestChecksumMatchesMtools(t *testing.T) {
	requireTool(t, "mcopy", "mtools")
	img := writeImage(t, testSize, nil)
	src := filepath.Join(t.TempDir(), "sluice-c+1-2.efi")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mcopy", "-i", img, src, "::/")

	g, err := newGeometry(testSize)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := make([]byte, g.clusterBytes())
	if _, err := f.ReadAt(dir, g.clusterOffset(rootCluster)); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for i := 0; i+2*dirEntrySize <= len(dir); i += dirEntrySize {
		e, next := dir[i:i+dirEntrySize], dir[i+dirEntrySize:i+2*dirEntrySize]
		if e[11] != attrLongName || next[11] == attrLongName {
			continue
		}
		short := [11]byte(next[:11])
		if got, want := checksum(short), e[13]; got != want {
			t.Errorf("checksum(%q) = %#x, mtools wrote %#x", short, got, want)
		}
		checked++
	}
	if checked == 0 {
		t.Fatalf("no long name entry in the root directory after mcopy")
	}
}

func TestWriteErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int64
		label   string
		files   []File
		wantErr string
	}{
		{"too small", 16 << 20, "", nil, "too small"},
		{"just too small", MinSize() - 512, "", nil, "too small"},
		{"not sectors", 64<<20 + 1, "", nil, "multiple of 512"},
		{"files do not fit", MinSize(), "", []File{{Path: "big", Data: make([]byte, 40<<20)}}, "need"},
		{"duplicate", testSize, "", []File{{Path: "a/b"}, {Path: "a/b"}}, "already exists"},
		{"duplicate case", testSize, "", []File{{Path: "EFI/x"}, {Path: "efi/X"}}, "already exists"},
		{"file as directory", testSize, "", []File{{Path: "a"}, {Path: "a/b"}}, "is a file"},
		{"directory as file", testSize, "", []File{{Path: "a/b"}, {Path: "a"}}, "already exists"},
		{"empty path", testSize, "", []File{{Path: ""}}, "empty path"},
		{"leading slash", testSize, "", []File{{Path: "/a"}}, "empty element"},
		{"trailing slash", testSize, "", []File{{Path: "a/"}}, "empty element"},
		{"double slash", testSize, "", []File{{Path: "a//b"}}, "empty element"},
		{"dot dot", testSize, "", []File{{Path: "a/../b"}}, `".."`},
		{"bad character", testSize, "", []File{{Path: "a:b"}}, "does not allow"},
		{"trailing dot", testSize, "", []File{{Path: "a."}}, "ends with"},
		{"too long", testSize, "", []File{{Path: strings.Repeat("x", 256)}}, "longer than 255"},
		{"not UTF-8", testSize, "", []File{{Path: "\xff"}}, "not UTF-8"},
		{"long label", testSize, "TWELVE CHARS", nil, "longer than 11"},
		{"lower-case label", testSize, "esp", nil, "upper-case"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(discard{}, tc.size, tc.label, 1, tc.files)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Write = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// discard is an io.WriterAt that keeps nothing.
type discard struct{}

func (discard) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
