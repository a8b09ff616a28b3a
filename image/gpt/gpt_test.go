package gpt

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicefw/sluice/image/fat"
	"github.com/sluicefw/sluice/internal/netnstest"
)

const diskSize = 100 << 20

var (
	diskGUID = GUIDFromSeed("sluice test disk")
	espGUID  = GUIDFromSeed("sluice test esp")
	rootGUID = GUIDFromSeed("sluice test root")
)

// testParts returns an EFI system partition and a root partition.
func testParts() []Partition {
	return []Partition{
		{Name: "EFI system", Type: EFISystem, GUID: espGUID, Start: 1 << 20, Size: 64 << 20},
		{Name: "sluice root A", Type: LinuxFilesystem, GUID: rootGUID, Start: 65 << 20, Size: 32 << 20},
	}
}

// writeDisk writes a table on a new sparse file of size bytes and returns
// its path.
func writeDisk(t *testing.T, size int64, parts []Partition) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := Write(f, size, diskGUID, parts); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func sgdisk(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("sgdisk", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestSgdisk(t *testing.T) {
	_, err := exec.LookPath("sgdisk")
	netnstest.Require(t, err == nil, "needs sgdisk (from gdisk)")
	img := writeDisk(t, diskSize, testParts())

	if out := sgdisk(t, "-v", img); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v reports problems:\n%s", out)
	}

	out := sgdisk(t, "-p", img)
	t.Logf("sgdisk -p:\n%s", out)
	if want := "Disk identifier (GUID): " + diskGUID.String(); !strings.Contains(out, want) {
		t.Errorf("sgdisk -p does not show %q:\n%s", want, out)
	}
	row := regexp.MustCompile(`(?m)^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+ \S+)\s+([0-9A-F]{4})\s+(.*)$`)
	var got [][]string
	for _, m := range row.FindAllStringSubmatch(out, -1) {
		got = append(got, m[1:])
	}
	want := [][]string{
		{"1", "2048", "133119", "64.0 MiB", "EF00", "EFI system"},
		{"2", "133120", "198655", "32.0 MiB", "8300", "sluice root A"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sgdisk -p partitions (-want +got):\n%s", diff)
	}

	for i, p := range testParts() {
		out := sgdisk(t, "-i", string(rune('1'+i)), img)
		if want := "Partition unique GUID: " + p.GUID.String(); !strings.Contains(out, want) {
			t.Errorf("sgdisk -i %d does not show %q:\n%s", i+1, want, out)
		}
		if want := "Partition name: '" + p.Name + "'"; !strings.Contains(out, want) {
			t.Errorf("sgdisk -i %d does not show %q:\n%s", i+1, want, out)
		}
	}
}

// TestBackupRecovers damages the primary table and checks that sgdisk
// finds the backup whole.
func TestBackupRecovers(t *testing.T) {
	_, err := exec.LookPath("sgdisk")
	netnstest.Require(t, err == nil, "needs sgdisk (from gdisk)")
	img := writeDisk(t, diskSize, testParts())
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 512), 512); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out := sgdisk(t, "-p", img)
	if !strings.Contains(out, "sluice root A") || !strings.Contains(out, diskGUID.String()) {
		t.Errorf("sgdisk -p with the primary header zeroed does not show the backup's table:\n%s", out)
	}
}

// TestESPInDisk writes a FAT volume into the EFI system partition's range,
// as the image build does, and reads it back through the partition offset.
func TestESPInDisk(t *testing.T) {
	_, err := exec.LookPath("mtype")
	netnstest.Require(t, err == nil, "needs mtype (from mtools)")
	parts := testParts()
	img := writeDisk(t, diskSize, parts)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := "timeout 0\n"
	esp := parts[0]
	err = fat.Write(io.NewOffsetWriter(f, esp.Start), esp.Size, "ESP", 1, []fat.File{{Path: "loader/loader.conf", Data: []byte(want)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("mtype", "-i", fmt.Sprintf("%s@@%d", img, esp.Start), "::/loader/loader.conf")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	got, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mtype: %v\n%s", err, got)
	}
	if string(got) != want {
		t.Errorf("mtype ::/loader/loader.conf in the ESP = %q, want %q", got, want)
	}
	if out := sgdisk(t, "-v", img); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v with the ESP written reports problems:\n%s", out)
	}
}

func TestDeterministic(t *testing.T) {
	a, err := os.ReadFile(writeDisk(t, diskSize, testParts()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(writeDisk(t, diskSize, testParts()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("two writes of the same table differ")
	}
}

func TestGUID(t *testing.T) {
	const text = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	g, err := ParseGUID(strings.ToLower(text))
	if err != nil {
		t.Fatal(err)
	}
	// GPT stores the first three fields little-endian.
	want := GUID{0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B}
	if g != want {
		t.Errorf("ParseGUID(%q) = % x, want % x", text, g[:], want[:])
	}
	if got := g.String(); got != text {
		t.Errorf("String() = %q, want %q", got, text)
	}
	for _, bad := range []string{"", "C12A7328F81F11D2BA4B00A0C93EC93B", "C12A7328-F81F-11D2-BA4B-00A0C93EC93", "G12A7328-F81F-11D2-BA4B-00A0C93EC93B", "C12A7328-F81F-11D2-BA4B-00A0C93E-93B"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) succeeded, want an error", bad)
		}
	}
}

func TestGUIDFromSeed(t *testing.T) {
	a, b := GUIDFromSeed("seed"), GUIDFromSeed("seed")
	if a != b {
		t.Errorf("GUIDFromSeed gives %s then %s for the same seed", a, b)
	}
	if c := GUIDFromSeed("other"); c == a {
		t.Errorf("GUIDFromSeed gives %s for two seeds", a)
	}
	s := a.String()
	if s[14] != '4' || !strings.ContainsRune("89AB", rune(s[19])) {
		t.Errorf("GUIDFromSeed(seed) = %s, want version 4 (xxxxxxxx-xxxx-4xxx-[89AB]xxx-...)", s)
	}
}

func FuzzParseGUID(f *testing.F) {
	f.Add("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
	f.Add("0fc63daf-8483-4772-8e79-3d69d8477de4")
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseGUID(s)
		if err != nil {
			return // not a GUID
		}
		if !strings.EqualFold(g.String(), s) {
			t.Errorf("ParseGUID(%q).String() = %q", s, g.String())
		}
	})
}

func TestLayout(t *testing.T) {
	got, err := Layout(diskSize, []Partition{{Name: "esp", Size: 64 << 20}, {Name: "a", Size: 3 << 20}, {Name: "rest"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []Partition{
		{Name: "esp", Start: 1 << 20, Size: 64 << 20},
		{Name: "a", Start: 65 << 20, Size: 3 << 20},
		{Name: "rest", Start: 68 << 20, Size: 31 << 20}, // the last MiB holds the backup table
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Layout (-want +got):\n%s", diff)
	}
	if _, err := Layout(diskSize, []Partition{{Size: 100 << 20}}); err == nil {
		t.Error("Layout of 100 MiB on a 100 MiB disk succeeded, want an error")
	}
}

func TestWriteErrors(t *testing.T) {
	with := func(edit func(p []Partition) []Partition) []Partition { return edit(testParts()) }
	for _, tc := range []struct {
		name    string
		size    int64
		guid    GUID
		parts   []Partition
		wantErr string
	}{
		{"disk not sectors", diskSize + 1, diskGUID, nil, "not a multiple"},
		{"disk too small", 16 << 10, diskGUID, nil, "too small"},
		{"zero disk GUID", diskSize, GUID{}, nil, "disk GUID is zero"},
		{"overlap", diskSize, diskGUID, with(func(p []Partition) []Partition { p[1].Start = 64 << 20; return p }), "overlaps partition 1"},
		{"before first usable", diskSize, diskGUID, with(func(p []Partition) []Partition { p[0].Start = 33 * 512; return p }), "outside the usable range"},
		{"after last usable", diskSize, diskGUID, with(func(p []Partition) []Partition { p[1].Size = diskSize - p[1].Start - 33*512 + 512; return p }), "outside the usable range"},
		{"start not sectors", diskSize, diskGUID, with(func(p []Partition) []Partition { p[0].Start++; return p }), "not a multiple of 512"},
		{"size not sectors", diskSize, diskGUID, with(func(p []Partition) []Partition { p[0].Size--; return p }), "not a multiple of 512"},
		{"zero size", diskSize, diskGUID, with(func(p []Partition) []Partition { p[0].Size = 0; return p }), "not positive"},
		{"zero type", diskSize, diskGUID, with(func(p []Partition) []Partition { p[0].Type = GUID{}; return p }), "zero type"},
		{"same GUID", diskSize, diskGUID, with(func(p []Partition) []Partition { p[1].GUID = p[0].GUID; return p }), "has the GUID"},
		{"long name", diskSize, diskGUID, with(func(p []Partition) []Partition { p[0].Name = strings.Repeat("n", 37); return p }), "longer than 36"},
		{"too many", diskSize, diskGUID, make([]Partition, 129), "at most 128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(discard{}, tc.size, tc.guid, tc.parts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Write = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
	// The last usable sector itself is fine.
	p := testParts()
	p[1].Size = diskSize - p[1].Start - 33*512
	if err := Write(discard{}, diskSize, diskGUID, p); err != nil {
		t.Errorf("Write with a partition to the last usable sector: %v", err)
	}
}

// discard is an io.WriterAt that keeps nothing.
type discard struct{}

func (discard) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
