// Package cpio writes the deterministic newc archives the kernel unpacks as sluice's initramfs.
package cpio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// Unix file types and permission bits as the newc header spells them.
const (
	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
	modeSetuid  = 0o4000
	modeSetgid  = 0o2000
	modeSticky  = 0o1000
)

const (
	magic      = "070701"
	headerSize = 110
	trailer    = "TRAILER!!!"
	// blockSize is what Close pads the archive to, as gen_init_cpio and
	// GNU cpio do; the kernel skips the zeros.
	blockSize = 512
)

var errClosed = errors.New("archive closed")

// Writer writes a newc ("070701") archive in the order entries are added.
// Every entry has mtime 0, uid and gid 0, nlink 1 (2 for directories) and
// the next inode number, starting at 1, so the same calls give the same
// bytes. An entry's parent directory must have been added before it, as the
// kernel's unpacker creates no missing parents.
//
// A Writer keeps the first error it meets and returns it from every later
// call, Close included. It is not safe for concurrent use. The zero value is
// not usable; call NewWriter.
type Writer struct {
	w    io.Writer
	n    int64 // bytes written so far
	ino  uint32
	dirs map[string]bool // directories added, for the parent check
	seen map[string]bool // every name added
	err  error
	done bool
}

// NewWriter returns a Writer that writes the archive to w. The caller must
// call Close to finish it.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, dirs: map[string]bool{}, seen: map[string]bool{}}
}

// Dir adds a directory with the permission bits of mode.
func (w *Writer) Dir(name string, mode fs.FileMode) error {
	return w.entry(name, mode, fs.ModeDir, modeDir, 2, nil, 0, 0)
}

// File adds a regular file holding data with the permission bits of mode.
func (w *Writer) File(name string, mode fs.FileMode, data []byte) error {
	return w.entry(name, mode, 0, modeRegular, 1, data, 0, 0)
}

// Symlink adds a symbolic link to target, with permissions 0777.
func (w *Writer) Symlink(name, target string) error {
	if target == "" {
		return w.fail(fmt.Errorf("cpio symlink %s: empty target", name))
	}
	return w.entry(name, 0o777, fs.ModeSymlink, modeSymlink, 1, []byte(target), 0, 0)
}

// CharDev adds a character device node major:minor with the permission bits
// of mode.
func (w *Writer) CharDev(name string, mode fs.FileMode, major, minor uint32) error {
	return w.entry(name, mode, fs.ModeDevice|fs.ModeCharDevice, modeCharDev, 1, nil, major, minor)
}

// Close writes the trailer entry and pads the archive with zeros to a
// multiple of 512 bytes. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return fmt.Errorf("cpio close: %w", errClosed)
	}
	w.done = true
	// The trailer has inode 0, mode 0 and nlink 1, as gen_init_cpio writes it.
	if err := w.header(trailer, 0, 0, 1, 0, 0, 0); err != nil {
		return err
	}
	if pad := (blockSize - w.n%blockSize) % blockSize; pad > 0 {
		if err := w.write(make([]byte, pad)); err != nil {
			return w.fail(fmt.Errorf("cpio close: %w", err))
		}
	}
	return nil
}

// entry checks name and mode and writes one header and its data. typ is the
// fs.FileMode type the method adds, which mode may repeat; unix is the
// header's file type.
func (w *Writer) entry(name string, mode, typ fs.FileMode, unix uint32, nlink uint32, data []byte, major, minor uint32) error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return fmt.Errorf("cpio add %s: %w", name, errClosed)
	}
	if err := w.check(name, mode, typ); err != nil {
		return w.fail(err)
	}
	if uint64(len(data)) > 0xffffffff {
		return w.fail(fmt.Errorf("cpio add %s: %d bytes do not fit a newc header", name, len(data)))
	}
	w.ino++
	bits := uint32(mode.Perm())
	if mode&fs.ModeSetuid != 0 {
		bits |= modeSetuid
	}
	if mode&fs.ModeSetgid != 0 {
		bits |= modeSetgid
	}
	if mode&fs.ModeSticky != 0 {
		bits |= modeSticky
	}
	if err := w.header(name, w.ino, unix|bits, nlink, uint32(len(data)), major, minor); err != nil {
		return err
	}
	if err := w.write(data); err != nil {
		return w.fail(fmt.Errorf("cpio add %s: %w", name, err))
	}
	if err := w.pad(); err != nil {
		return w.fail(fmt.Errorf("cpio add %s: %w", name, err))
	}
	w.seen[name] = true
	if typ == fs.ModeDir {
		w.dirs[name] = true
	}
	return nil
}

// check validates an entry's name and mode.
func (w *Writer) check(name string, mode, typ fs.FileMode) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("cpio add %q: not a name", name)
	case name[0] == '/':
		return fmt.Errorf("cpio add %s: name must not start with /", name)
	case path.Clean(name) != name:
		return fmt.Errorf("cpio add %s: name is not clean (want %s)", name, path.Clean(name))
	case name == trailer:
		return fmt.Errorf("cpio add %s: name is the archive trailer", name)
	case strings.HasPrefix(name, "../"):
		return fmt.Errorf("cpio add %s: name leaves the archive root", name)
	case w.seen[name]:
		return fmt.Errorf("cpio add %s: already in the archive", name)
	}
	if dir := path.Dir(name); dir != "." && !w.dirs[dir] {
		return fmt.Errorf("cpio add %s: parent directory %s not added before it", name, dir)
	}
	if t := mode.Type(); t != 0 && t != typ {
		return fmt.Errorf("cpio add %s: mode %v has the wrong file type", name, mode)
	}
	return nil
}

// header writes a newc header and name, padded to 4 bytes.
func (w *Writer) header(name string, ino, mode, nlink, size, rmajor, rminor uint32) error {
	buf := make([]byte, 0, headerSize+len(name)+1)
	buf = append(buf, magic...)
	for _, v := range [...]uint32{
		ino, mode,
		0, 0, // uid, gid
		nlink,
		0, // mtime
		size,
		0, 0, // major and minor of the device holding the file
		rmajor, rminor,
		uint32(len(name) + 1),
		0, // check, unused in newc
	} {
		buf = appendHex8(buf, v)
	}
	buf = append(buf, name...)
	buf = append(buf, 0)
	if err := w.write(buf); err != nil {
		return w.fail(fmt.Errorf("cpio add %s: %w", name, err))
	}
	if err := w.pad(); err != nil {
		return w.fail(fmt.Errorf("cpio add %s: %w", name, err))
	}
	return nil
}

// appendHex8 appends v as eight upper-case hex digits.
func appendHex8(b []byte, v uint32) []byte {
	const zeros = "00000000"
	s := strconv.FormatUint(uint64(v), 16)
	b = append(b, zeros[len(s):]...)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'f' {
			c -= 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}

// pad writes zeros up to the next multiple of 4 bytes.
func (w *Writer) pad() error {
	if n := (4 - w.n%4) % 4; n > 0 {
		return w.write(make([]byte, n))
	}
	return nil
}

func (w *Writer) write(b []byte) error {
	n, err := w.w.Write(b)
	w.n += int64(n)
	return err
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}
