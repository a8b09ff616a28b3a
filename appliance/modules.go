package appliance

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// ModuleStats counts what loadModules did.
type ModuleStats struct {
	Loaded  int // finit_module succeeded
	Already int // EEXIST: built in or loaded before
	Failed  int // any other error, each logged
}

// modulesLoadPath is where the image builder writes the ordered module list
// for kernel release rel.
func modulesLoadPath(rel string) string {
	return path.Join("/lib/modules", rel, "modules.load")
}

// parseModulesLoad returns the module paths of a modules.load file in file
// order: one path relative to / per line; blank lines and lines starting
// with # are skipped.
func parseModulesLoad(b []byte) []string {
	var mods []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mods = append(mods, "/"+strings.TrimPrefix(line, "/"))
	}
	return mods
}

// loadModules loads every module of the running kernel's modules.load in
// order. The list has dependencies before their users, so no dependency
// resolution happens here; a module that fails is logged and the rest are
// still tried.
func (m *Machine) loadModules() (ModuleStats, error) {
	var st ModuleStats
	rel, err := m.cfg.Release()
	if err != nil {
		return st, fmt.Errorf("kernel release: %w", err)
	}
	list := m.cfg.path(modulesLoadPath(rel))
	b, err := os.ReadFile(list)
	if err != nil {
		return st, fmt.Errorf("module list: %w", err)
	}
	for _, mod := range parseModulesLoad(b) {
		switch err := m.loadModule(mod); {
		case err == nil:
			st.Loaded++
		case errors.Is(err, unix.EEXIST):
			st.Already++
		default:
			st.Failed++
			m.logf("module %s: %v", path.Base(mod), err)
		}
	}
	return st, nil
}

func (m *Machine) loadModule(mod string) error {
	f, err := os.Open(m.cfg.path(mod))
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	switch path.Ext(mod) {
	case ".xz", ".zst", ".gz":
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	if err := m.cfg.FinitModule(int(f.Fd()), "", flags); err != nil {
		return fmt.Errorf("finit_module %s: %w", mod, err)
	}
	return nil
}
