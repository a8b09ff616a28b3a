// Package gpt writes GUID partition tables.
//
// The appliance image is a GPT disk built without root or loop devices;
// Write puts the protective MBR and both copies of the table on a disk
// image, and the caller writes each partition's contents into its range.
package gpt

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strings"
	"unicode/utf16"
)

// GUID is a GUID as GPT stores it: the first three fields little-endian,
// the last two as written.
type GUID [16]byte

// Partition type GUIDs.
var (
	// EFISystem is the type of an EFI system partition (sgdisk EF00).
	EFISystem = MustParseGUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
	// LinuxFilesystem is the type of a Linux file system partition (sgdisk 8300).
	LinuxFilesystem = MustParseGUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
)

// ParseGUID parses the textual form of a GUID,
// "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", in either case.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("parse GUID %q: not of the form XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX", s)
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil {
		return g, fmt.Errorf("parse GUID %q: %w", s, err)
	}
	copy(g[:], b)
	g.swap()
	return g, nil
}

// MustParseGUID is ParseGUID for constants; it panics if s is not a GUID.
func MustParseGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// swap converts between the written byte order and GPT's: it reverses the
// first three fields.
func (g *GUID) swap() {
	slices.Reverse(g[0:4])
	slices.Reverse(g[4:6])
	slices.Reverse(g[6:8])
}

// String returns the textual form of g in upper case, as sgdisk prints it.
func (g GUID) String() string {
	w := g
	w.swap()
	h := strings.ToUpper(hex.EncodeToString(w[:]))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// GUIDFromSeed derives a GUID from seed: the first 16 bytes of its SHA-256
// hash, with the version and variant bits of a random (version 4) GUID.
// The same seed gives the same GUID, so an image built twice is the same.
func GUIDFromSeed(seed string) GUID {
	sum := sha256.Sum256([]byte(seed))
	var g GUID
	copy(g[:], sum[:])
	g[7] = g[7]&0x0F | 0x40 // version 4: high nibble of the third field, stored little-endian
	g[8] = g[8]&0x3F | 0x80 // variant 10
	return g
}

// Partition is one entry of a partition table.
type Partition struct {
	// Name is the partition label, at most 36 UTF-16 units.
	Name string
	// Type is the partition type, such as EFISystem; GUID identifies the
	// partition and must be unique on the disk.
	Type, GUID GUID
	// Start and Size are in bytes, multiples of 512. Layout aligns starts
	// to 1 MiB.
	Start, Size int64
	// Attributes are the entry's attribute bits; 0 for none.
	Attributes uint64
}

const (
	sectorSize  = 512
	numEntries  = 128
	entrySize   = 128
	headerSize  = 92
	entrySects  = numEntries * entrySize / sectorSize // 32
	firstUsable = 2 + entrySects                      // 34
	maxNameLen  = 36                                  // UTF-16 units
	// Align is the alignment Layout gives partition starts.
	Align = 1 << 20
)

// bounds returns the last LBA and the last usable LBA of a disk
// of diskSize bytes.
func bounds(diskSize int64) (last, lastUsable int64) {
	last = diskSize/sectorSize - 1
	return last, last - 1 - entrySects
}

// Write writes to w a protective MBR at LBA 0, the primary GPT header at
// LBA 1 with its 128 entries from LBA 2, and the backup entries and header
// in the last 33 sectors of a disk of diskSize bytes. It writes only these
// areas, whole sectors, and leaves the partitions' contents to the caller.
// Entries are in the order of parts, numbered from 1.
func Write(w io.WriterAt, diskSize int64, diskGUID GUID, parts []Partition) error {
	if err := check(diskSize, diskGUID, parts); err != nil {
		return fmt.Errorf("write GPT on %d bytes (%d partitions): %w", diskSize, len(parts), err)
	}
	last, lastUsable := bounds(diskSize)
	le := binary.LittleEndian

	entries := make([]byte, entrySects*sectorSize)
	for i, p := range parts {
		e := entries[i*entrySize:][:entrySize]
		copy(e[0:], p.Type[:])
		copy(e[16:], p.GUID[:])
		le.PutUint64(e[32:], uint64(p.Start/sectorSize))
		le.PutUint64(e[40:], uint64((p.Start+p.Size)/sectorSize-1))
		le.PutUint64(e[48:], p.Attributes)
		for j, u := range utf16.Encode([]rune(p.Name)) {
			le.PutUint16(e[56+2*j:], u)
		}
	}
	entriesCRC := crc32.ChecksumIEEE(entries)

	header := func(my, alternate, entriesLBA int64) []byte {
		h := make([]byte, sectorSize)
		copy(h[0:], "EFI PART")
		le.PutUint32(h[8:], 0x00010000) // revision 1.0
		le.PutUint32(h[12:], headerSize)
		le.PutUint64(h[24:], uint64(my))
		le.PutUint64(h[32:], uint64(alternate))
		le.PutUint64(h[40:], firstUsable)
		le.PutUint64(h[48:], uint64(lastUsable))
		copy(h[56:], diskGUID[:])
		le.PutUint64(h[72:], uint64(entriesLBA))
		le.PutUint32(h[80:], numEntries)
		le.PutUint32(h[84:], entrySize)
		le.PutUint32(h[88:], entriesCRC)
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:headerSize]))
		return h
	}

	primary := make([]byte, 0, firstUsable*sectorSize)
	primary = append(primary, protectiveMBR(last)...)
	primary = append(primary, header(1, last, 2)...)
	primary = append(primary, entries...)
	if _, err := w.WriteAt(primary, 0); err != nil {
		return fmt.Errorf("write primary GPT: %w", err)
	}
	backup := slices.Concat(entries, header(last, 1, last-entrySects))
	off := (last - entrySects) * sectorSize
	if _, err := w.WriteAt(backup, off); err != nil {
		return fmt.Errorf("write backup GPT at %d: %w", off, err)
	}
	return nil
}

// protectiveMBR returns LBA 0: one partition of type 0xEE covering the
// disk from LBA 1, or as much of it as 32 bits count.
func protectiveMBR(last int64) []byte {
	le := binary.LittleEndian
	mbr := make([]byte, sectorSize)
	p := mbr[446:][:16]
	copy(p[1:4], []byte{0x00, 0x02, 0x00}) // CHS of LBA 1
	p[4] = 0xEE
	copy(p[5:8], []byte{0xFF, 0xFF, 0xFF}) // CHS beyond reach
	le.PutUint32(p[8:], 1)
	le.PutUint32(p[12:], uint32(min(last, 0xFFFFFFFF)))
	mbr[510], mbr[511] = 0x55, 0xAA
	return mbr
}

// check reports the first reason the table cannot be written.
func check(diskSize int64, diskGUID GUID, parts []Partition) error {
	if diskSize%sectorSize != 0 {
		return fmt.Errorf("disk size %d is not a multiple of %d", diskSize, sectorSize)
	}
	_, lastUsable := bounds(diskSize)
	if lastUsable < firstUsable {
		return fmt.Errorf("disk size %d is too small for the two tables (%d bytes)", diskSize, (2*entrySects+3)*sectorSize)
	}
	if diskGUID == (GUID{}) {
		return fmt.Errorf("disk GUID is zero")
	}
	if len(parts) > numEntries {
		return fmt.Errorf("%d partitions, at most %d", len(parts), numEntries)
	}
	for i, p := range parts {
		what := fmt.Sprintf("partition %d (%q)", i+1, p.Name)
		switch {
		case p.Type == (GUID{}):
			return fmt.Errorf("%s: zero type GUID marks an unused entry", what)
		case p.GUID == (GUID{}):
			return fmt.Errorf("%s: zero GUID", what)
		case p.Start%sectorSize != 0 || p.Size%sectorSize != 0:
			return fmt.Errorf("%s: start %d or size %d is not a multiple of %d", what, p.Start, p.Size, sectorSize)
		case p.Size <= 0:
			return fmt.Errorf("%s: size %d is not positive", what, p.Size)
		case p.Start < firstUsable*sectorSize || p.Size > diskSize || (p.Start+p.Size)/sectorSize-1 > lastUsable:
			return fmt.Errorf("%s: bytes %d to %d are outside the usable range %d to %d", what,
				p.Start, p.Start+p.Size, firstUsable*sectorSize, (lastUsable+1)*sectorSize)
		case len(utf16.Encode([]rune(p.Name))) > maxNameLen:
			return fmt.Errorf("%s: name is longer than %d UTF-16 units", what, maxNameLen)
		}
		for j, q := range parts[:i] {
			if p.Start < q.Start+q.Size && q.Start < p.Start+p.Size {
				return fmt.Errorf("%s (bytes %d to %d) overlaps partition %d (%q, bytes %d to %d)", what,
					p.Start, p.Start+p.Size, j+1, q.Name, q.Start, q.Start+q.Size)
			}
			if p.GUID == q.GUID {
				return fmt.Errorf("%s has the GUID %s of partition %d (%q)", what, p.GUID, j+1, q.Name)
			}
		}
	}
	return nil
}

// Layout returns parts with their starts set one after another, each at the
// next multiple of Align, from the first. A Size of 0 on the last partition
// takes the rest of the usable space, rounded down to a multiple of Align.
func Layout(diskSize int64, parts []Partition) ([]Partition, error) {
	out := slices.Clone(parts)
	_, lastUsable := bounds(diskSize)
	end := (lastUsable + 1) * sectorSize
	next := int64(firstUsable * sectorSize)
	for i := range out {
		p := &out[i]
		p.Start = ceilTo(next, Align)
		if p.Size == 0 && i == len(out)-1 {
			p.Size = (end - p.Start) / Align * Align
			if p.Size <= 0 {
				return nil, fmt.Errorf("lay out %d partitions on %d bytes: no room left for partition %d (%q)", len(parts), diskSize, i+1, p.Name)
			}
		}
		next = p.Start + p.Size
	}
	if next > end {
		return nil, fmt.Errorf("lay out %d partitions on %d bytes: they need %d bytes to the end of the last, the usable space ends at %d", len(parts), diskSize, next, end)
	}
	return out, nil
}

func ceilTo(n, align int64) int64 { return (n + align - 1) / align * align }
