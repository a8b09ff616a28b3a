package appliance

import (
	"encoding/binary"
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

// Event is a request to end the machine's run.
type Event int

// The events; the zero Event is none.
const (
	Reboot   Event = iota + 1 // restart the machine
	PowerOff                  // turn it off
)

func (e Event) String() string {
	switch e {
	case Reboot:
		return "reboot"
	case PowerOff:
		return "poweroff"
	}
	return fmt.Sprintf("Event(%d)", int(e))
}

// rebootCmd is the reboot(2) command carrying out e.
func (e Event) rebootCmd() int {
	if e == Reboot {
		return unix.LINUX_REBOOT_CMD_RESTART
	}
	return unix.LINUX_REBOOT_CMD_POWER_OFF
}

// powerSignals lists the signals that ask PID 1 to end the run, as other
// inits read them: SIGINT is what the kernel sends on ctrl-alt-del once
// Boot has turned the keyboard reset off (CAD_OFF), and SIGTERM is what
// "kill 1" sends; both reboot. SIGUSR2 (busybox's poweroff) and SIGPWR (a
// UPS or power failure notice) power off.
func powerSignals() []os.Signal {
	return []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGUSR2, unix.SIGPWR}
}

// signalEvent maps a signal from powerSignals to its event; 0 for others.
func signalEvent(sig os.Signal) Event {
	switch sig {
	case unix.SIGINT, unix.SIGTERM:
		return Reboot
	case unix.SIGUSR2, unix.SIGPWR:
		return PowerOff
	}
	return 0
}

// Input event constants from linux/input-event-codes.h.
const (
	evKey    = 1
	keyPower = 116
)

// inputEventSize is sizeof(struct input_event) on 64-bit Linux: a 16-byte
// struct timeval, then type u16, code u16 and value s32.
const inputEventSize = 24

// inputEvent is a decoded struct input_event without its time stamp.
type inputEvent struct {
	Type, Code uint16
	Value      int32
}

// decodeInputEvent decodes one struct input_event in the host's byte order.
// b shorter than inputEventSize is not an event.
func decodeInputEvent(b []byte) (inputEvent, bool) {
	if len(b) < inputEventSize {
		return inputEvent{}, false
	}
	return inputEvent{
		Type:  binary.NativeEndian.Uint16(b[16:]),
		Code:  binary.NativeEndian.Uint16(b[18:]),
		Value: int32(binary.NativeEndian.Uint32(b[20:])),
	}, true
}

// isPowerPress reports whether ev is the power key going down.
func (ev inputEvent) isPowerPress() bool {
	return ev.Type == evKey && ev.Code == keyPower && ev.Value == 1
}

// powerButtons returns the /dev/input/eventN paths (not joined under Root)
// of input devices named "Power Button" — the ACPI button driver's name,
// pressed by qemu's system_powerdown — in name order.
func (cfg *Config) powerButtons() []string {
	names, _ := filepath.Glob(cfg.path("/sys/class/input/event*/device/name"))
	sort.Strings(names)
	var devs []string
	for _, p := range names {
		b, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(b)) != "Power Button" {
			continue
		}
		event := filepath.Base(filepath.Dir(filepath.Dir(p)))
		devs = append(devs, "/dev/input/"+event)
	}
	return devs
}

// readPowerButton reads input events from r until it fails and calls press
// for each power key press.
func readPowerButton(r io.Reader, press func()) error {
	buf := make([]byte, 64*inputEventSize)
	for {
		n, err := r.Read(buf)
		for b := buf[:n-n%inputEventSize]; len(b) >= inputEventSize; b = b[inputEventSize:] {
			if ev, ok := decodeInputEvent(b); ok && ev.isPowerPress() {
				press()
			}
		}
		if err != nil {
			return err
		}
	}
}

// send delivers ev to Events without blocking: a pending request is enough.
func (m *Machine) send(ev Event) {
	select {
	case m.events <- ev:
	default:
	}
}

// watchPower turns power signals and power-button presses into Events.
func (m *Machine) watchPower() {
	// With ctrl-alt-del off the kernel sends SIGINT to PID 1 instead of
	// resetting the machine at once.
	if err := m.cfg.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		m.logf("ctrl-alt-del to SIGINT: %v", err)
	}
	sigs := make(chan os.Signal, 4)
	m.cfg.Notify(sigs, powerSignals()...)
	go func() {
		for {
			select {
			case <-m.stop:
				return
			case sig := <-sigs:
				if ev := signalEvent(sig); ev != 0 {
					m.logf("%v: %v requested", sig, ev)
					m.send(ev)
				}
			}
		}
	}()
	buttons := m.cfg.powerButtons()
	if len(buttons) == 0 {
		m.logf("no power button (ACPI button and evdev not present)")
	}
	for _, dev := range buttons {
		f, err := os.Open(m.cfg.path(dev))
		if err != nil {
			m.logf("power button %s: %v", dev, err)
			continue
		}
		m.closers = append(m.closers, f)
		m.logf("power button: %s", dev)
		go func() {
			err := readPowerButton(f, func() {
				m.logf("power button pressed: poweroff requested")
				m.send(PowerOff)
			})
			select {
			case <-m.stop:
			default:
				m.logf("power button %s: %v", dev, err)
			}
		}()
	}
}

// Request asks for ev as a power event does, such as a reboot chosen on
// the console; a request already waiting is enough.
func (m *Machine) Request(ev Event) { m.send(ev) }

// Events delivers the power events asking the machine to reboot or power
// off: ctrl-alt-del, signals to PID 1 and the power button. The caller stops
// its services and calls Shutdown with the event.
func (m *Machine) Events() <-chan Event {
	return m.events
}

// Shutdown ends the machine's run: it syncs, detaches /perm, disarms the
// watchdog and reboots or powers off as ev says.
//
// As PID 1 it never returns, since PID 1 exiting panics the kernel: when the
// reboot call fails it logs and keeps trying to power off. Otherwise (tests,
// or sluice run by another init) it returns the reboot call's error.
func (m *Machine) Shutdown(ev Event) error {
	if ev != Reboot {
		ev = PowerOff
	}
	m.logf("%v: syncing and unmounting", ev)
	m.stopOnce.Do(func() { close(m.stop) })
	for _, c := range m.closers {
		c.Close()
	}
	m.cfg.Sync()
	if m.PermPersistent {
		err := m.cfg.Unmount(m.cfg.path("/perm"), unix.MNT_DETACH)
		switch {
		case err == nil:
		case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EINVAL):
			// EBUSY: files still open; the lazy detach finishes when they close.
			// EINVAL: /perm was not a mount point any more.
		default:
			m.logf("unmount /perm: %v", err)
		}
		m.cfg.Sync()
	}
	if err := m.wd.close(); err != nil {
		m.logf("watchdog close: %v", err)
	}
	m.logf("%v", ev)
	err := m.cfg.Reboot(ev.rebootCmd())
	if m.cfg.Getpid() != 1 {
		if err != nil {
			return fmt.Errorf("reboot(%v): %w", ev, err)
		}
		return nil // a fake reboot returned; a real one does not
	}
	for {
		m.logf("%v failed: %v; trying poweroff again", ev, err)
		m.cfg.Sleep(time.Second)
		m.cfg.Sync()
		ev, err = PowerOff, m.cfg.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
}
