package appliance

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mountPoint is one file system Boot mounts.
type mountPoint struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
	// Essential mounts failing make Boot return an error.
	Essential bool
}

// kernelMounts lists the file systems every boot mounts, in order: /dev
// before what lives under it.
func kernelMounts() []mountPoint {
	const nosuid, nodev, noexec = unix.MS_NOSUID, unix.MS_NODEV, unix.MS_NOEXEC
	return []mountPoint{
		{"proc", "/proc", "proc", nosuid | nodev | noexec, "", true},
		{"sysfs", "/sys", "sysfs", nosuid | nodev | noexec, "", true},
		{"devtmpfs", "/dev", "devtmpfs", nosuid, "mode=0755", true},
		{"devpts", "/dev/pts", "devpts", nosuid | noexec, "mode=0620,ptmxmode=0666", false},
		{"tmpfs", "/dev/shm", "tmpfs", nosuid | nodev, "mode=1777", false},
		{"tmpfs", "/run", "tmpfs", nosuid | nodev, "mode=0755", false},
		{"tmpfs", "/tmp", "tmpfs", nosuid | nodev, "mode=1777", false},
	}
}

// mount creates the mount point under Root and mounts m there. A file
// system already mounted there (EBUSY) counts as mounted.
func (cfg *Config) mount(m mountPoint) error {
	target := cfg.path(m.Target)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", target, err)
	}
	err := cfg.Mount(m.Source, target, m.FSType, m.Flags, m.Data)
	if errors.Is(err, unix.EBUSY) {
		return nil // mounted before sluice started (by the kernel or an earlier init)
	}
	if err != nil {
		return fmt.Errorf("mount %s %s at %s: %w", m.FSType, m.Source, target, err)
	}
	return nil
}

// mountAll mounts the kernel file systems and returns the failures of the
// essential ones; the others are only logged.
func (m *Machine) mountAll() error {
	var errs []error
	for _, mp := range kernelMounts() {
		if err := m.cfg.mount(mp); err != nil {
			m.logf("%v", err)
			if mp.Essential {
				errs = append(errs, err)
			}
		}
	}
	// Links found in every /dev, for programs that open them by name.
	for name, target := range map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, m.cfg.path(name)); err != nil && !errors.Is(err, os.ErrExist) {
			m.logf("symlink %s: %v", name, err)
		}
	}
	return errors.Join(errs...)
}
