package appliance

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeKernel records the system calls Boot and Shutdown make and answers
// them from its fields.
type fakeKernel struct {
	t    *testing.T
	root string

	mu    sync.Mutex
	calls []string
	now   time.Time
	// signals holds the channels handed to Notify, by signal.
	signals map[os.Signal]chan<- os.Signal

	// mountErr answers mount by target (relative to root).
	mountErr map[string]error
	// moduleErr answers finit_module by module base name.
	moduleErr map[string]error
	// rebootErr answers reboot.
	rebootErr error
	// run answers the mkfs run; nil succeeds and writes an ext4 magic.
	runErr error
	pid    int
}

func newFakeKernel(t *testing.T) *fakeKernel {
	return &fakeKernel{
		t: t, root: t.TempDir(), now: time.Unix(1000, 0),
		signals:  map[os.Signal]chan<- os.Signal{},
		mountErr: map[string]error{}, moduleErr: map[string]error{},
		pid: 4242,
	}
}

func (k *fakeKernel) record(format string, args ...any) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, fmt.Sprintf(format, args...))
}

// Calls returns the recorded calls starting with prefix.
func (k *fakeKernel) Calls(prefix string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var got []string
	for _, c := range k.calls {
		if strings.HasPrefix(c, prefix) {
			got = append(got, c)
		}
	}
	return got
}

func (k *fakeKernel) rel(p string) string {
	r, err := filepath.Rel(k.root, p)
	if err != nil || strings.HasPrefix(r, "..") {
		k.t.Errorf("path %s is outside the root %s", p, k.root)
		return p
	}
	return "/" + r
}

// config returns a Config whose every seam is this fake.
func (k *fakeKernel) config(console *syncBuffer) Config {
	return Config{
		Root:    k.root,
		Console: console,
		Mount: func(source, target, fstype string, flags uintptr, data string) error {
			rel := k.rel(target)
			if strings.HasPrefix(source, k.root) {
				source = k.rel(source)
			}
			k.record("mount %s %s %s %#x %q", source, rel, fstype, flags, data)
			return k.mountErr[rel]
		},
		Unmount: func(target string, flags int) error {
			k.record("unmount %s %#x", k.rel(target), flags)
			return nil
		},
		FinitModule: func(fd int, params string, flags int) error {
			p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
			if err != nil {
				k.t.Errorf("finit_module fd %d: %v", fd, err)
			}
			name := filepath.Base(p)
			k.record("finit_module %s", name)
			return k.moduleErr[name]
		},
		Sethostname: func(name []byte) error { k.record("sethostname %s", name); return nil },
		Reboot: func(cmd int) error {
			k.record("reboot %#x", uint32(cmd))
			return k.rebootErr
		},
		Sync:    func() { k.record("sync") },
		Release: func() (string, error) { return "6.1.0-test", nil },
		LinkUp:  func(name string) error { k.record("linkup %s", name); return nil },
		Run: func(argv []string) ([]byte, error) {
			dev := argv[len(argv)-1]
			argv[len(argv)-1] = k.rel(dev)
			k.record("run %s", strings.Join(argv, " "))
			if k.runErr != nil {
				return []byte("mke2fs: no"), k.runErr
			}
			writeExt(k.t, dev, true)
			return nil, nil
		},
		Wait4: func(pid int) (int, error) { k.record("wait4 %d", pid); return pid, nil },
		AttachConsole: func(path string) (*os.File, error) {
			k.t.Error("AttachConsole with a Console set")
			return nil, os.ErrInvalid
		},
		Notify: func(c chan<- os.Signal, sigs ...os.Signal) {
			k.mu.Lock()
			defer k.mu.Unlock()
			for _, s := range sigs {
				k.signals[s] = c
			}
		},
		Getpid: func() int { return k.pid },
		Now: func() time.Time {
			k.mu.Lock()
			defer k.mu.Unlock()
			return k.now
		},
		Sleep: func(d time.Duration) {
			k.mu.Lock()
			defer k.mu.Unlock()
			k.now = k.now.Add(d)
		},
		Uptime: func() time.Duration { return 1234 * time.Millisecond },
	}
}

// signal delivers sig as the kernel would to a Notify channel.
func (k *fakeKernel) signal(sig os.Signal) {
	k.mu.Lock()
	c := k.signals[sig]
	k.mu.Unlock()
	if c == nil {
		k.t.Fatalf("nobody listens for %v", sig)
	}
	c <- sig
}

// file writes a file under the root, creating its directories.
func (k *fakeKernel) file(path, content string) string {
	k.t.Helper()
	p := filepath.Join(k.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		k.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		k.t.Fatal(err)
	}
	return p
}

// disk writes a 4 KiB device image under the root, with or without an ext4
// superblock magic.
func (k *fakeKernel) disk(path string, ext bool) string {
	k.t.Helper()
	p := k.file(path, string(make([]byte, 4096)))
	writeExt(k.t, p, ext)
	return p
}

func writeExt(t *testing.T, path string, ext bool) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	magic := []byte{0, 0}
	if ext {
		magic = []byte{0x53, 0xEF}
	}
	if _, err := f.WriteAt(magic, extMagicOffset); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a bytes.Buffer safe for the goroutines Boot leaves running.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
