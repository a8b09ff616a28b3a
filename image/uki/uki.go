// Package uki builds the unified kernel image sluice boots on UEFI: systemd's EFI stub with the kernel, its command line and the initramfs added as PE sections.
package uki

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Section is a PE section to add to the stub, such as ".osrel",
// ".cmdline", ".linux" or ".initrd".
type Section struct {
	Name string // at most 8 bytes
	Data []byte
}

// Offsets into the PE32+ headers.
const (
	peSignature   = "PE\x00\x00"
	coffSize      = 20 // COFF file header, after the signature
	sectionHeader = 40
	pe32Plus      = 0x20b

	// In the COFF file header.
	coffNumberOfSections     = 2
	coffPointerToSymbolTable = 8
	coffSizeOfOptionalHeader = 16

	// In the PE32+ optional header.
	optSizeOfInitializedData = 8
	optSectionAlignment      = 32
	optFileAlignment         = 36
	optSizeOfImage           = 56
	optSizeOfHeaders         = 60
	optCheckSum              = 64
	optNumberOfRvaAndSizes   = 108
	optDataDirectories       = 112
	dirSecurity              = 4 // the certificate table, an Authenticode signature

	// In a section header.
	shVirtualSize      = 8
	shVirtualAddress   = 12
	shSizeOfRawData    = 16
	shPointerToRawData = 20
	shCharacteristics  = 36

	// characteristics of the added sections: initialized, read-only data.
	scnCntInitializedData = 0x00000040
	scnMemRead            = 0x40000000

	// pageSize is what the added sections' virtual addresses are aligned
	// to, at least; systemd-stub maps them as pages.
	pageSize = 4096
)

var le = binary.LittleEndian

// Build returns the stub with sections appended in the order given, as
// `objcopy --add-section NAME=FILE --change-section-vma NAME=VMA` would
// append them.
//
// The stub must be an unsigned PE32+ image with room in its headers for
// the new section headers. Each section's virtual address is the end of
// the one before it (the stub's last section, for the first) rounded up
// to 4096 bytes or the stub's SectionAlignment if larger; its file data
// starts at the end of the previous section's, padded to FileAlignment.
// sections must include ".linux", and ".initrd", if present, must come
// last. The stub's COFF symbol table, if it has
// one, moves to the end of the file.
//
// The header's NumberOfSections, SizeOfInitializedData, SizeOfImage,
// SizeOfHeaders if the section table outgrows it, and CheckSum are
// updated; TimeDateStamp is kept. The same inputs give the same bytes.
// Build does not modify stub or the sections' data.
func Build(stub []byte, sections []Section) ([]byte, error) {
	if err := checkSections(sections); err != nil {
		return nil, fmt.Errorf("uki build: %w", err)
	}
	img, err := parse(stub)
	if err != nil {
		return nil, fmt.Errorf("uki build: stub: %w", err)
	}
	for _, s := range sections {
		if img.names[s.Name] {
			return nil, fmt.Errorf("uki build: section %s is already in the stub", s.Name)
		}
	}
	out, err := img.extend(sections)
	if err != nil {
		return nil, fmt.Errorf("uki build: %w", err)
	}
	return out, nil
}

// checkSections checks the sections to add among themselves.
func checkSections(sections []Section) error {
	seen := map[string]bool{}
	for i, s := range sections {
		switch {
		case s.Name == "" || len(s.Name) > 8 || s.Name[0] != '.':
			return fmt.Errorf("section %q: want a name of 2 to 8 bytes starting with '.'", s.Name)
		case bytes.IndexByte([]byte(s.Name), 0) >= 0:
			return fmt.Errorf("section %q: name holds a NUL", s.Name)
		case seen[s.Name]:
			return fmt.Errorf("section %s given twice", s.Name)
		case len(s.Data) == 0:
			return fmt.Errorf("section %s is empty; leave it out instead", s.Name)
		case uint64(len(s.Data)) > math.MaxUint32:
			return fmt.Errorf("section %s: %d bytes do not fit a PE section", s.Name, len(s.Data))
		case s.Name == ".initrd" && i != len(sections)-1:
			return fmt.Errorf("section .initrd must be the last section, not number %d of %d", i+1, len(sections))
		}
		seen[s.Name] = true
	}
	if !seen[".linux"] {
		return errors.New("no .linux section")
	}
	return nil
}

// image is a parsed stub.
type image struct {
	b            []byte
	coff         int // offset of the COFF file header
	opt          int // offset of the optional header
	table        int // offset of the section table
	nsections    int
	sectionAlign uint32
	fileAlign    uint32
	names        map[string]bool

	vaEnd    uint64 // end of the highest section in memory
	rawEnd   uint64 // end of the last section data in the file
	rawStart uint64 // start of the first section data in the file
}

// parse reads the headers of a PE32+ image, checking every offset it
// uses against the length of b.
func parse(b []byte) (*image, error) {
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return nil, errors.New("not a PE image: no MZ header")
	}
	pe := uint64(le.Uint32(b[0x3c:]))
	if pe+4+coffSize > uint64(len(b)) || string(b[pe:pe+4]) != peSignature {
		return nil, fmt.Errorf("not a PE image: no PE signature at %#x", pe)
	}
	img := &image{b: b, coff: int(pe) + 4, names: map[string]bool{}}
	img.opt = img.coff + coffSize
	img.nsections = int(le.Uint16(b[img.coff+coffNumberOfSections:]))
	optSize := int(le.Uint16(b[img.coff+coffSizeOfOptionalHeader:]))
	img.table = img.opt + optSize
	if optSize < optDataDirectories || img.table > len(b) {
		return nil, fmt.Errorf("optional header of %d bytes is too short or past the end", optSize)
	}
	if magic := le.Uint16(b[img.opt:]); magic != pe32Plus {
		return nil, fmt.Errorf("optional header magic %#x, want PE32+ (%#x)", magic, pe32Plus)
	}
	if n := le.Uint32(b[img.opt+optNumberOfRvaAndSizes:]); n > dirSecurity && optDataDirectories+8*(dirSecurity+1) <= optSize {
		if size := le.Uint32(b[img.opt+optDataDirectories+8*dirSecurity+4:]); size != 0 {
			return nil, errors.New("stub is signed, and adding sections would break the signature; sign the built image instead")
		}
	}
	img.sectionAlign = le.Uint32(b[img.opt+optSectionAlignment:])
	img.fileAlign = le.Uint32(b[img.opt+optFileAlignment:])
	for _, a := range []uint32{img.sectionAlign, img.fileAlign} {
		if a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("alignment %#x is not a power of two", a)
		}
	}
	if img.nsections == 0 {
		return nil, errors.New("no sections")
	}
	if img.table+img.nsections*sectionHeader > len(b) {
		return nil, fmt.Errorf("section table of %d sections runs past the end", img.nsections)
	}
	img.vaEnd = uint64(le.Uint32(b[img.opt+optSizeOfImage:]))
	img.rawStart = math.MaxUint64
	for i := 0; i < img.nsections; i++ {
		sh := b[img.table+i*sectionHeader:]
		img.names[string(bytes.TrimRight(sh[:8], "\x00"))] = true
		va := uint64(le.Uint32(sh[shVirtualAddress:]))
		vsize := uint64(le.Uint32(sh[shVirtualSize:]))
		raw := uint64(le.Uint32(sh[shSizeOfRawData:]))
		ptr := uint64(le.Uint32(sh[shPointerToRawData:]))
		if vsize == 0 {
			vsize = raw
		}
		img.vaEnd = max(img.vaEnd, va+vsize)
		if raw == 0 {
			continue // no data in the file
		}
		if ptr+raw > uint64(len(b)) {
			return nil, fmt.Errorf("section %d data %#x+%#x runs past the end (%#x)", i, ptr, raw, len(b))
		}
		img.rawEnd = max(img.rawEnd, ptr+raw)
		img.rawStart = min(img.rawStart, ptr)
	}
	if img.rawEnd == 0 {
		return nil, errors.New("no section holds data")
	}
	if sym := uint64(le.Uint32(b[img.coff+coffPointerToSymbolTable:])); sym != 0 && sym < img.rawEnd {
		return nil, fmt.Errorf("symbol table at %#x lies before the end of the section data (%#x)", sym, img.rawEnd)
	}
	return img, nil
}

// extend returns the image with sections added.
func (img *image) extend(sections []Section) ([]byte, error) {
	b := img.b
	oldEnd := img.table + img.nsections*sectionHeader
	tableEnd := oldEnd + len(sections)*sectionHeader
	if uint64(tableEnd) > img.rawStart {
		return nil, fmt.Errorf("no room for %d more section headers: the table would end at %#x, where section data starts at %#x", len(sections), tableEnd, img.rawStart)
	}
	if !allZero(b[oldEnd:tableEnd]) {
		return nil, fmt.Errorf("no room for %d more section headers: bytes %#x-%#x after the section table are in use", len(sections), oldEnd, tableEnd)
	}
	sizeOfHeaders := uint64(le.Uint32(b[img.opt+optSizeOfHeaders:]))
	if uint64(tableEnd) > sizeOfHeaders {
		sizeOfHeaders = alignUp(uint64(tableEnd), uint64(img.fileAlign))
		if sizeOfHeaders > img.rawStart {
			return nil, fmt.Errorf("no room for %d more section headers: headers would end at %#x, after section data starts at %#x", len(sections), sizeOfHeaders, img.rawStart)
		}
	}

	// Lay the sections out in memory and in the file.
	type placed struct {
		va, ptr, raw uint64
	}
	layout := make([]placed, len(sections))
	vaAlign := uint64(max(pageSize, img.sectionAlign))
	fileAlign := uint64(img.fileAlign)
	va := img.vaEnd
	ptr := alignUp(img.rawEnd, fileAlign)
	var initialized uint64
	for i, s := range sections {
		va = alignUp(va, vaAlign)
		raw := alignUp(uint64(len(s.Data)), fileAlign)
		layout[i] = placed{va, ptr, raw}
		va += uint64(len(s.Data))
		ptr += raw
		initialized += raw
	}
	sizeOfImage := alignUp(va, uint64(img.sectionAlign))
	tail := b[img.rawEnd:] // the COFF symbol and string tables, if any
	size := ptr + uint64(len(tail))
	initialized += uint64(le.Uint32(b[img.opt+optSizeOfInitializedData:]))
	if sizeOfImage > math.MaxUint32 || ptr > math.MaxUint32 || initialized > math.MaxUint32 || size > math.MaxInt {
		return nil, fmt.Errorf("image of %d bytes (%d in memory) is too large for PE32+", size, sizeOfImage)
	}

	out := make([]byte, size)
	copy(out, b[:img.rawEnd])
	for i, s := range sections {
		copy(out[layout[i].ptr:], s.Data)
		sh := out[oldEnd+i*sectionHeader : oldEnd+(i+1)*sectionHeader]
		copy(sh, s.Name)
		le.PutUint32(sh[shVirtualSize:], uint32(len(s.Data)))
		le.PutUint32(sh[shVirtualAddress:], uint32(layout[i].va))
		le.PutUint32(sh[shSizeOfRawData:], uint32(layout[i].raw))
		le.PutUint32(sh[shPointerToRawData:], uint32(layout[i].ptr))
		le.PutUint32(sh[shCharacteristics:], scnCntInitializedData|scnMemRead)
	}
	copy(out[ptr:], tail)
	if sym := le.Uint32(b[img.coff+coffPointerToSymbolTable:]); sym != 0 {
		le.PutUint32(out[img.coff+coffPointerToSymbolTable:], uint32(uint64(sym)-img.rawEnd+ptr))
	}
	le.PutUint16(out[img.coff+coffNumberOfSections:], uint16(img.nsections+len(sections)))
	le.PutUint32(out[img.opt+optSizeOfInitializedData:], uint32(initialized))
	le.PutUint32(out[img.opt+optSizeOfImage:], uint32(sizeOfImage))
	le.PutUint32(out[img.opt+optSizeOfHeaders:], uint32(sizeOfHeaders))
	le.PutUint32(out[img.opt+optCheckSum:], 0)
	le.PutUint32(out[img.opt+optCheckSum:], checksum(out))
	return out, nil
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// checksum computes the PE image checksum of b, whose checksum field must
// be zero: the sum of its 16-bit words with the carries folded back in,
// plus its length.
func checksum(b []byte) uint32 {
	var sum uint64
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint64(le.Uint16(b[i:]))
		sum = (sum & 0xffff) + (sum >> 16)
	}
	if len(b)%2 == 1 {
		sum += uint64(b[len(b)-1])
		sum = (sum & 0xffff) + (sum >> 16)
	}
	sum = (sum & 0xffff) + (sum >> 16)
	return uint32(sum) + uint32(len(b))
}
