package appliance

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
	"time"
)

// Backoff bounds for restarting a service: the first restart waits
// MinBackoff, each further one twice as long up to MaxBackoff, and a run
// that lasted StableAfter resets the wait to MinBackoff.
const (
	MinBackoff  = time.Second
	MaxBackoff  = time.Minute
	StableAfter = time.Minute
)

// Supervisor restarts a service that returns or panics. The zero value
// uses the real clock and discards log messages. A Supervisor holds no
// state of its own, so one value may run many services concurrently.
type Supervisor struct {
	// Logf receives one line per failure and restart; nil discards them.
	Logf func(format string, args ...any)
	// Now reads the clock; default time.Now.
	Now func() time.Time
	// Sleep waits d or until ctx ends, returning ctx.Err() then; default a
	// timer.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Supervise runs run under a Supervisor with the real clock, logging to
// logf, until ctx ends.
func Supervise(ctx context.Context, logf func(format string, args ...any), name string, run func(ctx context.Context) error) {
	(&Supervisor{Logf: logf}).Run(ctx, name, run)
}

// Run calls run and, whenever it returns or panics, logs why and calls it
// again after a backoff (see MinBackoff), until ctx ends. It returns when
// ctx is done, after run has returned.
func (s *Supervisor) Run(ctx context.Context, name string, run func(ctx context.Context) error) {
	now, sleep, logf := s.Now, s.Sleep, s.Logf
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = sleepCtx
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	backoff := MinBackoff
	for attempt := 1; ; attempt++ {
		start := now()
		err := runRecovered(ctx, run)
		if ctx.Err() != nil {
			logf("%s: stopped", name)
			return
		}
		ran := now().Sub(start)
		if ran >= StableAfter {
			backoff = MinBackoff
		}
		if err != nil {
			logf("%s: failed after %v (run %d): %v", name, ran.Round(time.Millisecond), attempt, err)
		} else {
			logf("%s: exited after %v (run %d)", name, ran.Round(time.Millisecond), attempt)
		}
		logf("%s: restarting in %v", name, backoff)
		if sleep(ctx, backoff) != nil {
			logf("%s: stopped", name)
			return
		}
		backoff = min(2*backoff, MaxBackoff)
	}
}

// panicStackLines is how much of a panicking service's stack is logged.
const panicStackLines = 12

// runRecovered calls run and turns a panic into an error carrying the
// panic value and the top of the stack.
func runRecovered(ctx context.Context, run func(ctx context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, stackHead(debug.Stack(), panicStackLines))
		}
	}()
	return run(ctx)
}

// stackHead returns the first n lines of a panic's stack trace, starting at
// the function that panicked: the frames of debug.Stack, the recovering
// function and panic itself are left out.
func stackHead(stack []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(stack), "\n"), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic(") {
			lines = lines[i+2:] // the call and its file:line
			break
		}
	}
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
