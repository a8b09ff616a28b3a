package sshd

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// terminal is a pseudo-terminal for the OpenSSH client, so that it sends
// a real window size and resizes.
type terminal struct {
	ptm *os.File // the test's end
	tty *os.File // the client's end, closed once the client has it
}

// openTerminal opens a pseudo-terminal of cols×rows.
func openTerminal(cols, rows int) (*terminal, error) {
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	var n int
	err = control(ptm, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return fmt.Errorf("unlock: %w", err)
		}
		var err error
		n, err = unix.IoctlGetInt(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		ptm.Close()
		return nil, fmt.Errorf("pseudo-terminal: %w", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		ptm.Close()
		return nil, fmt.Errorf("open /dev/pts/%d: %w", n, err)
	}
	t := &terminal{ptm: ptm, tty: tty}
	if err := t.resize(cols, rows); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// resize sets the terminal's size; the kernel tells the client with SIGWINCH.
func (t *terminal) resize(cols, rows int) error {
	err := control(t.ptm, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Col: uint16(cols), Row: uint16(rows)})
	})
	if err != nil {
		return fmt.Errorf("resize terminal to %dx%d: %w", cols, rows, err)
	}
	return nil
}

// attach makes the terminal cmd's stdio and controlling terminal.
func (t *terminal) attach(cmd *exec.Cmd) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = t.tty, t.tty, t.tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
}

func (t *terminal) closeTTY() {
	if t.tty != nil {
		t.tty.Close()
		t.tty = nil
	}
}

func (t *terminal) Close() error {
	t.closeTTY()
	return t.ptm.Close()
}
