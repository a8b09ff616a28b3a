package appliance

import (
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Config says where Boot finds the machine and how it reaches the kernel.
// The zero value boots the real machine: every nil field takes the default
// named on it. Tests set Root to a temporary directory and replace the
// function fields with fakes that record their calls.
type Config struct {
	// Root is the directory every path is joined under; default "/".
	// Paths handed to the kernel (mount targets, devices) are joined too.
	Root string

	// Hostname is set with sethostname; default "sluice". The kernel
	// command line option sluice.hostname= overrides it.
	Hostname string

	// Mkfs is the command that puts an ext4 file system on the persistent
	// partition; the word DEVICE is replaced by the device path. Default
	// ["/lib/sluice/mke2fs", "-q", "-t", "ext4", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", "-L", "sluice-perm", "DEVICE"]: no discard and lazy initialization, which take seconds under emulation.
	Mkfs []string

	// Console receives boot messages. Default: /dev/console, re-opened and
	// duplicated onto file descriptors 0, 1 and 2 once /dev is mounted.
	Console io.Writer

	// PermWait is how long Boot waits for the persistent partition to
	// appear; default 3 s.
	PermWait time.Duration

	// WatchdogInterval is how often the hardware watchdog is fed; default 5 s.
	WatchdogInterval time.Duration

	// System call seams, each defaulting to the unix call of the same name.
	Mount       func(source, target, fstype string, flags uintptr, data string) error
	Unmount     func(target string, flags int) error
	FinitModule func(fd int, params string, flags int) error
	Sethostname func(name []byte) error
	Reboot      func(cmd int) error
	Sync        func()
	// Release returns the running kernel's release (uname -r).
	Release func() (string, error)
	// LinkUp sets a network interface administratively up.
	LinkUp func(name string) error
	// Run runs a command to completion and returns its combined output.
	Run func(argv []string) ([]byte, error)
	// Wait4 reaps one child without blocking (WNOHANG).
	Wait4 func(pid int) (int, error)
	// AttachConsole opens the console device and makes it fds 0, 1 and 2.
	AttachConsole func(path string) (*os.File, error)
	// Notify relays signals, like signal.Notify.
	Notify func(c chan<- os.Signal, sig ...os.Signal)
	// Getpid decides whether Shutdown may return (only when not PID 1).
	Getpid func() int

	// Clock seams: Now for durations, Sleep for polling, Uptime for the
	// console's timestamps (time since the kernel booted).
	Now    func() time.Time
	Sleep  func(time.Duration)
	Uptime func() time.Duration
}

// withDefaults returns cfg with every unset field set to its default.
func (cfg Config) withDefaults() Config {
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "sluice"
	}
	if cfg.Mkfs == nil {
		cfg.Mkfs = []string{"/lib/sluice/mke2fs", "-q", "-t", "ext4", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", "-L", PermLabel, "DEVICE"}
	}
	if cfg.PermWait == 0 {
		cfg.PermWait = 3 * time.Second
	}
	if cfg.WatchdogInterval == 0 {
		cfg.WatchdogInterval = 5 * time.Second
	}
	if cfg.Mount == nil {
		cfg.Mount = unix.Mount
	}
	if cfg.Unmount == nil {
		cfg.Unmount = unix.Unmount
	}
	if cfg.FinitModule == nil {
		cfg.FinitModule = unix.FinitModule
	}
	if cfg.Sethostname == nil {
		cfg.Sethostname = unix.Sethostname
	}
	if cfg.Reboot == nil {
		cfg.Reboot = unix.Reboot
	}
	if cfg.Sync == nil {
		cfg.Sync = unix.Sync
	}
	if cfg.Release == nil {
		cfg.Release = kernelRelease
	}
	if cfg.LinkUp == nil {
		cfg.LinkUp = linkUp
	}
	if cfg.Run == nil {
		cfg.Run = run
	}
	if cfg.Wait4 == nil {
		cfg.Wait4 = func(pid int) (int, error) { return unix.Wait4(pid, nil, unix.WNOHANG, nil) }
	}
	if cfg.AttachConsole == nil {
		cfg.AttachConsole = attachConsole
	}
	if cfg.Notify == nil {
		cfg.Notify = signal.Notify
	}
	if cfg.Getpid == nil {
		cfg.Getpid = os.Getpid
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = time.Sleep
	}
	if cfg.Uptime == nil {
		cfg.Uptime = bootTime
	}
	return cfg
}

// path joins an absolute machine path under Root.
func (cfg *Config) path(p string) string {
	return filepath.Join(cfg.Root, p)
}

func kernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

// linkUp sets IFF_UP on an interface with SIOCSIFFLAGS. For lo the kernel
// then adds 127.0.0.1/8 and ::1 itself.
func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// run runs argv with its own directory on the library path, since the
// image keeps helper programs such as mke2fs together with their shared
// libraries. Stdin is /dev/null, so a program asking for confirmation gets
// no and fails instead of waiting on the console.
func run(argv []string) ([]byte, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Dir(argv[0]))
	return cmd.CombinedOutput()
}

// attachConsole opens the console device and duplicates it onto fds 0, 1
// and 2, so that whatever sluice writes to stdout and stderr reaches it.
func attachConsole(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	for fd := 0; fd <= 2; fd++ {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// bootTime is the time since the kernel booted, as in its own log.
func bootTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// IsInit reports whether sluice runs as the machine's init (PID 1).
func IsInit() bool {
	return os.Getpid() == 1
}
