package lab

import (
	"fmt"
	"net"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs f on an OS thread inside network namespace ns (by name, as in
// /run/netns), then returns the thread to the caller's namespace. Sockets f
// opens stay in ns after Do returns, so a listener made in Do serves ns.
func Do(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is locked and never unlocked: if switching back fails,
		// the runtime discards it with the goroutine instead of reusing a
		// thread in the wrong namespace.
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back from %s: %w", ns, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Listen opens a listener inside namespace ns; it serves ns from then on,
// whatever thread accepts on it.
func Listen(ns, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := Do(ns, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, addr, ns, err)
	}
	return ln, nil
}
