package appliance

import (
	"os"
	"sync"
	"time"
)

// watchdog feeds the hardware watchdog. Opening /dev/watchdog arms it; from
// then on the machine resets unless it is written to within the driver's
// timeout, so a hung sluice reboots the box. close disarms it with the
// magic character before a clean poweroff or reboot.
type watchdog struct {
	f    *os.File
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// openWatchdog opens path and feeds it every interval until close. A missing
// device is (nil, nil): not every machine has one.
func openWatchdog(path string, interval time.Duration, logf func(string, ...any)) (*watchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if os.IsNotExist(err) {
		return nil, nil // no watchdog on this machine
	}
	if err != nil {
		return nil, err
	}
	w := &watchdog{f: f, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if _, err := f.Write([]byte{0}); err != nil {
				logf("watchdog: keepalive: %v", err)
			}
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w, nil
}

// close stops feeding, writes the magic close character 'V' so the driver
// disarms, and closes the device. It is safe to call more than once.
func (w *watchdog) close() error {
	if w == nil {
		return nil // no watchdog, nothing to disarm
	}
	var err error
	w.once.Do(func() {
		close(w.stop)
		<-w.done
		if _, werr := w.f.Write([]byte("V")); werr != nil {
			err = werr
		}
		if cerr := w.f.Close(); err == nil {
			err = cerr
		}
	})
	return err
}
