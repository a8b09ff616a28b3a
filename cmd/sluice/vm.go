package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicefw/sluice/appliance"
)

// vmOptions are sluice vm's flags.
type vmOptions struct {
	image    string
	uefi     bool
	perm     string
	lanNetns string
	sshPort  int
	accel    string
	memory   int
	cmdline  string
	monitor  string
}

func runVM(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("vm", "[--image DIR] [--uefi] [--lan-netns NAME] [--accel tcg|kvm]", `Boot the appliance image (from "sluice image --out DIR") under qemu, with
the serial console on this terminal (Ctrl-A x quits qemu):

  eth0 (wan)  qemu's user networking; the box's SSH port is forwarded
              to 127.0.0.1:--ssh-port on this host
  eth1 (lan)  a tap device in network namespace --lan-netns (created if
              missing; 192.168.1.10/24 and fd00:53:1::10/64, routes via
              the box), or unconnected without it; needs root

By default the kernel and initramfs boot directly (-kernel/-initrd, about
3 s to the console) with /perm on its own disk, DIR/perm.img; --uefi boots
DIR/disk.img through OVMF and systemd-boot instead, with /perm on its
partition. KVM fails on some hosts with an internal emulation error, so
TCG is the default.`, stderr)
	var o vmOptions
	fs.StringVar(&o.image, "image", filepath.Join(".cache", "image"), "the image directory")
	fs.BoolVar(&o.uefi, "uefi", false, "boot disk.img through UEFI (OVMF) and systemd-boot")
	fs.StringVar(&o.perm, "perm", "", "the /perm disk without --uefi (default DIR/perm.img, made if missing)")
	fs.StringVar(&o.lanNetns, "lan-netns", "", "attach eth1 to a tap device in this network namespace")
	fs.IntVar(&o.sshPort, "ssh-port", 2222, "host port forwarded to the box's SSH port on wan")
	fs.StringVar(&o.accel, "accel", "tcg", "tcg or kvm")
	fs.IntVar(&o.memory, "memory", 512, "memory in MiB")
	fs.StringVar(&o.cmdline, "cmdline", "", "the kernel command line without --uefi (default: the image's)")
	fs.StringVar(&o.monitor, "monitor", "", "serve qemu's monitor on this unix socket (for system_powerdown and the like)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 || (o.accel != "tcg" && o.accel != "kvm") {
		fs.Usage()
		return 2
	}
	if err := vm(o, stdin, stdout, stderr); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintf(stderr, "sluice vm: %v\n", err)
		return 1
	}
	return 0
}

// vm runs qemu until it exits.
func vm(o vmOptions, stdin io.Reader, stdout, stderr io.Writer) error {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return fmt.Errorf("needs qemu-system-x86_64 (make deps installs qemu-system-x86): %w", err)
	}
	if !o.uefi && o.perm == "" {
		o.perm = filepath.Join(o.image, "perm.img")
	}
	if !o.uefi {
		if err := ensureDisk(o.perm, 64<<20); err != nil {
			return err
		}
	}
	tap := ""
	if o.lanNetns != "" {
		tap = fmt.Sprintf("sluvm%d", os.Getpid()%100000)
		if out, err := exec.Command("ip", "tuntap", "add", "dev", tap, "mode", "tap").CombinedOutput(); err != nil {
			return fmt.Errorf("ip tuntap add %s: %v: %s", tap, err, out)
		}
		defer exec.Command("ip", "link", "del", tap).Run() // if it never moved
	}
	args, err := qemuArgs(o, tap, isTerminal(stdin))
	if err != nil {
		return err
	}
	cmd := exec.Command(qemu, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start qemu: %w", err)
	}
	if tap != "" {
		if err := lanClient(o.lanNetns, tap); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return err
		}
	}
	// qemu owns the terminal; an interrupt is passed on, not obeyed here.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case err := <-done:
			return err
		case s := <-sigs:
			cmd.Process.Signal(s)
		}
	}
}

// qemuArgs returns qemu's command line.
func qemuArgs(o vmOptions, tap string, terminal bool) ([]string, error) {
	args := []string{"-nodefaults", "-no-user-config", "-display", "none", "-m", strconv.Itoa(o.memory), "-smp", "1"}
	if o.accel == "kvm" {
		args = append(args, "-accel", "kvm", "-cpu", "host,-arch-capabilities")
	} else {
		args = append(args, "-accel", "tcg")
	}
	switch {
	case o.monitor != "":
		args = append(args, "-serial", "stdio", "-monitor", "unix:"+o.monitor+",server=on,wait=off")
	case terminal:
		args = append(args, "-serial", "mon:stdio")
	default:
		args = append(args, "-serial", "stdio", "-monitor", "none")
	}
	args = append(args,
		"-netdev", fmt.Sprintf("user,id=wan,hostfwd=tcp:127.0.0.1:%d-:22", o.sshPort),
		"-device", "virtio-net-pci,netdev=wan,mac=52:54:00:5c:00:01,romfile=")
	if tap != "" {
		args = append(args, "-netdev", "tap,id=lan,ifname="+tap+",script=no,downscript=no")
	} else {
		args = append(args, "-netdev", "user,id=lan,restrict=on")
	}
	args = append(args, "-device", "virtio-net-pci,netdev=lan,mac=52:54:00:5c:00:02,romfile=",
		"-device", "i6300esb", "-action", "watchdog=reset")
	if o.uefi {
		const ovmf = "/usr/share/ovmf/OVMF.fd"
		if _, err := os.Stat(ovmf); err != nil {
			return nil, fmt.Errorf("needs %s (make deps installs ovmf): %w", ovmf, err)
		}
		args = append(args, "-bios", ovmf,
			"-drive", "if=none,id=disk,format=raw,file="+filepath.Join(o.image, "disk.img"),
			"-device", "virtio-blk-pci,drive=disk,bootindex=0")
		return args, nil
	}
	cmdline := o.cmdline
	if cmdline == "" {
		cmdline = defaultVMCmdline
	}
	args = append(args,
		"-kernel", filepath.Join(o.image, "vmlinuz"),
		"-initrd", filepath.Join(o.image, "initrd.img"),
		"-append", cmdline,
		"-drive", "if=none,id=perm,format=raw,file="+o.perm,
		"-device", "virtio-blk-pci,drive=perm,serial="+appliance.PermLabel)
	return args, nil
}

// defaultVMCmdline is the image's command line (image.DefaultCmdline)
// without the VGA console, which a VM without a display does not have.
const defaultVMCmdline = "console=ttyS0,115200 panic=5 quiet"

// ensureDisk makes a sparse file of size bytes if name does not exist.
func ensureDisk(name string, size int64) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("perm disk: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("perm disk %s: %w", name, err)
	}
	return nil
}

// lanClient moves the tap qemu opened into the lan client's namespace
// (made if missing) and gives it the lan's client addresses and routes.
func lanClient(ns, tap string) error {
	if err := exec.Command("ip", "netns", "exec", ns, "true").Run(); err != nil {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			return fmt.Errorf("ip netns add %s: %v: %s", ns, err, out)
		}
	}
	// qemu opens the tap shortly after it starts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile("/sys/class/net/" + tap + "/tun_flags")
		if len(b) > 0 && carrier(tap) {
			break
		}
		if time.Now().After(deadline) {
			break // move it anyway; the link comes up when qemu attaches
		}
		time.Sleep(20 * time.Millisecond)
	}
	// An eth0 left in the namespace by an earlier VM goes.
	exec.Command("ip", "netns", "exec", ns, "ip", "link", "del", "eth0").Run()
	steps := [][]string{
		{"ip", "link", "set", tap, "netns", ns},
		{"ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", ns, "ip", "link", "set", tap, "name", "eth0"},
		{"ip", "netns", "exec", ns, "ip", "address", "add", "192.168.1.10/24", "dev", "eth0"},
		{"ip", "netns", "exec", ns, "ip", "address", "add", "fd00:53:1::10/64", "dev", "eth0", "nodad"},
		{"ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up"},
		{"ip", "netns", "exec", ns, "ip", "route", "replace", "default", "via", "192.168.1.1"},
		{"ip", "netns", "exec", ns, "ip", "-6", "route", "replace", "default", "via", "fd00:53:1::1"},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return nil
}

func carrier(dev string) bool {
	b, _ := os.ReadFile("/sys/class/net/" + dev + "/carrier")
	return strings.TrimSpace(string(b)) == "1"
}

// isTerminal reports whether r is a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
