package netconf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// procSys is where the kernel shows its sysctls.
//
// A file under /proc/sys/net belongs to the network namespace of the thread
// that opens it: the kernel resolves the path against the opening thread's
// namespace (not the process's, unlike /proc/self/net, which follows the
// main thread). So every file is opened by its full path on the calling
// thread, each time; a directory handle opened earlier in another namespace
// would go on resolving names in that one.
const procSys = "/proc/sys"

// Sysctl is one kernel setting. Path is relative to /proc/sys and uses
// slashes ("net/ipv4/ip_forward"), because a device name may hold a dot.
type Sysctl struct {
	Path  string
	Value string
}

func (s Sysctl) String() string { return s.Path + "=" + s.Value }

// setSysctls makes each sysctl under root hold its value. It writes only
// the ones that hold another value (ignoring the trailing newline) and
// returns those; a failure does not stop it from setting the rest, and the
// error joins every failure. A missing file is an error, never created.
func setSysctls(root string, want []Sysctl) ([]Sysctl, error) {
	var changed []Sysctl
	var errs []error
	for _, s := range want {
		file := filepath.Join(root, filepath.FromSlash(s.Path))
		have, err := os.ReadFile(file)
		if err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s: %w", s, err))
			continue
		}
		if strings.TrimSpace(string(have)) == s.Value {
			continue // already so
		}
		if err := writeExisting(file, s.Value+"\n"); err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s (was %s): %w", s, strings.TrimSpace(string(have)), err))
			continue
		}
		changed = append(changed, s)
	}
	return changed, errors.Join(errs...)
}

// writeExisting writes data to a file that must already exist: a sysctl
// file cannot be created, and in a test directory creating one would hide a
// wrong path.
func writeExisting(file, data string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
