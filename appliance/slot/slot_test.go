package slot

import (
	"os"
	"path/filepath"
	"testing"
	"unicode/utf16"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		want Slot
		ok   bool
	}{
		{"sluice-0001.efi", Slot{Gen: 1, File: "sluice-0001.efi", Left: -1}, true},
		{"sluice-0002+3.efi", Slot{Gen: 2, File: "sluice-0002+3.efi", Left: 3, Trial: true}, true},
		{"sluice-0002+1-2.efi", Slot{Gen: 2, File: "sluice-0002+1-2.efi", Left: 1, Done: 2, Trial: true}, true},
		{"sluice-0002+0-3.efi", Slot{Gen: 2, File: "sluice-0002+0-3.efi", Left: 0, Done: 3, Trial: true}, true},
		{"sluice-12345.efi", Slot{Gen: 12345, File: "sluice-12345.efi", Left: -1}, true},
		{"sluice-1.efi", Slot{}, false},
		{"other.efi", Slot{}, false},
		{"sluice-0001.efi.tmp", Slot{}, false},
	} {
		got, ok := Parse(tc.name)
		if ok != tc.ok || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
	if got := Name(7, 3); got != "sluice-0007+3.efi" {
		t.Errorf("Name(7, 3) = %q", got)
	}
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// fakeUKI is the smallest input Check accepts.
var fakeUKI = append([]byte("MZ"+string(make([]byte, 100))), ".linux"...)

func TestInstallAndMarkGood(t *testing.T) {
	esp := ESP{Dir: t.TempDir()}
	linux := filepath.Join(esp.Dir, "EFI", "Linux")
	os.MkdirAll(linux, 0o755)
	os.WriteFile(filepath.Join(linux, "sluice-0001.efi"), fakeUKI, 0o644)

	// Booted from slot 1; install 2: both kept.
	running, _ := Parse("sluice-0001.efi")
	s2, err := esp.Install(fakeUKI, running)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"sluice-0001.efi", "sluice-0002+3.efi"}, files(t, linux)); diff != "" {
		t.Errorf("after installing 2 (-want +got):\n%s", diff)
	}
	// systemd-boot counts a boot of 2; it comes up healthy and marks itself good.
	os.Rename(filepath.Join(linux, s2.File), filepath.Join(linux, "sluice-0002+2-1.efi"))
	cur, _ := Parse("sluice-0002+2-1.efi")
	if _, err := esp.MarkGood(cur); err != nil {
		t.Fatal(err)
	}
	// Then 3 is installed from 2: 1 goes.
	running, _ = Parse("sluice-0002.efi")
	if _, err := esp.Install(fakeUKI, running); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"sluice-0002.efi", "sluice-0003+3.efi"}, files(t, linux)); diff != "" {
		t.Errorf("after installing 3 (-want +got):\n%s", diff)
	}
	// 3 fails every try and 2 boots again; installing 4 from 2 replaces 3.
	os.Rename(filepath.Join(linux, "sluice-0003+3.efi"), filepath.Join(linux, "sluice-0003+0-3.efi"))
	if _, err := esp.Install(fakeUKI, running); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"sluice-0002.efi", "sluice-0004+3.efi"}, files(t, linux)); diff != "" {
		t.Errorf("after installing 4 (-want +got):\n%s", diff)
	}
	if _, err := esp.Install([]byte("#!/bin/sh\n"), running); err == nil {
		t.Error("Install accepted something that is not an EFI program")
	}
}

func TestCurrent(t *testing.T) {
	esp := ESP{Dir: t.TempDir()}
	linux := filepath.Join(esp.Dir, "EFI", "Linux")
	os.MkdirAll(linux, 0o755)
	os.WriteFile(filepath.Join(linux, "sluice-0001.efi"), fakeUKI, 0o644)
	os.WriteFile(filepath.Join(linux, "sluice-0002+2-1.efi"), fakeUKI, 0o644)
	vars := t.TempDir()
	if _, ok, _ := esp.Current(vars); ok {
		t.Error("Current without LoaderEntrySelected found a slot")
	}
	// The variable: attributes, then the entry ID in UTF-16LE with a NUL.
	b := []byte{7, 0, 0, 0}
	for _, c := range utf16.Encode([]rune("sluice-0002.efi\x00")) {
		b = append(b, byte(c), byte(c>>8))
	}
	os.WriteFile(filepath.Join(vars, "LoaderEntrySelected-"+loaderVendor), b, 0o644)
	got, ok, err := esp.Current(vars)
	if err != nil || !ok || got.File != "sluice-0002+2-1.efi" {
		t.Errorf("Current = %+v %v %v, want slot 2 on trial", got, ok, err)
	}
}
