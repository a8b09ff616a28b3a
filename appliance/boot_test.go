package appliance

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// kernelMountCalls is what every Boot mounts, in order.
var kernelMountCalls = []string{
	`mount proc /proc proc 0xe ""`,
	`mount sysfs /sys sysfs 0xe ""`,
	`mount devtmpfs /dev devtmpfs 0x2 "mode=0755"`,
	`mount devpts /dev/pts devpts 0xa "mode=0620,ptmxmode=0666"`,
	`mount tmpfs /dev/shm tmpfs 0x6 "mode=1777"`,
	`mount tmpfs /run tmpfs 0x6 "mode=0755"`,
	`mount tmpfs /tmp tmpfs 0x6 "mode=1777"`,
}

func TestBootOrder(t *testing.T) {
	k := newFakeKernel(t)
	k.file("/lib/modules/6.1.0-test/modules.load",
		"lib/modules/6.1.0-test/kernel/virtio.ko\nlib/modules/6.1.0-test/kernel/virtio_blk.ko\n")
	k.file("/lib/modules/6.1.0-test/kernel/virtio.ko", "")
	k.file("/lib/modules/6.1.0-test/kernel/virtio_blk.ko", "")
	k.file("/sys/block/vdb/serial", "sluice-perm\n")
	k.disk("/dev/vdb", true)
	var console syncBuffer

	m, err := Boot(k.config(&console))
	if err != nil {
		t.Fatalf("Boot: %v", err)
	}

	want := append(append([]string{}, kernelMountCalls...),
		"finit_module virtio.ko",
		"finit_module virtio_blk.ko",
		"sethostname sluice",
		"linkup lo",
		`mount /dev/vdb /perm ext4 0x400 ""`,
		"reboot 0x0", // ctrl-alt-del sends SIGINT to PID 1
	)
	var got []string
	for _, c := range k.Calls("") {
		if !strings.HasPrefix(c, "wait4") && !strings.HasPrefix(c, "sync") {
			got = append(got, c)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Boot calls (-want +got):\n%s\nconsole:\n%s", diff, console.String())
	}
	if m.PermDevice != "/dev/vdb" || !m.PermPersistent {
		t.Errorf("PermDevice, PermPersistent = %q, %v; want /dev/vdb, true", m.PermDevice, m.PermPersistent)
	}
	if want := (ModuleStats{Loaded: 2}); m.Modules != want {
		t.Errorf("Modules = %+v, want %+v", m.Modules, want)
	}
	for _, line := range []string{
		"[   1.234] sluice: mounted kernel file systems\n",
		"[   1.234] sluice: modules: 2 loaded, 0 already present, 0 failed in 0s\n",
		"[   1.234] sluice: hostname sluice\n",
		"[   1.234] sluice: lo up\n",
		"[   1.234] sluice: perm: /dev/vdb mounted at /perm\n",
		"[   1.234] sluice: boot done\n",
	} {
		if !strings.Contains(console.String(), line) {
			t.Errorf("console lacks %q; got:\n%s", line, console.String())
		}
	}
	for _, dir := range []string{"/proc", "/sys", "/dev/pts", "/dev/shm", "/run", "/tmp", "/perm"} {
		if fi, err := os.Stat(k.root + dir); err != nil || !fi.IsDir() {
			t.Errorf("mount point %s not created: %v", dir, err)
		}
	}
	if err := m.Shutdown(Reboot); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestBootMountFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mountErr map[string]error
		wantErr  bool
		wantLog  string
	}{
		{"already mounted", map[string]error{"/proc": unix.EBUSY, "/dev": unix.EBUSY}, false, ""},
		{"tmp fails", map[string]error{"/tmp": unix.EPERM}, false, "mount tmpfs tmpfs at " + "ROOT/tmp: operation not permitted"},
		{"sysfs fails", map[string]error{"/sys": unix.ENODEV}, true, "mount sysfs sysfs at ROOT/sys: no such device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel(t)
			k.mountErr = tc.mountErr
			var console syncBuffer
			m, err := Boot(k.config(&console))
			if (err != nil) != tc.wantErr {
				t.Errorf("Boot error = %v, want error %v", err, tc.wantErr)
			}
			if m == nil {
				t.Fatal("Boot returned no Machine")
			}
			if wantLog := strings.ReplaceAll(tc.wantLog, "ROOT", k.root); !strings.Contains(console.String(), wantLog) {
				t.Errorf("console lacks %q; got:\n%s", wantLog, console.String())
			}
			// The boot went on to the end either way.
			if got := k.Calls("sethostname"); len(got) != 1 {
				t.Errorf("sethostname calls = %q, want one", got)
			}
			if got := k.Calls("mount tmpfs /perm"); len(got) != 1 {
				t.Errorf("/perm fallback mounts = %q, want one", got)
			}
		})
	}
}

func TestBootHostnameFromCmdline(t *testing.T) {
	for _, tc := range []struct {
		name, configured, cmdline, want string
	}{
		{"default", "", "console=ttyS0", "sethostname sluice"},
		{"configured", "gw1", "console=ttyS0", "sethostname gw1"},
		{"cmdline wins", "gw1", "console=ttyS0 sluice.hostname=edge7 quiet", "sethostname edge7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel(t)
			k.file("/proc/cmdline", tc.cmdline+"\n")
			cfg := k.config(&syncBuffer{})
			cfg.Hostname = tc.configured
			if _, err := Boot(cfg); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{tc.want}, k.Calls("sethostname")); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestShutdown(t *testing.T) {
	for _, tc := range []struct {
		name       string
		persistent bool
		ev         Event
		want       []string
	}{
		{"reboot", true, Reboot, []string{"sync", "unmount /perm 0x2", "sync", "reboot 0x1234567"}},
		{"poweroff", true, PowerOff, []string{"sync", "unmount /perm 0x2", "sync", "reboot 0x4321fedc"}},
		{"tmpfs perm is not unmounted", false, PowerOff, []string{"sync", "reboot 0x4321fedc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel(t)
			if tc.persistent {
				k.file("/sys/block/vdb/serial", "sluice-perm\n")
				k.disk("/dev/vdb", true)
			}
			wd := k.file("/dev/watchdog", "")
			m, err := Boot(k.config(&syncBuffer{}))
			if err != nil {
				t.Fatal(err)
			}
			k.mu.Lock()
			k.calls = nil
			k.mu.Unlock()
			if err := m.Shutdown(tc.ev); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			var got []string
			for _, c := range k.Calls("") {
				if !strings.HasPrefix(c, "wait4") {
					got = append(got, c)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Shutdown calls (-want +got):\n%s", diff)
			}
			b, err := os.ReadFile(wd)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) < 2 || b[0] != 0 || b[len(b)-1] != 'V' || strings.Trim(string(b[:len(b)-1]), "\x00") != "" {
				t.Errorf("watchdog got %q, want keepalive zeros then the magic close V", b)
			}
		})
	}
}

func TestShutdownAsInitKeepsTryingPowerOff(t *testing.T) {
	k := newFakeKernel(t)
	k.pid = 1
	k.rebootErr = unix.EPERM
	cfg := k.config(&syncBuffer{})
	m, _ := Boot(cfg)
	sleeps := 0
	m.cfg.Sleep = func(d time.Duration) {
		if sleeps++; sleeps == 3 {
			runtime.Goexit() // stand-in for the machine finally powering off
		}
	}
	k.mu.Lock()
	k.calls = nil
	k.mu.Unlock()
	done := make(chan struct{})
	returned := false
	go func() {
		defer close(done)
		m.Shutdown(Reboot)
		returned = true
	}()
	<-done
	if returned {
		t.Fatal("Shutdown returned as PID 1")
	}
	want := []string{"reboot 0x1234567", "reboot 0x4321fedc", "reboot 0x4321fedc"}
	if diff := cmp.Diff(want, k.Calls("reboot")); diff != "" {
		t.Errorf("reboot calls (-want +got):\n%s", diff)
	}
}

func TestIsInit(t *testing.T) {
	if IsInit() {
		t.Error("IsInit() = true in a test process")
	}
}
