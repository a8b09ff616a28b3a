package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicefw/sluice/appliance"
	"github.com/sluicefw/sluice/appliance/router"
	"github.com/sluicefw/sluice/appliance/slot"
	"github.com/sluicefw/sluice/image"
	"github.com/sluicefw/sluice/tui"
)

// healthDeadline is how long a slot on trial has to become healthy (its
// policy in force) before sluice reboots, so that systemd-boot counts the
// try and eventually falls back to the previous slot.
const healthDeadline = 3 * time.Minute

// initMain is sluice as the machine's init: boot the machine, then run the
// router with SSH on :22 and the recovery console on the serial port, the
// state in /perm, until a power event. It never returns.
func initMain() {
	m, err := appliance.Boot(appliance.Config{Hostname: "sluice"})
	if err != nil {
		// Boot logs what it could not do; without a machine there is
		// nothing to run on.
		fmt.Fprintf(os.Stderr, "sluice: boot: %v\n", err)
		for {
			unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
			time.Sleep(time.Second)
		}
	}
	logger := log.New(m.Console, "sluice: ", 0)
	if !m.PermPersistent {
		logger.Print("WARNING: /perm is not persistent: policy commits, keys and the audit log are lost at reboot")
	}
	ctx, cancel := context.WithCancel(context.Background())
	esp, running, slots := mountESP(m, logger)
	mach := machine{
		supervise: func(ctx context.Context, name string, run func(context.Context) error) {
			appliance.Supervise(ctx, logger.Printf, name, run)
		},
		power: func(p tui.Power) error {
			ev := appliance.Reboot
			if p == tui.PowerOff {
				ev = appliance.PowerOff
			}
			m.Request(ev)
			return nil
		},
	}
	healthy := make(chan struct{})
	mach.ready = func() {
		close(healthy)
		logger.Print("ready")
		if !slots {
			return
		}
		good, err := esp.MarkGood(running)
		if err != nil {
			logger.Printf("boot slot: %v", err)
			return
		}
		if running.Trial {
			logger.Printf("boot slot %d is healthy: it boots from now on", good.Gen)
		}
	}
	if slots {
		mach.update = func(uki []byte) (string, error) {
			s, err := esp.Install(uki, running)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("installed boot slot %d (%d tries to become healthy; slot %d stays as the fallback)", s.Gen, slot.Tries, running.Gen), nil
		}
		if running.Trial {
			go func() {
				select {
				case <-healthy:
				case <-time.After(healthDeadline):
					logger.Printf("boot slot %d did not become healthy within %v: rebooting", running.Gen, healthDeadline)
					mach.power(tui.Reboot)
				}
			}()
		}
	}
	consoles := listFlag{"/dev/ttyS0"}
	if _, err := os.Stat("/sys/class/tty/tty1"); err == nil && hasVGA() {
		consoles = append(consoles, "/dev/tty1")
	}
	o := runOptions{
		state: "/perm", ssh: ":22", console: consoles, metrics: ":9100",
		confirm: router.DefaultConfirm, check: 5 * time.Second, stale: 24 * time.Hour,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		appliance.Supervise(ctx, logger.Printf, "daemon", func(ctx context.Context) error {
			return daemon(ctx, o, strings.NewReader(""), logger, mach)
		})
	}()
	ev := <-m.Events()
	logger.Printf("%s requested", ev)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	if slots {
		unix.Unmount("/esp", 0)
	}
	for {
		m.Shutdown(ev) // returns only if the kernel refused; try again
		time.Sleep(time.Second)
	}
}

// hasVGA reports whether the machine has a display for tty1.
func hasVGA() bool {
	b, err := os.ReadFile("/proc/cmdline")
	return err == nil && strings.Contains(string(b), "console=tty1")
}

// mountESP mounts the EFI system partition at /esp and finds the slot that
// booted. slots is false when the machine did not boot from a slot (a
// kernel started directly, as sluice vm does without --uefi).
func mountESP(m *appliance.Machine, logger *log.Logger) (esp slot.ESP, running slot.Slot, slots bool) {
	dev := m.Partition(image.ESPName)
	if dev == "" {
		return esp, running, false
	}
	os.MkdirAll("/esp", 0o755)
	if err := unix.Mount(dev, "/esp", "vfat", unix.MS_NOATIME, "iocharset=utf8"); err != nil {
		logger.Printf("mount the EFI system partition %s: %v; updates are off", dev, err)
		return esp, running, false
	}
	os.MkdirAll("/sys/firmware/efi/efivars", 0o755)
	if err := unix.Mount("efivarfs", "/sys/firmware/efi/efivars", "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil && err != unix.EBUSY {
		logger.Printf("mount efivarfs: %v", err)
	}
	esp = slot.ESP{Dir: "/esp"}
	running, ok, err := esp.Current("/sys/firmware/efi/efivars")
	if err != nil || !ok {
		logger.Printf("boot slot: not known (%v); updates keep the newest good slot", err)
		return esp, running, true
	}
	logger.Printf("booted from slot %s", running)
	return esp, running, true
}
