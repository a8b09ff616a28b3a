// Package fat writes FAT32 file system images.
//
// The appliance's EFI system partition is FAT32, and the image is built
// without root, loop devices or mounting; Write lays the file system out in
// memory and writes it through an io.WriterAt, so the same files give the
// same bytes.
package fat

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// File is one regular file of a volume.
type File struct {
	// Path is slash-separated and relative to the root, such as
	// "EFI/BOOT/BOOTX64.EFI". Directories are created for every element
	// but the last. Names keep their case: a name that is not an
	// upper-case 8.3 name is stored as a long (VFAT) name.
	Path string
	// Data is the file's content. Write only reads it.
	Data []byte
}

const (
	sectorSize      = 512
	reservedSectors = 32
	numFATs         = 2
	fsInfoSector    = 1
	backupBoot      = 6
	rootCluster     = 2
	dirEntrySize    = 32

	// minClusters is the fewest data clusters a FAT32 volume may have:
	// with fewer, readers that follow the specification take it for FAT16.
	minClusters = 65525
	// maxClusters keeps the highest cluster number below 0x0FFFFFF7, the
	// bad cluster mark.
	maxClusters = 0x0FFFFFF5 - 2

	endOfChain = 0x0FFFFFFF

	attrVolumeID  = 0x08
	attrDirectory = 0x10
	attrArchive   = 0x20
	attrLongName  = 0x0F

	// fixedDate is 1980-01-01, the first date FAT can hold, stamped on
	// every entry (with time 00:00:00) so that output does not depend on
	// the clock.
	fixedDate = 1<<5 | 1

	maxLongName = 255 // UTF-16 code units
)

// geometry is where a volume's regions lie, in sectors.
type geometry struct {
	totalSectors      int64
	sectorsPerCluster int64
	fatSectors        int64 // per FAT
	clusters          int64 // data clusters, numbered 2 to clusters+1
}

func (g geometry) clusterBytes() int64 { return g.sectorsPerCluster * sectorSize }

// clusterOffset returns the byte offset of data cluster c.
func (g geometry) clusterOffset(c uint32) int64 {
	dataStart := (reservedSectors + numFATs*g.fatSectors) * sectorSize
	return dataStart + int64(c-2)*g.clusterBytes()
}

// fit returns the geometry of a volume of total sectors with
// sectorsPerCluster and the smallest FATs that cover the clusters that
// remain.
func fit(total, sectorsPerCluster int64) geometry {
	clusters := func(fatSectors int64) int64 {
		return max(0, (total-reservedSectors-numFATs*fatSectors)/sectorsPerCluster)
	}
	covers := func(fatSectors int64) bool {
		return (clusters(fatSectors)+2)*4 <= fatSectors*sectorSize
	}
	// covers is false then true as fatSectors grows, since clusters
	// shrinks; search for the first true.
	lo, hi := int64(0), ceilDiv((clusters(0)+2)*4, sectorSize)
	for lo < hi {
		mid := lo + (hi-lo)/2
		if covers(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return geometry{total, sectorsPerCluster, lo, clusters(lo)}
}

// MinSize returns the size of the smallest volume Write accepts, about
// 32.5 MiB: just enough 512-byte clusters for FAT32. Larger volumes get
// larger clusters, up to 4 KiB.
func MinSize() int64 {
	total := int64(reservedSectors + minClusters)
	for fit(total, 1).clusters < minClusters {
		total++
	}
	return total * sectorSize
}

// newGeometry chooses the cluster size for a volume of size bytes: 4 KiB
// when that leaves enough clusters for FAT32, else the largest smaller size
// that does.
func newGeometry(size int64) (geometry, error) {
	if size%sectorSize != 0 {
		return geometry{}, fmt.Errorf("size %d is not a multiple of %d-byte sectors", size, sectorSize)
	}
	if minSize := MinSize(); size < minSize {
		return geometry{}, fmt.Errorf("size %d is too small: FAT32 needs at least %d clusters, so at least %d bytes", size, minClusters, minSize)
	}
	total := size / sectorSize
	if total > 0xFFFFFFFF {
		return geometry{}, fmt.Errorf("size %d is too large: at most %d sectors", size, uint32(0xFFFFFFFF))
	}
	for _, spc := range []int64{8, 4, 2, 1} {
		g := fit(total, spc)
		if g.clusters >= minClusters && g.clusters <= maxClusters {
			return g, nil
		}
	}
	return geometry{}, fmt.Errorf("size %d: no cluster size of 512 bytes to 4 KiB gives between %d and %d clusters", size, minClusters, maxClusters)
}

// node is a file or directory of the tree Write lays out.
type node struct {
	name     string // as given
	short    [11]byte
	long     bool // name needs long (VFAT) entries
	dir      bool
	data     []byte
	parent   *node
	children []*node
	byKey    map[string]*node // children by upper-cased name

	first    uint32 // first cluster; 0 for an empty file
	clusters int64
}

// Write writes a FAT32 file system of size bytes holding files to w at
// offset 0, with volume label label and serial number volumeID. The label
// is empty (none) or up to 11 upper-case letters, digits, spaces and
// characters of !#$%&'()-@^_`{}~. Size is a multiple of 512, at least
// MinSize. Write only reads files, and keeps neither it nor w.
//
// It writes the reserved sectors (boot sector, FSInfo and their backups),
// both FATs, every directory and every file, each file in consecutive
// clusters, and zero-fills the tail of every cluster it uses. Clusters left
// free are not written: w is expected to read as zeros there, as a new or
// sparse file does. Directory entries are sorted by name and stamped with
// a fixed date, so the same arguments give the same bytes.
func Write(w io.WriterAt, size int64, label string, volumeID uint32, files []File) error {
	if err := write(w, size, label, volumeID, files); err != nil {
		return fmt.Errorf("write FAT32 volume %q of %d bytes (%d files): %w", label, size, len(files), err)
	}
	return nil
}

func write(w io.WriterAt, size int64, label string, volumeID uint32, files []File) error {
	g, err := newGeometry(size)
	if err != nil {
		return err
	}
	vol, err := volumeLabel(label)
	if err != nil {
		return err
	}
	root, err := buildTree(files)
	if err != nil {
		return err
	}
	used, err := allocate(g, root, label != "")
	if err != nil {
		return err
	}

	if _, err := w.WriteAt(reserved(g, vol, volumeID, used), 0); err != nil {
		return fmt.Errorf("write reserved sectors: %w", err)
	}
	fat := fatTable(g, root)
	for i := range int64(numFATs) {
		off := (reservedSectors + i*g.fatSectors) * sectorSize
		if _, err := w.WriteAt(fat, off); err != nil {
			return fmt.Errorf("write FAT %d at %d: %w", i+1, off, err)
		}
	}
	return writeNodes(w, g, root, vol, label != "")
}

// volumeLabel returns label padded to 11 bytes, or "NO NAME" when it is
// empty.
func volumeLabel(label string) ([11]byte, error) {
	var b [11]byte
	if label == "" {
		label = "NO NAME"
	}
	if len(label) > len(b) {
		return b, fmt.Errorf("label %q is longer than %d characters", label, len(b))
	}
	for i := range len(label) {
		if c := label[i]; c != ' ' && !shortChar(c) {
			return b, fmt.Errorf("label %q: character %q is not an upper-case letter, digit, space or one of %s", label, c, shortPunct)
		}
	}
	copy(b[:], label)
	for i := len(label); i < len(b); i++ {
		b[i] = ' '
	}
	return b, nil
}

// buildTree checks the paths of files and returns the root of their tree,
// every directory's children sorted by name and given short names.
func buildTree(files []File) (*node, error) {
	root := &node{dir: true, byKey: map[string]*node{}}
	for _, f := range files {
		elems, err := splitPath(f.Path)
		if err != nil {
			return nil, err
		}
		dir := root
		for i, name := range elems {
			key := strings.ToUpper(name)
			last := i == len(elems)-1
			child, ok := dir.byKey[key]
			switch {
			case ok && last:
				return nil, fmt.Errorf("path %q: %s already exists (names are compared without case)", f.Path, strings.Join(elems[:i+1], "/"))
			case ok && !child.dir:
				return nil, fmt.Errorf("path %q: %s is a file", f.Path, strings.Join(elems[:i+1], "/"))
			case ok:
				dir = child
				continue
			}
			if last && int64(len(f.Data)) > 0xFFFFFFFF {
				return nil, fmt.Errorf("path %q: %d bytes is more than a FAT32 file holds", f.Path, len(f.Data))
			}
			child = &node{name: name, parent: dir, dir: !last}
			if last {
				child.data = f.Data
			} else {
				child.byKey = map[string]*node{}
			}
			dir.byKey[key] = child
			dir.children = append(dir.children, child)
			dir = child
		}
	}
	var name func(*node) error
	name = func(d *node) error {
		slices.SortFunc(d.children, func(a, b *node) int { return strings.Compare(a.name, b.name) })
		if err := shortNames(d); err != nil {
			return err
		}
		for _, c := range d.children {
			if c.dir {
				if err := name(c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return root, name(root)
}

// splitPath checks path and returns its elements.
func splitPath(path string) ([]string, error) {
	if path == "" {
		return nil, fmt.Errorf("empty path")
	}
	if !utf8.ValidString(path) {
		return nil, fmt.Errorf("path %q is not UTF-8", path)
	}
	elems := strings.Split(path, "/")
	for _, e := range elems {
		if err := checkName(e); err != nil {
			return nil, fmt.Errorf("path %q: %w", path, err)
		}
	}
	return elems, nil
}

// checkName reports whether name may be a long file name.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty element (leading, trailing or double slash)")
	case name == "." || name == "..":
		return fmt.Errorf("element %q", name)
	case strings.HasPrefix(name, " ") || strings.HasSuffix(name, " ") || strings.HasSuffix(name, "."):
		return fmt.Errorf("name %q starts or ends with a space or ends with a dot", name)
	case len(utf16.Encode([]rune(name))) > maxLongName:
		return fmt.Errorf("name %q is longer than %d UTF-16 units", name, maxLongName)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7F || strings.ContainsRune(`"*/:<>?\|`, r) {
			return fmt.Errorf("name %q holds %q, which FAT does not allow", name, r)
		}
	}
	return nil
}

// shortPunct are the punctuation characters short names may hold.
const shortPunct = "!#$%&'()-@^_`{}~"

// shortChar reports whether c may appear in a short name.
func shortChar(c byte) bool {
	return 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(shortPunct, c) >= 0
}

// plainShort returns name as a short name when it is a valid upper-case
// 8.3 name.
func plainShort(name string) ([11]byte, bool) {
	var s [11]byte
	base, ext, hasExt := strings.Cut(name, ".")
	if len(base) < 1 || len(base) > 8 || len(ext) > 3 || hasExt && ext == "" {
		return s, false
	}
	for i := range len(name) {
		if c := name[i]; c != '.' && !shortChar(c) {
			return s, false
		}
	}
	for i := range s {
		s[i] = ' '
	}
	copy(s[:8], base)
	copy(s[8:], ext)
	return s, true
}

// shortNames gives the children of d their short names: an upper-case 8.3
// name is its own, and every other name gets a long name and a short
// alias unique in d, formed as Windows forms them ("sluice-a+3.efi" is
// SLUICE~1.EFI).
func shortNames(d *node) error {
	used := map[[11]byte]bool{}
	for _, c := range d.children {
		if s, ok := plainShort(c.name); ok {
			c.short = s
			used[s] = true
		} else {
			c.long = true
		}
	}
	for _, c := range d.children {
		if !c.long {
			continue
		}
		s, err := alias(c.name, used)
		if err != nil {
			return err
		}
		c.short = s
		used[s] = true
	}
	return nil
}

// alias returns a short name for long name name not in used.
func alias(name string, used map[[11]byte]bool) ([11]byte, error) {
	lossy := false
	clean := func(s string) string {
		var b strings.Builder
		for _, r := range s {
			switch {
			case r == ' ' || r == '.':
				lossy = true
			case r < utf8.RuneSelf && shortChar(byte(r)):
				b.WriteRune(r)
			case 'a' <= r && r <= 'z':
				b.WriteRune(r - 'a' + 'A')
			default:
				b.WriteByte('_')
				lossy = true
			}
		}
		return b.String()
	}
	trimmed := strings.TrimLeft(name, ".")
	if trimmed != name {
		lossy = true
	}
	base, ext := trimmed, ""
	if i := strings.LastIndexByte(trimmed, '.'); i >= 0 {
		base, ext = trimmed[:i], trimmed[i+1:]
	}
	base, ext = clean(base), clean(ext)
	if base == "" {
		base, lossy = "_", true
	}
	if len(ext) > 3 {
		ext, lossy = ext[:3], true
	}
	make83 := func(b string) [11]byte {
		var s [11]byte
		for i := range s {
			s[i] = ' '
		}
		copy(s[:8], b)
		copy(s[8:], ext)
		return s
	}
	if !lossy && len(base) <= 8 {
		if s := make83(base); !used[s] {
			return s, nil
		}
	}
	for n := 1; n <= 999999; n++ {
		tail := fmt.Sprintf("~%d", n)
		b := base
		if len(b) > 8-len(tail) {
			b = b[:8-len(tail)]
		}
		if s := make83(b + tail); !used[s] {
			return s, nil
		}
	}
	return [11]byte{}, fmt.Errorf("name %q: no free short name", name)
}

// entries returns how many directory entries d needs.
func entries(d *node, hasLabel bool) int64 {
	var n int64
	if d.parent == nil {
		if hasLabel {
			n++
		}
	} else {
		n += 2 // . and ..
	}
	for _, c := range d.children {
		n++
		if c.long {
			n += longEntries(c.name)
		}
	}
	return n
}

func longEntries(name string) int64 {
	return ceilDiv(int64(len(utf16.Encode([]rune(name)))), 13)
}

// allocate gives every directory, then every non-empty file, its clusters,
// the root directory first at cluster 2, and returns how many it used.
func allocate(g geometry, root *node, hasLabel bool) (int64, error) {
	var dirs, files []*node
	var walk func(*node)
	walk = func(d *node) {
		dirs = append(dirs, d)
		for _, c := range d.children {
			if c.dir {
				walk(c)
			} else {
				files = append(files, c)
			}
		}
	}
	walk(root)
	next := int64(rootCluster)
	for _, d := range dirs {
		d.clusters = max(1, ceilDiv(entries(d, hasLabel)*dirEntrySize, g.clusterBytes()))
		d.first = uint32(next)
		next += d.clusters
	}
	for _, f := range files {
		if len(f.data) == 0 {
			continue
		}
		f.clusters = ceilDiv(int64(len(f.data)), g.clusterBytes())
		f.first = uint32(next) // fits: next is checked against g.clusters below
		next += f.clusters
	}
	if used := next - rootCluster; used > g.clusters {
		return 0, fmt.Errorf("files and directories need %d clusters of %d bytes, the volume has %d", used, g.clusterBytes(), g.clusters)
	}
	return next - rootCluster, nil
}

// reserved returns the reserved sectors: boot sector, FSInfo, and their
// backups at sectors 6 and 7.
func reserved(g geometry, label [11]byte, volumeID uint32, used int64) []byte {
	buf := make([]byte, reservedSectors*sectorSize)
	boot := buf[:sectorSize]
	copy(boot[0:], []byte{0xEB, 0x58, 0x90}) // jump over the BPB
	copy(boot[3:11], "MSWIN4.1")
	le := binary.LittleEndian
	le.PutUint16(boot[11:], sectorSize)
	boot[13] = byte(g.sectorsPerCluster)
	le.PutUint16(boot[14:], reservedSectors)
	boot[16] = numFATs
	boot[21] = 0xF8              // fixed disk
	le.PutUint16(boot[24:], 63)  // sectors per track
	le.PutUint16(boot[26:], 255) // heads
	le.PutUint32(boot[32:], uint32(g.totalSectors))
	le.PutUint32(boot[36:], uint32(g.fatSectors))
	le.PutUint32(boot[44:], rootCluster)
	le.PutUint16(boot[48:], fsInfoSector)
	le.PutUint16(boot[50:], backupBoot)
	boot[64] = 0x80 // drive number
	boot[66] = 0x29 // extended boot signature: the next three fields are valid
	le.PutUint32(boot[67:], volumeID)
	copy(boot[71:82], label[:])
	copy(boot[82:90], "FAT32   ")
	// Boot code, reached by the jump: the volume is not bootable from
	// BIOS, so it halts.
	copy(boot[0x5A:], []byte{0xFA, 0xF4, 0xEB, 0xFD}) // cli; hlt; jmp hlt
	boot[510], boot[511] = 0x55, 0xAA

	info := buf[fsInfoSector*sectorSize:][:sectorSize]
	le.PutUint32(info[0:], 0x41615252)
	le.PutUint32(info[484:], 0x61417272)
	free := g.clusters - used
	le.PutUint32(info[488:], uint32(free))
	nextFree := uint32(0xFFFFFFFF)
	if free > 0 {
		nextFree = uint32(rootCluster + used)
	}
	le.PutUint32(info[492:], nextFree)
	le.PutUint32(info[508:], 0xAA550000)

	copy(buf[backupBoot*sectorSize:], buf[:2*sectorSize])
	return buf
}

// fatTable returns one FAT: the chains of the clusters allocate gave out,
// every other cluster free.
func fatTable(g geometry, root *node) []byte {
	fat := make([]byte, g.fatSectors*sectorSize)
	le := binary.LittleEndian
	le.PutUint32(fat[0:], 0x0FFFFFF8) // media byte
	le.PutUint32(fat[4:], endOfChain) // clean, no I/O errors
	var walk func(*node)
	walk = func(n *node) {
		for i := range n.clusters {
			c := int64(n.first) + i
			v := uint32(c + 1)
			if i == n.clusters-1 {
				v = endOfChain
			}
			le.PutUint32(fat[c*4:], v)
		}
		for _, c := range n.children {
			walk(c)
		}
	}
	walk(root)
	return fat
}

// shortEntry fills the 32-byte directory entry e.
func shortEntry(e []byte, name [11]byte, attr byte, first uint32, size uint32) {
	le := binary.LittleEndian
	copy(e[0:11], name[:])
	e[11] = attr
	le.PutUint16(e[16:], fixedDate) // created
	le.PutUint16(e[18:], fixedDate) // accessed
	le.PutUint16(e[20:], uint16(first>>16))
	le.PutUint16(e[24:], fixedDate) // written
	le.PutUint16(e[26:], uint16(first))
	le.PutUint32(e[28:], size)
}

// checksum is the checksum of a short name that long name entries carry.
func checksum(name [11]byte) byte {
	var sum byte
	for _, c := range name {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// longEntry offsets of the 13 UTF-16 units of a long name entry.
var longOffsets = [13]int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30}

// appendLong appends the long name entries of name, last part first, for
// the short name short.
func appendLong(dir []byte, name string, short [11]byte) []byte {
	units := utf16.Encode([]rune(name))
	n := int(longEntries(name))
	sum := checksum(short)
	for seq := n; seq >= 1; seq-- {
		var e [dirEntrySize]byte
		e[0] = byte(seq)
		if seq == n {
			e[0] |= 0x40
		}
		e[11] = attrLongName
		e[13] = sum
		for i, off := range longOffsets {
			u := uint16(0xFFFF)
			switch k := (seq-1)*13 + i; {
			case k < len(units):
				u = units[k]
			case k == len(units):
				u = 0
			}
			binary.LittleEndian.PutUint16(e[off:], u)
		}
		dir = append(dir, e[:]...)
	}
	return dir
}

// writeNodes writes every directory and file under root.
func writeNodes(w io.WriterAt, g geometry, root *node, label [11]byte, hasLabel bool) error {
	var walk func(*node) error
	walk = func(n *node) error {
		if !n.dir {
			return writeFile(w, g, n)
		}
		buf := make([]byte, 0, n.clusters*g.clusterBytes())
		var e [dirEntrySize]byte
		if n.parent == nil {
			if hasLabel {
				shortEntry(e[:], label, attrVolumeID, 0, 0)
				buf = append(buf, e[:]...)
			}
		} else {
			shortEntry(e[:], [11]byte{'.', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '}, attrDirectory, n.first, 0)
			buf = append(buf, e[:]...)
			parent := n.parent.first
			if n.parent.parent == nil {
				parent = 0 // ".." of a directory in the root names cluster 0
			}
			shortEntry(e[:], [11]byte{'.', '.', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '}, attrDirectory, parent, 0)
			buf = append(buf, e[:]...)
		}
		for _, c := range n.children {
			if c.long {
				buf = appendLong(buf, c.name, c.short)
			}
			attr, size := byte(attrArchive), uint32(len(c.data))
			if c.dir {
				attr, size = attrDirectory, 0
			}
			shortEntry(e[:], c.short, attr, c.first, size)
			buf = append(buf, e[:]...)
		}
		buf = buf[:cap(buf)] // zeros: the end of the directory
		off := g.clusterOffset(n.first)
		if _, err := w.WriteAt(buf, off); err != nil {
			return fmt.Errorf("write directory %q at %d: %w", n.name, off, err)
		}
		for _, c := range n.children {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(root)
}

// writeFile writes the content of file f and zeros to the end of its last
// cluster.
func writeFile(w io.WriterAt, g geometry, f *node) error {
	if f.clusters == 0 {
		return nil // an empty file has no clusters
	}
	off := g.clusterOffset(f.first)
	if _, err := w.WriteAt(f.data, off); err != nil {
		return fmt.Errorf("write file %q (%d bytes) at %d: %w", f.name, len(f.data), off, err)
	}
	if pad := f.clusters*g.clusterBytes() - int64(len(f.data)); pad > 0 {
		if _, err := w.WriteAt(make([]byte, pad), off+int64(len(f.data))); err != nil {
			return fmt.Errorf("write the end of file %q at %d: %w", f.name, off+int64(len(f.data)), err)
		}
	}
	return nil
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
