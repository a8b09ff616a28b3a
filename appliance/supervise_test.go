package appliance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeSupervisor is a Supervisor on a fake clock that records its sleeps
// and log lines.
type fakeSupervisor struct {
	Supervisor
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
	logs   []string
}

func newFakeSupervisor() *fakeSupervisor {
	f := &fakeSupervisor{now: time.Unix(0, 0)}
	f.Now = func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
	f.Sleep = func(ctx context.Context, d time.Duration) error {
		f.advance(d)
		f.mu.Lock()
		f.sleeps = append(f.sleeps, d)
		f.mu.Unlock()
		return ctx.Err()
	}
	f.Logf = func(format string, args ...any) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.logs = append(f.logs, fmt.Sprintf(format, args...))
	}
	return f
}

func (f *fakeSupervisor) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func TestSupervisorBackoff(t *testing.T) {
	f := newFakeSupervisor()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Each entry is how long one run lasts before failing.
	runs := []time.Duration{0, 0, 0, 0, 0, 0, 0, 0, 0, 61 * time.Second, 0, 0, 30 * time.Second, 0}
	calls := 0
	f.Run(ctx, "routerd", func(ctx context.Context) error {
		f.advance(runs[calls])
		if calls++; calls == len(runs) {
			cancel()
		}
		return errors.New("link down")
	})

	s := time.Second
	want := []time.Duration{
		1 * s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 60 * s, 60 * s, 60 * s, // doubling, capped at a minute
		1 * s, 2 * s, 4 * s, // reset after a run of over a minute
		8 * s, // 30 s is not long enough to reset
	}
	if diff := cmp.Diff(want, f.sleeps); diff != "" {
		t.Errorf("backoff sleeps (-want +got):\n%s", diff)
	}
	if got, want := f.logs[0], "routerd: failed after 0s (run 1): link down"; got != want {
		t.Errorf("first log = %q, want %q", got, want)
	}
	if got, want := f.logs[1], "routerd: restarting in 1s"; got != want {
		t.Errorf("second log = %q, want %q", got, want)
	}
	if got := f.logs[len(f.logs)-1]; got != "routerd: stopped" {
		t.Errorf("last log = %q, want stopped", got)
	}
}

func TestSupervisorRestartsCleanExit(t *testing.T) {
	f := newFakeSupervisor()
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	f.Run(ctx, "dns", func(ctx context.Context) error {
		if calls++; calls == 2 {
			cancel()
		}
		return nil
	})
	if calls != 2 {
		t.Errorf("run called %d times, want 2", calls)
	}
	if !strings.HasPrefix(f.logs[0], "dns: exited after") {
		t.Errorf("log = %q, want an exit notice", f.logs[0])
	}
}

func helperThatPanics() { panic("boom") }

func TestSupervisorRecoversPanic(t *testing.T) {
	f := newFakeSupervisor()
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	f.Run(ctx, "sshd", func(ctx context.Context) error {
		if calls++; calls == 2 {
			cancel()
			return nil
		}
		helperThatPanics()
		return nil
	})
	if calls != 2 {
		t.Fatalf("run called %d times, want 2 (restarted after the panic)", calls)
	}
	msg := f.logs[0]
	const wantHead = "sshd: failed after 0s (run 1): panic: boom\ngithub.com/sluicefw/sluice/appliance.helperThatPanics("
	if !strings.HasPrefix(msg, wantHead) {
		t.Errorf("log = %q, want it to start with the panic value and the panicking function %q", msg, wantHead)
	}
	if strings.Contains(msg, "runtime/debug.Stack") {
		t.Errorf("log starts inside the recovery, not at the panic:\n%s", msg)
	}
	if n := strings.Count(msg, "\n"); n > panicStackLines+1 {
		t.Errorf("log has %d lines, want at most %d", n+1, panicStackLines+2)
	}
}

func TestSupervisorStopsOnCancel(t *testing.T) {
	t.Run("while running", func(t *testing.T) {
		f := newFakeSupervisor()
		ctx, cancel := context.WithCancel(context.Background())
		f.Run(ctx, "tui", func(ctx context.Context) error {
			cancel()
			<-ctx.Done()
			return ctx.Err()
		})
		if len(f.sleeps) != 0 {
			t.Errorf("slept %v after cancel", f.sleeps)
		}
		if diff := cmp.Diff([]string{"tui: stopped"}, f.logs); diff != "" {
			t.Errorf("logs (-want +got):\n%s", diff)
		}
	})
	t.Run("while backing off, real clock", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		started := make(chan struct{}, 1)
		go func() {
			defer close(done)
			Supervise(ctx, t.Logf, "flaky", func(ctx context.Context) error {
				started <- struct{}{}
				return errors.New("fail")
			})
		}()
		<-started
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Supervise did not return after cancel")
		}
	})
}
