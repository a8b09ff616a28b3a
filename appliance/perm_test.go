package appliance

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestHasExtSuperblock(t *testing.T) {
	with := make([]byte, 2048)
	with[1080], with[1081] = 0x53, 0xEF
	swapped := make([]byte, 2048)
	swapped[1080], swapped[1081] = 0xEF, 0x53
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"ext4", with, true},
		{"zeros", make([]byte, 2048), false},
		{"big-endian magic", swapped, false},
		{"too small", make([]byte, 1000), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := hasExtSuperblock(bytes.NewReader(tc.b))
			if err != nil || got != tc.want {
				t.Errorf("hasExtSuperblock = %v, %v; want %v, nil", got, err, tc.want)
			}
		})
	}
}

func TestMkfsArgv(t *testing.T) {
	got := mkfsArgv(Config{}.withDefaults().Mkfs, "/dev/vdb")
	want := []string{"/lib/sluice/mke2fs", "-q", "-t", "ext4", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", "-L", "sluice-perm", "/dev/vdb"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// setup prepares a fake root for one /perm case.
type permSetup func(k *fakeKernel)

func partition(name string, ext bool) permSetup {
	return func(k *fakeKernel) {
		k.file("/sys/class/block/"+name+"/uevent", "MAJOR=254\nMINOR=17\nDEVNAME="+name+"\nDEVTYPE=partition\nPARTN=1\nPARTNAME=sluice-perm\n")
		k.disk("/dev/"+name, ext)
	}
}

func otherPartition(name string) permSetup {
	return func(k *fakeKernel) {
		k.file("/sys/class/block/"+name+"/uevent", "MAJOR=254\nDEVNAME="+name+"\nDEVTYPE=partition\nPARTNAME=ESP\n")
		k.disk("/dev/"+name, false)
	}
}

func serialDisk(name string, ext bool) permSetup {
	return func(k *fakeKernel) {
		k.file("/sys/block/"+name+"/serial", "sluice-perm\n")
		k.disk("/dev/"+name, ext)
	}
}

func cmdline(line string) permSetup {
	return func(k *fakeKernel) { k.file("/proc/cmdline", line+"\n") }
}

func TestPerm(t *testing.T) {
	const tmpfsPerm = `mount tmpfs /perm tmpfs 0x6 "mode=0755"`
	for _, tc := range []struct {
		name           string
		setup          []permSetup
		mountErr       error
		runErr         error
		wantDevice     string
		wantPersistent bool
		wantRun        []string
		wantMount      []string
		wantLog        string
	}{
		{
			name:       "partition name, formatted",
			setup:      []permSetup{otherPartition("vda1"), partition("vda2", true)},
			wantDevice: "/dev/vda2", wantPersistent: true,
			wantMount: []string{`mount /dev/vda2 /perm ext4 0x400 ""`},
			wantLog:   "perm: /dev/vda2 mounted at /perm",
		},
		{
			name:       "partition name, blank: mkfs first",
			setup:      []permSetup{partition("nvme0n1p3", false)},
			wantDevice: "/dev/nvme0n1p3", wantPersistent: true,
			wantRun:   []string{"run /lib/sluice/mke2fs -q -t ext4 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 -L sluice-perm /dev/nvme0n1p3"},
			wantMount: []string{`mount /dev/nvme0n1p3 /perm ext4 0x400 ""`},
			wantLog:   "perm: /dev/nvme0n1p3 has no file system; creating ext4 (first boot)",
		},
		{
			name:       "disk serial",
			setup:      []permSetup{serialDisk("vdb", true)},
			wantDevice: "/dev/vdb", wantPersistent: true,
			wantMount: []string{`mount /dev/vdb /perm ext4 0x400 ""`},
		},
		{
			name:       "partition name wins over disk serial",
			setup:      []permSetup{serialDisk("vdb", true), partition("vda2", true)},
			wantDevice: "/dev/vda2", wantPersistent: true,
			wantMount: []string{`mount /dev/vda2 /perm ext4 0x400 ""`},
		},
		{
			name:       "cmdline overrides both",
			setup:      []permSetup{serialDisk("vdb", true), partition("vda2", true), cmdline("console=ttyS0 sluice.perm=/dev/vdc quiet"), func(k *fakeKernel) { k.disk("/dev/vdc", true) }},
			wantDevice: "/dev/vdc", wantPersistent: true,
			wantMount: []string{`mount /dev/vdc /perm ext4 0x400 ""`},
		},
		{
			name:      "cmdline names a missing device",
			setup:     []permSetup{serialDisk("vdb", true), cmdline("sluice.perm=/dev/sdz")},
			wantMount: []string{tmpfsPerm},
			wantLog:   "WARNING: no persistent partition",
		},
		{
			name:      "none: tmpfs with a warning",
			setup:     []permSetup{otherPartition("vda1")},
			wantMount: []string{tmpfsPerm},
			wantLog:   "WARNING: /perm is a tmpfs: NOTHING WILL PERSIST ACROSS A REBOOT",
		},
		{
			name:      "sysfs knows it but /dev has no node",
			setup:     []permSetup{func(k *fakeKernel) { k.file("/sys/block/vdb/serial", "sluice-perm\n") }},
			wantMount: []string{tmpfsPerm},
		},
		{
			name:       "mount fails: tmpfs",
			setup:      []permSetup{serialDisk("vdb", true)},
			mountErr:   unix.EUCLEAN,
			wantDevice: "/dev/vdb",
			wantMount:  []string{`mount /dev/vdb /perm ext4 0x400 ""`, tmpfsPerm},
			wantLog:    "WARNING: mount ext4 /dev/vdb at /perm: structure needs cleaning",
		},
		{
			name:       "mkfs fails: tmpfs",
			setup:      []permSetup{serialDisk("vdb", false)},
			runErr:     errors.New("exit status 1"),
			wantDevice: "/dev/vdb",
			wantRun:    []string{"run /lib/sluice/mke2fs -q -t ext4 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 -L sluice-perm /dev/vdb"},
			wantMount:  []string{tmpfsPerm},
			wantLog:    "WARNING: mkfs /dev/vdb: exit status 1: mke2fs: no",
		},
		{
			name: "blank disk with partitions is not formatted",
			setup: []permSetup{serialDisk("vdb", false), func(k *fakeKernel) {
				k.file("/sys/block/vdb/vdb1/partition", "1\n")
			}},
			wantDevice: "/dev/vdb",
			wantMount:  []string{tmpfsPerm},
			wantLog:    "refusing to format it",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel(t)
			for _, s := range tc.setup {
				s(k)
			}
			k.runErr = tc.runErr
			if tc.mountErr != nil {
				k.mountErr["/perm"] = tc.mountErr
			}
			var console syncBuffer
			cfg := k.config(&console).withDefaults()
			m := &Machine{cfg: cfg, Console: NewConsole(&console, cfg.Uptime)}

			m.mountPerm(parseCmdlineFile(cfg.path("/proc/cmdline")))

			if m.PermDevice != tc.wantDevice || m.PermPersistent != tc.wantPersistent {
				t.Errorf("PermDevice, PermPersistent = %q, %v; want %q, %v", m.PermDevice, m.PermPersistent, tc.wantDevice, tc.wantPersistent)
			}
			if diff := cmp.Diff(tc.wantRun, k.Calls("run")); diff != "" {
				t.Errorf("mkfs runs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantMount, k.Calls("mount")); diff != "" {
				t.Errorf("mounts (-want +got):\n%s", diff)
			}
			if !strings.Contains(console.String(), tc.wantLog) {
				t.Errorf("console lacks %q; got:\n%s", tc.wantLog, console.String())
			}
			if !tc.wantPersistent && !strings.Contains(console.String(), "NOTHING WILL PERSIST") {
				t.Errorf("tmpfs /perm without the warning; console:\n%s", console.String())
			}
		})
	}
}

func TestPermWaits(t *testing.T) {
	t.Run("gives up after PermWait", func(t *testing.T) {
		k := newFakeKernel(t)
		cfg := k.config(&syncBuffer{}).withDefaults()
		start := cfg.Now()
		m := &Machine{cfg: cfg, Console: NewConsole(&syncBuffer{}, cfg.Uptime)}
		m.mountPerm(map[string]string{})
		if waited := cfg.Now().Sub(start); waited < 3*time.Second || waited > 3200*time.Millisecond {
			t.Errorf("waited %v, want about 3s", waited)
		}
	})
	t.Run("device appears late", func(t *testing.T) {
		k := newFakeKernel(t)
		cfg := k.config(&syncBuffer{}).withDefaults()
		sleeps := 0
		sleep := cfg.Sleep
		cfg.Sleep = func(d time.Duration) {
			sleep(d)
			if sleeps++; sleeps == 7 { // virtio_blk probed the disk
				serialDisk("vdb", true)(k)
			}
		}
		m := &Machine{cfg: cfg, Console: NewConsole(&syncBuffer{}, cfg.Uptime)}
		m.mountPerm(map[string]string{})
		if !m.PermPersistent || sleeps != 7 {
			t.Errorf("PermPersistent = %v after %d sleeps, want true after 7", m.PermPersistent, sleeps)
		}
	})
}

// TestPartition finds another partition of the image by its GPT name, as
// /perm is found, and only once devtmpfs has its node.
func TestPartition(t *testing.T) {
	k := newFakeKernel(t)
	otherPartition("vda1")(k)
	partition("vda2", true)(k)
	k.file("/sys/class/block/vdb1/uevent", "MAJOR=254\nDEVNAME=vdb1\nDEVTYPE=partition\nPARTNAME=no-node\n")
	m := &Machine{cfg: k.config(&syncBuffer{}).withDefaults()}
	for name, want := range map[string]string{"ESP": "/dev/vda1", PermLabel: "/dev/vda2", "no-node": "", "missing": ""} {
		if got := m.Partition(name); got != want {
			t.Errorf("Partition(%q) = %q, want %q", name, got, want)
		}
	}
}
