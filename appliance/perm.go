package appliance

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PermLabel names the persistent partition: its GPT partition name, or the
// serial of a whole disk holding it (qemu -drive ...,serial=sluice-perm).
const PermLabel = "sluice-perm"

// ext4 (and ext2/3) keep the superblock magic 0xEF53, little-endian, at byte
// 1080 of the device: 1024 for the boot block plus 56 into the superblock.
const (
	extMagicOffset = 1080
	extMagic       = 0xEF53
)

// findPerm returns the persistent partition's device path (like "/dev/vdb1",
// not joined under Root), or "" when there is none yet. The kernel command
// line option sluice.perm= overrides the search; otherwise a partition named
// PermLabel wins over a whole disk with serial PermLabel.
func (cfg *Config) findPerm(cmdline map[string]string) string {
	if dev, ok := cmdline["sluice.perm"]; ok && dev != "" {
		if _, err := os.Stat(cfg.path(dev)); err != nil {
			return ""
		}
		return dev
	}
	if name := cfg.partitionNamed(PermLabel); name != "" {
		return cfg.devIfExists(name)
	}
	if name := cfg.diskWithSerial(PermLabel); name != "" {
		return cfg.devIfExists(name)
	}
	return ""
}

// Partition returns the device path of the partition with GPT name name,
// such as "/dev/vda1", or "" when there is none (yet): the way /perm is
// found, for other partitions of the image such as the EFI system
// partition.
func (m *Machine) Partition(name string) string {
	if dev := m.cfg.partitionNamed(name); dev != "" {
		return m.cfg.devIfExists(dev)
	}
	return ""
}

func (cfg *Config) devIfExists(name string) string {
	dev := "/dev/" + name
	if _, err := os.Stat(cfg.path(dev)); err != nil {
		return "" // sysfs knows it, devtmpfs has not created the node yet
	}
	return dev
}

// partitionNamed returns the kernel name (DEVNAME) of the block device whose
// uevent has PARTNAME=label, or "".
func (cfg *Config) partitionNamed(label string) string {
	paths, _ := filepath.Glob(cfg.path("/sys/class/block/*/uevent"))
	sort.Strings(paths)
	for _, p := range paths {
		env := readUevent(p)
		if env["PARTNAME"] == label {
			if name := env["DEVNAME"]; name != "" {
				return name
			}
			return filepath.Base(filepath.Dir(p))
		}
	}
	return ""
}

// readUevent parses a sysfs uevent file (KEY=value per line).
func readUevent(path string) map[string]string {
	env := make(map[string]string)
	f, err := os.Open(path)
	if err != nil {
		return env
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}

// diskWithSerial returns the name of the whole disk whose serial is label,
// or "".
func (cfg *Config) diskWithSerial(label string) string {
	paths, _ := filepath.Glob(cfg.path("/sys/block/*/serial"))
	sort.Strings(paths)
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == label {
			return filepath.Base(filepath.Dir(p))
		}
	}
	return ""
}

// diskHasPartitions reports whether the whole disk /dev/name has partitions
// the kernel knows of; such a disk is never formatted whole.
func (cfg *Config) diskHasPartitions(dev string) bool {
	name := filepath.Base(dev)
	parts, _ := filepath.Glob(cfg.path(filepath.Join("/sys/block", name, name+"*", "partition")))
	return len(parts) > 0
}

// hasExtSuperblock reports whether r carries an ext2/3/4 superblock magic.
func hasExtSuperblock(r io.ReaderAt) (bool, error) {
	var b [2]byte
	if _, err := r.ReadAt(b[:], extMagicOffset); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil // too small to hold a file system
		}
		return false, err
	}
	return uint16(b[0])|uint16(b[1])<<8 == extMagic, nil
}

func (cfg *Config) deviceHasExt(dev string) (bool, error) {
	f, err := os.Open(cfg.path(dev))
	if err != nil {
		return false, err
	}
	defer f.Close()
	return hasExtSuperblock(f)
}

// mkfsArgv returns the Mkfs command with DEVICE replaced by dev.
func mkfsArgv(mkfs []string, dev string) []string {
	argv := make([]string, len(mkfs))
	for i, a := range mkfs {
		argv[i] = strings.ReplaceAll(a, "DEVICE", dev)
	}
	return argv
}

// mountPerm finds, formats when blank, and mounts the persistent partition
// at /perm. Whatever goes wrong ends in a tmpfs at /perm and a warning, so
// the router still runs, only forgetfully.
func (m *Machine) mountPerm(cmdline map[string]string) {
	cfg := &m.cfg
	dev := cfg.findPerm(cmdline)
	deadline := cfg.Now().Add(cfg.PermWait)
	for dev == "" && cfg.Now().Before(deadline) {
		cfg.Sleep(100 * time.Millisecond)
		dev = cfg.findPerm(cmdline)
	}
	if dev == "" {
		m.permFallback(fmt.Sprintf("no persistent partition (GPT name or disk serial %q, or sluice.perm=) within %v", PermLabel, cfg.PermWait))
		return
	}
	m.PermDevice = dev
	devPath := cfg.path(dev)
	hasFS, err := cfg.deviceHasExt(dev)
	if err != nil {
		m.permFallback(fmt.Sprintf("read superblock of %s: %v", dev, err))
		return
	}
	if !hasFS {
		if cfg.diskHasPartitions(dev) {
			m.permFallback(fmt.Sprintf("%s has no ext4 file system but has partitions; refusing to format it", dev))
			return
		}
		argv := mkfsArgv(cfg.Mkfs, devPath)
		m.logf("perm: %s has no file system; creating ext4 (first boot): %s", dev, strings.Join(argv, " "))
		if out, err := cfg.Run(argv); err != nil {
			m.permFallback(fmt.Sprintf("mkfs %s: %v: %s", dev, err, strings.TrimSpace(string(out))))
			return
		}
	}
	target := cfg.path("/perm")
	if err := os.MkdirAll(target, 0o755); err != nil {
		m.permFallback(fmt.Sprintf("mkdir %s: %v", target, err))
		return
	}
	if err := cfg.Mount(devPath, target, "ext4", unix.MS_NOATIME, ""); err != nil {
		m.permFallback(fmt.Sprintf("mount ext4 %s at /perm: %v", dev, err))
		return
	}
	m.PermPersistent = true
	m.logf("perm: %s mounted at /perm", dev)
}

// permFallback mounts a tmpfs at /perm and says loudly that nothing will
// survive a reboot.
func (m *Machine) permFallback(why string) {
	m.logf("WARNING: %s", why)
	m.logf("WARNING: /perm is a tmpfs: NOTHING WILL PERSIST ACROSS A REBOOT (policy, keys, audit log)")
	err := m.cfg.mount(mountPoint{Source: "tmpfs", Target: "/perm", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"})
	if err != nil {
		m.logf("WARNING: %v", err)
	}
}
