// Package slot manages the appliance's boot slots: unified kernel images in
// the EFI system partition's EFI/Linux directory, tried and counted by
// systemd-boot, of which the running one marks itself good once healthy.
//
// A slot is a file sluice-NNNN.efi, where NNNN is its generation. While on
// trial it carries systemd-boot's counter, sluice-NNNN+LEFT-DONE.efi:
// systemd-boot boots the newest generation first, moves one try from LEFT
// to DONE at every boot, and sorts an entry with no tries left after the
// good ones, so a new slot that never becomes healthy gives way to the
// previous one by itself. The running system makes its slot permanent by
// dropping the counter. At most two slots are kept: the one running and the
// one being installed (A and B).
package slot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
)

// Tries is how many boots a new slot gets to become healthy.
const Tries = 3

// Slot is one boot slot.
type Slot struct {
	Gen   int    // generation: higher is newer
	File  string // file name in EFI/Linux
	Left  int    // tries left; -1 for a good slot (no counter)
	Done  int    // tries used
	Trial bool   // the name has a counter: not yet marked good
}

// String is the slot as the status shows it, such as "2 (on trial, 2 tries
// left)" or "1".
func (s Slot) String() string {
	if !s.Trial {
		return strconv.Itoa(s.Gen)
	}
	return fmt.Sprintf("%d (on trial, %d tries left)", s.Gen, s.Left)
}

var nameRE = regexp.MustCompile(`^sluice-(\d{4,})(?:\+(\d+)(?:-(\d+))?)?\.efi$`)

// Parse reads a slot's file name; ok is false for other files.
func Parse(name string) (s Slot, ok bool) {
	m := nameRE.FindStringSubmatch(name)
	if m == nil {
		return s, false
	}
	s.Gen, _ = strconv.Atoi(m[1])
	s.File, s.Left = name, -1
	if m[2] != "" {
		s.Trial = true
		s.Left, _ = strconv.Atoi(m[2])
		s.Done, _ = strconv.Atoi(m[3])
	}
	return s, true
}

// Name is the file name of generation gen: good when tries < 0, else on
// trial with that many tries.
func Name(gen, tries int) string {
	if tries < 0 {
		return fmt.Sprintf("sluice-%04d.efi", gen)
	}
	return fmt.Sprintf("sluice-%04d+%d.efi", gen, tries)
}

// ESP is an EFI system partition mounted at Dir. Its methods are not safe
// for concurrent use.
type ESP struct {
	Dir string
}

func (e ESP) linux() string { return filepath.Join(e.Dir, "EFI", "Linux") }

// Slots lists the slots, newest first.
func (e ESP) Slots() ([]Slot, error) {
	ents, err := os.ReadDir(e.linux())
	if err != nil {
		return nil, fmt.Errorf("slots: %w", err)
	}
	var out []Slot
	for _, d := range ents {
		if s, ok := Parse(d.Name()); ok {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b Slot) int { return b.Gen - a.Gen })
	return out, nil
}

// Current returns the slot that booted, from systemd-boot's
// LoaderEntrySelected (its entry ID, which is the file name without the
// counter), read from efivars. ok is false when the machine was not booted
// by systemd-boot from a slot (a kernel booted directly, for example).
func (e ESP) Current(efivars string) (Slot, bool, error) {
	id, err := loaderEntrySelected(efivars)
	if err != nil || id == "" {
		return Slot{}, false, nil
	}
	want, ok := Parse(id)
	if !ok {
		// The ID may keep the counter in some versions; Parse it
		// either way and match by generation.
		return Slot{}, false, nil
	}
	slots, err := e.Slots()
	if err != nil {
		return Slot{}, false, err
	}
	for _, s := range slots {
		if s.Gen == want.Gen {
			return s, true, nil
		}
	}
	return Slot{}, false, nil
}

// loaderVendor is the vendor GUID of systemd-boot's variables.
const loaderVendor = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// loaderEntrySelected reads the LoaderEntrySelected variable: four bytes
// of attributes, then a NUL-terminated UTF-16LE string.
func loaderEntrySelected(efivars string) (string, error) {
	b, err := os.ReadFile(filepath.Join(efivars, "LoaderEntrySelected-"+loaderVendor))
	if err != nil {
		return "", err
	}
	if len(b) < 4 {
		return "", errors.New("LoaderEntrySelected: too short")
	}
	b = b[4:]
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := uint16(b[i]) | uint16(b[i+1])<<8
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u)), nil
}

// MarkGood makes s permanent by dropping its counter. A good slot is left
// alone.
func (e ESP) MarkGood(s Slot) (Slot, error) {
	if !s.Trial {
		return s, nil
	}
	good := Name(s.Gen, -1)
	if err := os.Rename(filepath.Join(e.linux(), s.File), filepath.Join(e.linux(), good)); err != nil {
		return s, fmt.Errorf("mark slot %d good: %w", s.Gen, err)
	}
	if err := syncDir(e.linux()); err != nil {
		return s, fmt.Errorf("mark slot %d good: %w", s.Gen, err)
	}
	s.File, s.Trial, s.Left, s.Done = good, false, -1, 0
	return s, nil
}

// Install writes a unified kernel image as the next generation, on trial
// with Tries boots, and removes every slot but running and the new one, so
// that the partition holds two. running is the slot that booted (zero
// Slot when unknown: then the newest good slot is kept).
func (e ESP) Install(uki []byte, running Slot) (Slot, error) {
	if err := Check(uki); err != nil {
		return Slot{}, err
	}
	slots, err := e.Slots()
	if err != nil {
		return Slot{}, err
	}
	keep := running.Gen
	if keep == 0 {
		for _, s := range slots {
			if !s.Trial {
				keep = s.Gen
				break
			}
		}
	}
	gen := 1
	if len(slots) > 0 {
		gen = slots[0].Gen + 1
	}
	// Make room first: the partition holds about three images.
	for _, s := range slots {
		if s.Gen != keep {
			if err := os.Remove(filepath.Join(e.linux(), s.File)); err != nil {
				return Slot{}, fmt.Errorf("install: remove old slot %d: %w", s.Gen, err)
			}
		}
	}
	tmp := filepath.Join(e.linux(), "new.tmp")
	if err := writeSync(tmp, uki); err != nil {
		os.Remove(tmp)
		return Slot{}, fmt.Errorf("install: %w", err)
	}
	name := Name(gen, Tries)
	if err := os.Rename(tmp, filepath.Join(e.linux(), name)); err != nil {
		os.Remove(tmp)
		return Slot{}, fmt.Errorf("install: %w", err)
	}
	if err := syncDir(e.linux()); err != nil {
		return Slot{}, fmt.Errorf("install: %w", err)
	}
	s, _ := Parse(name)
	return s, nil
}

// Check makes sure b looks like a unified kernel image: a PE file with a
// .linux section.
func Check(b []byte) error {
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return errors.New("not an EFI program (no MZ header): want the image's sluice.efi")
	}
	if !bytes.Contains(b[:min(len(b), 4096)], []byte(".linux")) {
		return errors.New("an EFI program without a .linux section: want the image's sluice.efi")
	}
	return nil
}

func writeSync(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !strings.Contains(err.Error(), "invalid argument") {
		return err
	}
	return nil
}
