package uki

import (
	"bytes"
	"compress/gzip"
	"debug/pe"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicefw/sluice/image/cpio"
	"github.com/sluicefw/sluice/internal/imagetest"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// stubSpec describes a synthetic PE32+ stub.
type stubSpec struct {
	sections      []string // names; each holds 0x20 bytes at VA 0x1000*(i+1)
	sectionAlign  uint32
	fileAlign     uint32
	sizeOfHeaders uint32 // also where the first section's data starts unless dataStart is set
	dataStart     uint32
	magic         uint16
	signed        bool
	symbols       bool // a COFF symbol table with one symbol after the data
}

func defaultSpec() stubSpec {
	return stubSpec{
		sections:      []string{".text", ".sdmagic"},
		sectionAlign:  0x1000,
		fileAlign:     0x200,
		sizeOfHeaders: 0x400,
		magic:         0x20b,
		symbols:       true,
	}
}

// fakeStub returns the PE image spec describes.
func fakeStub(spec stubSpec) []byte {
	const peOff, optSize = 0x40, 240
	dataStart := spec.dataStart
	if dataStart == 0 {
		dataStart = spec.sizeOfHeaders
	}
	n := len(spec.sections)
	raw := spec.fileAlign // each section's raw size
	end := dataStart + uint32(n)*raw
	b := make([]byte, end)
	b[0], b[1] = 'M', 'Z'
	le.PutUint32(b[0x3c:], peOff)
	copy(b[peOff:], "PE\x00\x00")
	coff := peOff + 4
	le.PutUint16(b[coff:], 0x8664)
	le.PutUint16(b[coff+2:], uint16(n))
	le.PutUint32(b[coff+4:], 0x12345678) // TimeDateStamp
	le.PutUint16(b[coff+16:], optSize)
	le.PutUint16(b[coff+18:], 0x206)
	opt := coff + 20
	le.PutUint16(b[opt:], spec.magic)
	le.PutUint32(b[opt+8:], uint32(n)*raw) // SizeOfInitializedData
	le.PutUint32(b[opt+16:], 0x1000)       // AddressOfEntryPoint
	le.PutUint32(b[opt+32:], spec.sectionAlign)
	le.PutUint32(b[opt+36:], spec.fileAlign)
	le.PutUint32(b[opt+56:], uint32(n+1)*0x1000) // SizeOfImage
	le.PutUint32(b[opt+60:], spec.sizeOfHeaders)
	le.PutUint16(b[opt+68:], 10) // EFI application
	le.PutUint32(b[opt+108:], 16)
	if spec.signed {
		le.PutUint32(b[opt+112+8*4:], end)
		le.PutUint32(b[opt+112+8*4+4:], 8)
	}
	table := opt + optSize
	for i, name := range spec.sections {
		sh := b[table+40*i:]
		copy(sh, name)
		le.PutUint32(sh[8:], 0x20)
		le.PutUint32(sh[12:], uint32(0x1000*(i+1)))
		le.PutUint32(sh[16:], raw)
		le.PutUint32(sh[20:], dataStart+uint32(i)*raw)
		le.PutUint32(sh[36:], 0x40000040)
		copy(b[dataStart+uint32(i)*raw:], bytes.Repeat([]byte{byte(i + 1)}, 0x20))
	}
	if spec.symbols {
		le.PutUint32(b[coff+8:], end)
		le.PutUint32(b[coff+12:], 1)
		sym := make([]byte, 18)
		copy(sym, "stubsym")
		le.PutUint32(sym[8:], 0x10)
		le.PutUint16(sym[12:], 1)
		sym[16] = 2 // external
		b = append(b, sym...)
		b = binary.LittleEndian.AppendUint32(b, 4) // empty string table
	}
	if spec.signed {
		b = append(b, make([]byte, 8)...)
	}
	le.PutUint32(b[opt+64:], checksum(b))
	return b
}

var fakeSections = []Section{
	{".osrel", []byte("ID=sluice\n")},
	{".cmdline", []byte("console=ttyS0")},
	{".linux", bytes.Repeat([]byte("K"), 5000)},
	{".initrd", []byte("070")},
}

// peSection is what a test compares of a section.
type peSection struct {
	Name                          string
	VirtualSize, VirtualAddress   uint32
	Size, Offset, Characteristics uint32
}

func sectionTable(f *pe.File) []peSection {
	var s []peSection
	for _, sec := range f.Sections {
		s = append(s, peSection{sec.Name, sec.VirtualSize, sec.VirtualAddress, sec.Size, sec.Offset, sec.Characteristics})
	}
	return s
}

func open(t *testing.T, b []byte) *pe.File {
	t.Helper()
	f, err := pe.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("debug/pe cannot read the image: %v", err)
	}
	return f
}

// checkChecksum fails t unless the image's CheckSum is its PE checksum.
func checkChecksum(t *testing.T, img []byte) {
	t.Helper()
	field := int(le.Uint32(img[0x3c:])) + 24 + 64
	c := bytes.Clone(img)
	le.PutUint32(c[field:], 0)
	if got, want := le.Uint32(img[field:]), checksum(c); got != want {
		t.Errorf("CheckSum = %#x, want %#x", got, want)
	}
}

func TestChecksumOfStub(t *testing.T) {
	dir := imagetest.BootEFI(t)
	stub, err := os.ReadFile(filepath.Join(dir, "linuxx64.efi.stub"))
	if err != nil {
		t.Fatal(err)
	}
	// Debian's stub carries a valid checksum: the same sum must give it.
	checkChecksum(t, stub)
}

func TestBuildLayout(t *testing.T) {
	stub := fakeStub(defaultSpec())
	orig := bytes.Clone(stub)
	img, err := Build(stub, fakeSections)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stub, orig) {
		t.Errorf("Build modified the stub")
	}
	f := open(t, img)
	// The stub's sections end at 0x2020 in memory and 0x800 in the file.
	want := []peSection{
		{".text", 0x20, 0x1000, 0x200, 0x400, 0x40000040},
		{".sdmagic", 0x20, 0x2000, 0x200, 0x600, 0x40000040},
		{".osrel", 10, 0x3000, 0x200, 0x800, 0x40000040},
		{".cmdline", 13, 0x4000, 0x200, 0xa00, 0x40000040},
		{".linux", 5000, 0x5000, 0x1400, 0xc00, 0x40000040},
		{".initrd", 3, 0x7000, 0x200, 0x2000, 0x40000040},
	}
	if diff := cmp.Diff(want, sectionTable(f)); diff != "" {
		t.Errorf("section table (-want +got):\n%s", diff)
	}
	for i, s := range fakeSections {
		got, err := f.Sections[2+i].Data()
		if err != nil {
			t.Fatal(err)
		}
		// Data is the raw data, padded to the file alignment.
		if !bytes.Equal(got[:len(s.Data)], s.Data) || !allZero(got[len(s.Data):]) {
			t.Errorf("section %s data differs", s.Name)
		}
	}
	oh := f.OptionalHeader.(*pe.OptionalHeader64)
	if got, want := oh.SizeOfImage, uint32(0x8000); got != want {
		t.Errorf("SizeOfImage = %#x, want %#x", got, want)
	}
	if got, want := oh.SizeOfHeaders, uint32(0x400); got != want {
		t.Errorf("SizeOfHeaders = %#x, want %#x", got, want)
	}
	if got, want := oh.SizeOfInitializedData, uint32(0x400+0x200+0x200+0x1400+0x200); got != want {
		t.Errorf("SizeOfInitializedData = %#x, want %#x", got, want)
	}
	if got, want := f.FileHeader.TimeDateStamp, uint32(0x12345678); got != want {
		t.Errorf("TimeDateStamp = %#x, want the stub's %#x", got, want)
	}
	if got, want := f.FileHeader.PointerToSymbolTable, uint32(0x2200); got != want {
		t.Errorf("PointerToSymbolTable = %#x, want %#x", got, want)
	}
	if len(f.Symbols) != 1 || f.Symbols[0].Name != "stubsym" {
		t.Errorf("symbols = %+v, want the stub's stubsym", f.Symbols)
	}
	checkChecksum(t, img)

	again, err := Build(stub, fakeSections)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img, again) {
		t.Errorf("two builds from the same inputs differ")
	}
}

func TestBuildGrowsHeaders(t *testing.T) {
	spec := defaultSpec()
	spec.sections = []string{".a", ".b", ".c", ".d"} // table ends at 0x1e8
	spec.sizeOfHeaders = 0x200
	spec.dataStart = 0x400
	img, err := Build(fakeStub(spec), fakeSections[2:]) // two more end it at 0x238
	if err != nil {
		t.Fatal(err)
	}
	f := open(t, img)
	if got, want := f.OptionalHeader.(*pe.OptionalHeader64).SizeOfHeaders, uint32(0x400); got != want {
		t.Errorf("SizeOfHeaders = %#x, want %#x", got, want)
	}
	if got := len(f.Sections); got != 6 {
		t.Errorf("%d sections, want 6", got)
	}
}

func TestBuildRejects(t *testing.T) {
	spec := func(change func(*stubSpec)) []byte {
		s := defaultSpec()
		change(&s)
		return fakeStub(s)
	}
	good := fakeStub(defaultSpec())
	linux := Section{".linux", []byte("K")}
	for _, tc := range []struct {
		name     string
		stub     []byte
		sections []Section
		want     string
	}{
		{"not PE", []byte("#!/bin/sh\n" + strings.Repeat("x", 100)), []Section{linux}, "no MZ header"},
		{"truncated", good[:0x50], []Section{linux}, "no PE signature"},
		{"PE32", spec(func(s *stubSpec) { s.magic = 0x10b }), []Section{linux}, "want PE32+"},
		{"signed", spec(func(s *stubSpec) { s.signed = true }), []Section{linux}, "stub is signed"},
		{"no room", spec(func(s *stubSpec) {
			s.sections = make([]string, 5)
			for i := range s.sections {
				s.sections[i] = fmt.Sprintf(".s%d", i)
			}
			s.sizeOfHeaders = 0x200 // the table of 5 ends at 0x210... after it
			s.dataStart = 0x280
		}), fakeSections, "no room for 4 more section headers"},
		{"header bytes in use", func() []byte {
			b := bytes.Clone(good)
			b[0x148+2*40+5] = 0xff
			return b
		}(), []Section{linux}, "after the section table are in use"},
		{"no linux", good, fakeSections[:2], "no .linux section"},
		{"initrd not last", good, []Section{{".initrd", []byte("x")}, linux}, ".initrd must be the last section"},
		{"long name", good, []Section{{".linux123", []byte("x")}}, "want a name of 2 to 8 bytes"},
		{"no dot", good, []Section{{"linux", []byte("x")}}, "want a name"},
		{"twice", good, []Section{linux, linux}, "given twice"},
		{"in stub", good, []Section{linux, {".sdmagic", []byte("x")}}, "already in the stub"},
		{"empty", good, []Section{linux, {".cmdline", nil}}, "section .cmdline is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.stub, tc.sections)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func FuzzBuild(f *testing.F) {
	f.Add(fakeStub(defaultSpec()))
	s := defaultSpec()
	s.symbols = false
	s.sectionAlign = 0x200
	f.Add(fakeStub(s))
	f.Fuzz(func(t *testing.T, stub []byte) {
		img, err := Build(stub, fakeSections)
		if err != nil {
			return // rejected, without panicking
		}
		pf, err := pe.NewFile(bytes.NewReader(img))
		if err != nil {
			return // the stub's own headers may already confuse debug/pe
		}
		n := len(pf.Sections)
		if n < len(fakeSections) {
			t.Fatalf("%d sections, want at least %d", n, len(fakeSections))
		}
		for i, want := range fakeSections {
			sec := pf.Sections[n-len(fakeSections)+i]
			got, err := sec.Data()
			if sec.Name != want.Name || err != nil || !bytes.HasPrefix(got, want.Data) {
				t.Fatalf("section %d is %s (%v), want %s with its data", i, sec.Name, err, want.Name)
			}
		}
	})
}

// realInputs returns Debian's stub and the sections of a UKI around the
// kernel under test, with a small gzip-compressed initramfs.
func realInputs(t *testing.T) (stub []byte, sections []Section) {
	t.Helper()
	efi := imagetest.BootEFI(t)
	kernel := imagetest.KernelDir(t)
	stub, err := os.ReadFile(filepath.Join(efi, "linuxx64.efi.stub"))
	if err != nil {
		t.Fatal(err)
	}
	vmlinuz, _ := filepath.Glob(filepath.Join(kernel, "boot", "vmlinuz-*"))
	if len(vmlinuz) != 1 {
		t.Fatalf("want one vmlinuz in %s/boot, have %q", kernel, vmlinuz)
	}
	linux, err := os.ReadFile(vmlinuz[0])
	if err != nil {
		t.Fatal(err)
	}
	var initrd bytes.Buffer
	zw := gzip.NewWriter(&initrd)
	w := cpio.NewWriter(zw)
	w.Dir("dev", 0o755)
	w.CharDev("dev/console", 0o600, 5, 1)
	w.File("init", 0o755, []byte("#!/bin/sh\necho hello\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return stub, []Section{
		{".osrel", []byte("ID=sluice\nNAME=sluice\nVERSION_ID=test\n")},
		{".cmdline", []byte("console=ttyS0 quiet")},
		{".linux", linux},
		{".initrd", initrd.Bytes()},
	}
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		_, err := exec.LookPath(tool)
		netnstest.Require(t, err == nil, "needs %s (make deps installs binutils)", tool)
	}
}

func TestRealStub(t *testing.T) {
	requireTools(t, "objdump", "objcopy", "file")
	stub, sections := realInputs(t)
	img, err := Build(stub, sections)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	uki := filepath.Join(dir, "sluice.efi")
	if err := os.WriteFile(uki, img, 0o644); err != nil {
		t.Fatal(err)
	}

	// Where the sections must be: after the stub's last section, each at
	// the end of the one before rounded up to 4096 bytes.
	sf := open(t, stub)
	var end uint32
	for _, s := range sf.Sections {
		end = max(end, s.VirtualAddress+s.VirtualSize)
	}
	type objdumpSection struct {
		Name      string
		Size, VMA uint64
	}
	t.Logf("stub sections end at %#x", end)
	var want []objdumpSection
	for _, s := range sf.Sections {
		want = append(want, objdumpSection{s.Name, uint64(s.VirtualSize), uint64(s.VirtualAddress)})
	}
	vma := uint64(end)
	for _, s := range sections {
		vma = (vma + 4095) &^ 4095
		want = append(want, objdumpSection{s.Name, uint64(len(s.Data)), vma})
		vma += uint64(len(s.Data))
	}
	for _, s := range want[len(sf.Sections):] {
		t.Logf("section %-8s at %#08x, %d bytes", s.Name, s.VMA, s.Size)
	}

	out := run(t, "objdump", "-h", uki)
	if !strings.Contains(out, "file format pei-x86-64") {
		t.Errorf("objdump -h does not see a pei-x86-64 image:\n%s", out)
	}
	var got []objdumpSection
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		if _, err := strconv.Atoi(f[0]); err != nil {
			continue
		}
		size, err1 := strconv.ParseUint(f[2], 16, 64)
		addr, err2 := strconv.ParseUint(f[3], 16, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("objdump -h line %q", line)
		}
		got = append(got, objdumpSection{f[1], size, addr})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("objdump -h sections (-want +got):\n%s", diff)
	}

	for _, s := range sections {
		file := filepath.Join(dir, "section"+s.Name)
		run(t, "objcopy", "-O", "binary", "--only-section="+s.Name, uki, file)
		got, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, s.Data) {
			t.Errorf("objcopy --only-section=%s: %d bytes differ from the %d given", s.Name, len(got), len(s.Data))
		}
	}

	if out := run(t, "file", "-b", uki); !strings.Contains(out, "PE32+ executable (EFI application) x86-64") {
		t.Errorf("file says %q", out)
	}
	checkChecksum(t, img)

	again, err := Build(stub, sections)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img, again) {
		t.Errorf("two builds from the same inputs differ")
	}
}

// TestMatchesObjcopy builds the same image with objcopy, placing each
// section at the address Build chose, and compares the two. objcopy stamps
// the current time into TimeDateStamp, so that field (and with it the
// checksum) is set back to the stub's before comparing.
func TestMatchesObjcopy(t *testing.T) {
	requireTools(t, "objcopy")
	stub, sections := realInputs(t)
	img, err := Build(stub, sections)
	if err != nil {
		t.Fatal(err)
	}
	f := open(t, img)
	dir := t.TempDir()
	stubFile := filepath.Join(dir, "stub.efi")
	if err := os.WriteFile(stubFile, stub, 0o644); err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, s := range sections {
		file := filepath.Join(dir, "in"+s.Name)
		if err := os.WriteFile(file, s.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		sec := f.Section(s.Name)
		args = append(args, "--add-section", s.Name+"="+file, "--change-section-vma", fmt.Sprintf("%s=%#x", s.Name, sec.VirtualAddress))
	}
	ref := filepath.Join(dir, "objcopy.efi")
	run(t, "objcopy", append(args, stubFile, ref)...)
	want, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}

	if diff := cmp.Diff(sectionTable(open(t, want)), sectionTable(f)); diff != "" {
		t.Errorf("section table against objcopy's (-objcopy +Build):\n%s", diff)
	}
	coff := int(le.Uint32(want[0x3c:])) + 4
	copy(want[coff+4:coff+8], stub[coff+4:coff+8]) // TimeDateStamp
	le.PutUint32(want[coff+20+64:], 0)
	le.PutUint32(want[coff+20+64:], checksum(want))
	if !bytes.Equal(want, img) {
		i := 0
		for i < min(len(want), len(img)) && want[i] == img[i] {
			i++
		}
		t.Errorf("image differs from objcopy's (%d bytes, Build's %d) first at offset %#x", len(want), len(img), i)
	}
}

// run runs a tool and returns its standard output.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}
