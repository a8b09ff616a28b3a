package appliance

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"
)

// Console writes boot messages stamped with the time since the kernel
// booted, like the kernel's own: "[   1.234] sluice: modules loaded".
//
// It is an io.Writer for log.New: every line written gets its own stamp, and
// a write that does not end in a newline is ended with one. Logf adds the
// "sluice: " prefix. A Console is safe for concurrent use.
type Console struct {
	mu     sync.Mutex
	w      io.Writer
	uptime func() time.Duration
	buf    []byte // reused under mu
}

// NewConsole returns a Console writing to w. uptime gives the time since
// boot; nil means the kernel's CLOCK_BOOTTIME.
func NewConsole(w io.Writer, uptime func() time.Duration) *Console {
	if uptime == nil {
		uptime = bootTime
	}
	return &Console{w: w, uptime: uptime}
}

// Write stamps each line of p and writes it out in one write.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	stamp := stamp(c.uptime())
	c.buf = c.buf[:0]
	for len(p) > 0 {
		line, rest, found := bytes.Cut(p, []byte("\n"))
		c.buf = append(c.buf, stamp...)
		c.buf = append(c.buf, line...)
		c.buf = append(c.buf, '\n')
		p = rest
		if !found {
			break
		}
	}
	_, err := c.w.Write(c.buf)
	return n, err
}

// Logf writes one message prefixed with "sluice: ".
func (c *Console) Logf(format string, args ...any) {
	c.Write([]byte("sluice: " + fmt.Sprintf(format, args...)))
}

// stamp formats d as the kernel does: seconds with millisecond precision,
// right-aligned in eight columns, in brackets, followed by a space.
func stamp(d time.Duration) string {
	ms := d.Milliseconds()
	return fmt.Sprintf("[%4d.%03d] ", ms/1000, ms%1000)
}
