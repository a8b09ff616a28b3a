// Package imagetest finds the inputs of appliance image builds for tests:
// the extracted Debian kernel package and systemd-boot's EFI files, which
// `make kernel` fetches into .cache/ and names in SLUICE_KERNEL_DIR.
package imagetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sluicefw/sluice/internal/netnstest"
)

// KernelDir returns the root of an extracted Debian kernel package (holding
// boot/vmlinuz-* and lib/modules/*). It skips the test without one, and
// fails it under CI=true.
func KernelDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("SLUICE_KERNEL_DIR")
	if dir == "" {
		// go test runs in the package directory; the cache is at the
		// module root.
		if root, err := moduleRoot(); err == nil {
			dir = filepath.Join(root, ".cache", "kernel-cloud")
		}
	}
	vmlinuz, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	netnstest.Require(t, len(vmlinuz) == 1, "needs an extracted Debian kernel package in SLUICE_KERNEL_DIR or .cache/kernel-cloud (make kernel)")
	return dir
}

// BootEFI returns the directory holding systemd-boot's systemd-bootx64.efi
// and linuxx64.efi.stub (Debian's systemd-boot-efi package), skipping the
// test without it (failing under CI=true).
func BootEFI(t testing.TB) string {
	t.Helper()
	dir := "/usr/lib/systemd/boot/efi"
	_, err1 := os.Stat(filepath.Join(dir, "systemd-bootx64.efi"))
	_, err2 := os.Stat(filepath.Join(dir, "linuxx64.efi.stub"))
	netnstest.Require(t, err1 == nil && err2 == nil, "needs systemd-boot-efi in %s (make deps)", dir)
	return dir
}

// moduleRoot walks up from the working directory to the directory holding
// go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}
