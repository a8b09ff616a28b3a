package appliance

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Machine is a booted machine: what Boot found, and the goroutines it left
// running (reaper, watchdog, power events) until Shutdown.
//
// Its exported fields are set by Boot and read-only afterwards. Events and
// Shutdown may be called from any goroutine; Shutdown is called once.
type Machine struct {
	// PermDevice is the persistent partition's device ("/dev/vdb"), or ""
	// when none was found.
	PermDevice string
	// PermPersistent is true when /perm is that device's ext4 file system,
	// false when it is a tmpfs that forgets everything at reboot.
	PermPersistent bool
	// Modules counts the kernel modules loaded.
	Modules ModuleStats
	// Console is where boot messages went; the daemon may keep logging to
	// it, e.g. with log.New(m.Console, "sluice: ", 0).
	Console *Console

	cfg      Config
	events   chan Event
	stop     chan struct{}
	stopOnce sync.Once
	wd       *watchdog
	closers  []io.Closer // power button devices, closed by Shutdown
	// consoleFile keeps the re-opened console alive for the process's life.
	consoleFile *os.File
}

func (m *Machine) logf(format string, args ...any) { m.Console.Logf(format, args...) }

// Boot turns the process into the machine's init, in this order, logging
// each step to the console:
//
//  1. mount proc, sysfs, devtmpfs, devpts, /dev/shm, /run and /tmp, then
//     make /dev/console the process's stdin, stdout and stderr;
//  2. load the kernel modules listed in /lib/modules/$(uname -r)/modules.load;
//  3. set the hostname;
//  4. bring lo up;
//  5. start reaping orphaned processes;
//  6. mount the persistent partition at /perm (formatting it on first boot),
//     or a tmpfs there when it cannot be had;
//  7. arm and feed the hardware watchdog, when there is one;
//  8. listen for power events (see Events).
//
// Only a failure to mount proc, sysfs or devtmpfs is returned as an error;
// every other failure is logged and the boot continues. The Machine is
// returned even with an error, so the caller can still Shutdown.
func Boot(cfg Config) (*Machine, error) {
	cfg = cfg.withDefaults()
	w := cfg.Console
	if w == nil {
		w = os.Stderr // the kernel's console until /dev is mounted
	}
	m := &Machine{
		Console: NewConsole(w, cfg.Uptime),
		cfg:     cfg,
		events:  make(chan Event, 1),
		stop:    make(chan struct{}),
	}
	m.logf("booting (pid %d)", cfg.Getpid())

	err := m.mountAll()
	if cfg.Console == nil {
		// Re-open the console so fds 0-2 are valid even when the kernel
		// could not open it for init, and the daemon's own output reaches it.
		if f, err := cfg.AttachConsole(cfg.path("/dev/console")); err != nil {
			m.logf("console: %v", err)
		} else {
			m.consoleFile = f
		}
	}
	if err == nil {
		m.logf("mounted kernel file systems")
	}

	start := cfg.Now()
	if st, err := m.loadModules(); err != nil {
		m.logf("modules: %v", err)
	} else {
		m.Modules = st
		m.logf("modules: %d loaded, %d already present, %d failed in %v",
			st.Loaded, st.Already, st.Failed, cfg.Now().Sub(start).Round(time.Millisecond))
	}

	cmdline := parseCmdlineFile(cfg.path("/proc/cmdline"))
	host := cfg.Hostname
	if h := cmdline["sluice.hostname"]; h != "" {
		host = h
	}
	if err := cfg.Sethostname([]byte(host)); err != nil {
		m.logf("hostname %q: %v", host, err)
	} else {
		m.logf("hostname %s", host)
	}

	if err := cfg.LinkUp("lo"); err != nil {
		m.logf("lo up: %v", err)
	} else {
		m.logf("lo up")
	}

	sigchld := make(chan os.Signal, 1)
	cfg.Notify(sigchld, unix.SIGCHLD)
	go m.reap(sigchld, m.stop)
	m.logf("reaping orphaned processes")

	m.mountPerm(cmdline)

	wd, werr := openWatchdog(cfg.path("/dev/watchdog"), cfg.WatchdogInterval, m.logf)
	switch {
	case werr != nil:
		m.logf("watchdog: %v", werr)
	case wd != nil:
		m.wd = wd
		m.logf("watchdog armed, fed every %v", cfg.WatchdogInterval)
	default:
		m.logf("no hardware watchdog")
	}

	m.watchPower()

	if err != nil {
		return m, fmt.Errorf("boot: %w", err)
	}
	m.logf("boot done")
	return m, nil
}

// parseCmdlineFile parses a /proc/cmdline; unreadable means no options.
func parseCmdlineFile(path string) map[string]string {
	b, err := os.ReadFile(path)
	if err != nil {
		return map[string]string{} // no options is a valid command line
	}
	return ParseCmdline(string(b))
}
