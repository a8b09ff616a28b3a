// Package appliance makes sluice a machine's init: when the kernel starts
// sluice as PID 1 it mounts the kernel filesystems, loads modules, finds and
// mounts the persistent partition at /perm, feeds the hardware watchdog, reaps
// orphans, turns power events into a clean reboot or poweroff and restarts the
// router's services when they fail.
//
// It exists so that the appliance is one static binary and nothing else: no
// shell, no udev, no modprobe. Every path it touches is joined under
// Config.Root and every system call goes through a function field of Config,
// so the decisions are tested on a fake root without privileges; what only a
// real kernel can show is left to the boot test under qemu.
package appliance
