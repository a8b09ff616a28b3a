// Package image builds sluice's bootable appliance image: an initramfs
// holding this very binary as /init with the kernel modules it needs, a
// unified kernel image, and a GPT disk that boots it through systemd-boot
// with two slots under boot counting and a /perm partition.
//
// Every output is a function of the inputs alone (the kernel package, the
// systemd-boot files and the binary): file times, GUIDs and orderings are
// fixed, so the same inputs give the same bytes.
package image

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/sluicefw/sluice/appliance"
	"github.com/sluicefw/sluice/appliance/slot"
	"github.com/sluicefw/sluice/image/cpio"
	"github.com/sluicefw/sluice/image/fat"
	"github.com/sluicefw/sluice/image/gpt"
	"github.com/sluicefw/sluice/image/kmod"
	"github.com/sluicefw/sluice/image/uki"
)

// Modules are the kernel modules sluice loads at boot, before their
// dependencies are added: nftables with every expression the compiler
// uses, conntrack over netlink, the drop log, virtio devices, the EFI
// system partition's file system, the power button and the watchdog.
var Modules = []string{
	"nf_tables", "nfnetlink", "nft_ct", "nft_fib_inet", "nft_fib_ipv4", "nft_fib_ipv6",
	"nft_nat", "nft_chain_nat", "nft_masq", "nft_limit", "nft_log", "nft_reject_inet", "nft_objref",
	"nf_log_syslog", "nfnetlink_log", "nf_conntrack_netlink",
	"virtio_net", "virtio_pci", "virtio_blk",
	"vfat", "nls_cp437", "nls_iso8859_1", "nls_utf8", "efivarfs",
	"button", "evdev",
}

// OptionalModules are loaded when the kernel has them: network and disk
// drivers for hardware (the generic kernel) and watchdogs.
var OptionalModules = []string{
	"e1000", "e1000e", "igb", "igc", "ixgbe", "i40e", "ice", "r8169", "bnxt_en",
	"ahci", "nvme", "usbhid", "xhci_pci", "i6300esb", "iTCO_wdt",
	// Last: a hardware watchdog registered before it is /dev/watchdog;
	// without one, the kernel's own timer reboots a hung box.
	"softdog",
}

// DefaultCmdline is the kernel command line: the serial port is the
// console (the last console= is /dev/console), and a panic reboots after 5
// seconds so that boot counting can fall back to the other slot.
const DefaultCmdline = "console=tty1 console=ttyS0,115200 panic=5 quiet"

// Sizes of the disk's partitions.
const (
	ESPSize  = 128 << 20 // two slots of about 20 MiB each, and room for a third while updating
	PermSize = 64 << 20
	mib      = 1 << 20
)

// Partition names, by which sluice finds them at boot.
const (
	ESPName  = "sluice-esp"
	PermName = appliance.PermLabel
)

// Options are the inputs of a build.
type Options struct {
	KernelDir string // an extracted Debian kernel package (boot/vmlinuz-*, lib/modules/*)
	BootEFI   string // systemd-boot's files: systemd-bootx64.efi and linuxx64.efi.stub
	Binary    string // the sluice binary that boots as /init
	Out       string // the output directory, created if missing
	Cmdline   string // DefaultCmdline if empty
	// Mkfs is the mke2fs binary shipped in the initramfs, with its shared
	// libraries, so that /perm can be formatted on first boot;
	// /sbin/mke2fs if empty.
	Mkfs string
}

// Result names what Build wrote.
type Result struct {
	Kernel  string // the kernel release, such as 6.1.0-56-cloud-amd64
	Vmlinuz string // the kernel, for qemu -kernel
	Initrd  string // the initramfs, for qemu -initrd
	UKI     string // kernel, initramfs and command line as one EFI program: the update image
	Disk    string // the GPT disk image
	Modules int    // kernel modules in the initramfs
}

// Build writes vmlinuz, initrd.img, sluice.efi and disk.img into opts.Out.
func Build(opts Options) (Result, error) {
	var res Result
	if opts.Cmdline == "" {
		opts.Cmdline = DefaultCmdline
	}
	if opts.Mkfs == "" {
		opts.Mkfs = "/sbin/mke2fs"
	}
	vmlinuzPaths, _ := filepath.Glob(filepath.Join(opts.KernelDir, "boot", "vmlinuz-*"))
	if len(vmlinuzPaths) != 1 {
		return res, fmt.Errorf("image: want one boot/vmlinuz-* in %s, found %d", opts.KernelDir, len(vmlinuzPaths))
	}
	res.Kernel = strings.TrimPrefix(filepath.Base(vmlinuzPaths[0]), "vmlinuz-")
	vmlinuz, err := os.ReadFile(vmlinuzPaths[0])
	if err != nil {
		return res, fmt.Errorf("image: %w", err)
	}
	binary, err := os.ReadFile(opts.Binary)
	if err != nil {
		return res, fmt.Errorf("image: %w", err)
	}
	mods, err := moduleClosure(opts.KernelDir, res.Kernel)
	if err != nil {
		return res, err
	}
	res.Modules = len(mods)
	initrd, err := initramfs(opts, res.Kernel, binary, mods)
	if err != nil {
		return res, err
	}
	stub, err := os.ReadFile(filepath.Join(opts.BootEFI, "linuxx64.efi.stub"))
	if err != nil {
		return res, fmt.Errorf("image: %w", err)
	}
	boot, err := os.ReadFile(filepath.Join(opts.BootEFI, "systemd-bootx64.efi"))
	if err != nil {
		return res, fmt.Errorf("image: %w", err)
	}
	h := sha256.New()
	h.Write(binary)
	h.Write(initrd)
	sum := h.Sum(nil)
	// No VERSION_ID: systemd-boot would order slots by it; without one
	// it orders them by file name, newest generation first.
	osrel := fmt.Sprintf("ID=sluice\nNAME=sluice\nPRETTY_NAME=\"sluice %s\"\n", hex.EncodeToString(sum[:6]))
	efi, err := uki.Build(stub, []uki.Section{
		{Name: ".osrel", Data: []byte(osrel)},
		{Name: ".cmdline", Data: []byte(opts.Cmdline)},
		{Name: ".linux", Data: vmlinuz},
		{Name: ".initrd", Data: initrd},
	})
	if err != nil {
		return res, fmt.Errorf("image: unified kernel image: %w", err)
	}
	disk, err := Disk(boot, efi)
	if err != nil {
		return res, err
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return res, fmt.Errorf("image: %w", err)
	}
	res.Vmlinuz = filepath.Join(opts.Out, "vmlinuz")
	res.Initrd = filepath.Join(opts.Out, "initrd.img")
	res.UKI = filepath.Join(opts.Out, "sluice.efi")
	res.Disk = filepath.Join(opts.Out, "disk.img")
	for p, data := range map[string][]byte{res.Vmlinuz: vmlinuz, res.Initrd: initrd, res.UKI: efi} {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return res, fmt.Errorf("image: %w", err)
		}
	}
	if err := writeSparse(res.Disk, disk); err != nil {
		return res, err
	}
	return res, nil
}

// moduleClosure returns the modules to load, dependencies first.
func moduleClosure(root, kver string) ([]kmod.Module, error) {
	ix, err := kmod.Load(root, kver)
	if err != nil {
		return nil, fmt.Errorf("image: kernel modules: %w", err)
	}
	wanted := slices.Clone(Modules)
	for _, m := range OptionalModules {
		if _, err := ix.Closure(m); err == nil {
			wanted = append(wanted, m)
		}
	}
	mods, err := ix.Closure(wanted...)
	if err != nil {
		return nil, fmt.Errorf("image: kernel modules: %w", err)
	}
	// libcrc32c's soft dependency on "crc32c" resolves to the
	// SSE4.2 module, as modprobe resolves it, even where the generic
	// algorithm is built in (the cloud kernel): then it is not needed,
	// and it fails on CPUs without SSE4.2.
	if ix.Builtin("crc32c_generic") {
		mods = slices.DeleteFunc(mods, func(m kmod.Module) bool { return m.Name == "crc32c_intel" })
	}
	return mods, nil
}

// initramfs builds the gzip-compressed newc archive the kernel unpacks as
// the root file system.
func initramfs(opts Options, kver string, binary []byte, mods []kmod.Module) ([]byte, error) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	w := cpio.NewWriter(zw)
	dirs := map[string]bool{}
	var mkdirs func(p string) error
	mkdirs = func(p string) error {
		if p == "." || p == "/" || p == "" || dirs[p] {
			return nil
		}
		if err := mkdirs(path.Dir(p)); err != nil {
			return err
		}
		dirs[p] = true
		return w.Dir(p, 0o755)
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "perm", "esp", "etc"} {
		if err := mkdirs(d); err != nil {
			return nil, err
		}
	}
	if err := w.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return nil, err
	}
	if err := w.CharDev("dev/null", 0o666, 1, 3); err != nil {
		return nil, err
	}
	if err := w.File("init", 0o755, binary); err != nil {
		return nil, err
	}
	var load strings.Builder
	for _, m := range mods {
		data, err := os.ReadFile(filepath.Join(opts.KernelDir, m.Path))
		if err != nil {
			return nil, fmt.Errorf("image: module %s: %w", m.Name, err)
		}
		if err := mkdirs(path.Dir(m.Path)); err != nil {
			return nil, err
		}
		if err := w.File(m.Path, 0o644, data); err != nil {
			return nil, err
		}
		load.WriteString(m.Path + "\n")
	}
	modDir := path.Join("lib/modules", kver)
	if err := mkdirs(modDir); err != nil {
		return nil, err
	}
	if err := w.File(path.Join(modDir, "modules.load"), 0o644, []byte(load.String())); err != nil {
		return nil, err
	}
	files, err := withLibraries(opts.Mkfs)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := mkdirs(path.Dir(f.dst)); err != nil {
			return nil, err
		}
		data, err := os.ReadFile(f.src)
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		if err := w.File(f.dst, 0o755, data); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type copyFile struct{ src, dst string }

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// withLibraries returns a dynamically linked program as /lib/sluice/NAME
// and its shared libraries (as ldd(1) lists them) at their own paths.
func withLibraries(prog string) ([]copyFile, error) {
	files := []copyFile{{prog, "lib/sluice/" + filepath.Base(prog)}}
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		return nil, fmt.Errorf("image: ldd %s: %w", prog, err)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		if m := lddLine.FindStringSubmatch(line); m != nil {
			libs = append(libs, m[1])
		}
	}
	slices.Sort(libs)
	for _, l := range slices.Compact(libs) {
		real, err := filepath.EvalSymlinks(l)
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		files = append(files, copyFile{real, strings.TrimPrefix(l, "/")})
	}
	return files, nil
}

// Disk returns a GPT disk image: the EFI system partition with
// systemd-boot and efi as slot 1 (good), and an empty /perm partition that
// sluice formats on first boot.
func Disk(boot, efi []byte) ([]byte, error) {
	size := int64(mib) + ESPSize + PermSize + mib // the tables before and after the partitions
	parts, err := gpt.Layout(size, []gpt.Partition{
		{Name: ESPName, Type: gpt.EFISystem, GUID: gpt.GUIDFromSeed("sluice esp"), Size: ESPSize},
		{Name: PermName, Type: gpt.LinuxFilesystem, GUID: gpt.GUIDFromSeed("sluice perm"), Size: PermSize},
	})
	if err != nil {
		return nil, fmt.Errorf("image: partition table: %w", err)
	}
	disk := make([]byte, size)
	esp := newSection(disk, parts[0].Start, parts[0].Size)
	files := []fat.File{
		{Path: "EFI/BOOT/BOOTX64.EFI", Data: boot},
		{Path: "loader/loader.conf", Data: []byte("timeout 0\neditor no\n")},
		{Path: "EFI/Linux/" + slot.Name(1, -1), Data: efi},
	}
	if err := fat.Write(esp, ESPSize, "SLUICE-ESP", 0x51c0e5f1, files); err != nil {
		return nil, fmt.Errorf("image: EFI system partition: %w", err)
	}
	if err := gpt.Write(newSection(disk, 0, size), size, gpt.GUIDFromSeed("sluice disk"), parts); err != nil {
		return nil, fmt.Errorf("image: partition table: %w", err)
	}
	return disk, nil
}

// section is an io.WriterAt into part of a byte slice.
type section struct {
	b   []byte
	off int64
	n   int64
}

func newSection(b []byte, off, n int64) *section { return &section{b, off, n} }

func (s *section) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > s.n {
		return 0, fmt.Errorf("write of %d bytes at %d outside a %d-byte area", len(p), off, s.n)
	}
	return copy(s.b[s.off+off:], p), nil
}

// writeSparse writes data leaving runs of zero blocks as holes.
func writeSparse(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	const block = 64 << 10
	zero := make([]byte, block)
	for off := 0; off < len(data); off += block {
		end := min(off+block, len(data))
		if bytes.Equal(data[off:end], zero[:end-off]) {
			continue
		}
		if _, err := f.WriteAt(data[off:end], int64(off)); err != nil {
			f.Close()
			return fmt.Errorf("image: %w", err)
		}
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		f.Close()
		return fmt.Errorf("image: %w", err)
	}
	return f.Close()
}
