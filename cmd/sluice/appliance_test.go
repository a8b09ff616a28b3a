package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicefw/sluice/internal/imagetest"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// bootedVM is sluice vm running the appliance, its serial console on pipes.
type bootedVM struct {
	t      testing.TB
	cmd    *exec.Cmd
	serial io.WriteCloser
	out    *syncBuffer
	seen   int // how far wait has read the output
	start  time.Time
	wanSSH int // the host port qemu forwards to the box's port 22 on wan
	done   chan struct{}
}

func startVM(t testing.TB, bin string, args ...string) *bootedVM {
	t.Helper()
	v := &bootedVM{t: t, out: &syncBuffer{}, start: time.Now(), done: make(chan struct{}), wanSSH: freePort(t)}
	v.cmd = exec.Command(bin, append([]string{"vm", "--ssh-port", strconv.Itoa(v.wanSSH)}, args...)...)
	v.cmd.Stdout, v.cmd.Stderr = v.out, v.out
	var err error
	if v.serial, err = v.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	// Its own process group, so a kill reaches qemu too.
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.cmd.Wait(); close(v.done) }()
	t.Cleanup(func() {
		v.kill()
		if t.Failed() {
			t.Logf("serial console:\n%s", v.out.String())
		}
	})
	return v
}

// freePort returns a TCP port on loopback nobody listens on.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// kill stops qemu at once, as a power cut would.
func (v *bootedVM) kill() {
	syscall.Kill(-v.cmd.Process.Pid, syscall.SIGKILL)
	<-v.done
}

// wait returns once the serial output after what was already seen holds
// want, and fails the test after timeout.
func (v *bootedVM) wait(want string, timeout time.Duration) {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := v.out.String()
		if i := strings.Index(s[v.seen:], want); i >= 0 {
			v.seen += i + len(want)
			return
		}
		select {
		case <-v.done:
			v.t.Fatalf("qemu exited before the console showed %q", want)
		default:
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("the console did not show %q within %v", want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// send types a line on the serial console.
func (v *bootedVM) send(line string) {
	v.t.Helper()
	if _, err := io.WriteString(v.serial, line+"\r"); err != nil {
		v.t.Fatal(err)
	}
}

func fileHashes(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range []string{"vmlinuz", "initrd.img", "sluice.efi", "disk.img"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		out[f] = fmt.Sprintf("%x", sha256.Sum256(b))
	}
	return out
}

// buildImage builds the appliance image with the test's binary.
func buildImage(t testing.TB, bin, out string, extra ...string) {
	t.Helper()
	args := append([]string{"image", "--out", out, "--kernel", imagetest.KernelDir(t), "--boot-efi", imagetest.BootEFI(t)}, extra...)
	if b, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("sluice image: %v\n%s", err, b)
	}
}

func requireQEMU(t testing.TB) {
	t.Helper()
	netnstest.RequireRoot(t)
	for _, tool := range []string{"qemu-system-x86_64", "ssh", "ssh-keygen", "tmux"} {
		_, err := exec.LookPath(tool)
		netnstest.Require(t, err == nil, "needs %s", tool)
	}
}

// TestApplianceBoot boots the appliance image under qemu and manages it
// the way an operator does: a key pasted on the serial console, SSH from
// the lan, a commit that survives a reboot, and qemu killed in the middle
// of a commit.
func TestApplianceBoot(t *testing.T) {
	requireQEMU(t)
	bin := sluiceBinary(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "image")
	buildImage(t, bin, img)
	again := filepath.Join(dir, "again")
	buildImage(t, bin, again)
	if a, b := fileHashes(t, img), fileHashes(t, again); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("two builds from the same inputs differ:\n%v\n%v", a, b)
	}

	for _, k := range []string{"admin", "stranger"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", k+"@test", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "admin.pub"))
	if err != nil {
		t.Fatal(err)
	}
	lan := netnstest.Name("vmlan")
	t.Cleanup(func() { exec.Command("ip", "netns", "del", lan).Run() })

	monitor := filepath.Join(dir, "monitor.sock")
	boot := func() *bootedVM {
		v := startVM(t, bin, "--image", img, "--lan-netns", lan, "--monitor", monitor)
		v.wait("sluice: ready", 90*time.Second)
		t.Logf("qemu start to policy applied: %v", time.Since(v.start).Round(10*time.Millisecond))
		return v
	}
	sshArgs := func(key string, extra ...string) []string {
		return append([]string{"ip", "netns", "exec", lan, "ssh", "-F", "/dev/null",
			"-i", filepath.Join(dir, key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
			"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3"}, extra...)
	}
	ssh := func(stdin string, args ...string) (string, error) {
		argv := append(sshArgs("admin", "-o", "BatchMode=yes", "192.168.1.1"), args...)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdin = strings.NewReader(stdin)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}

	// sshReady waits for the SSH server, which starts after the policy is
	// in force, and returns the status.
	sshReady := func() (got string, err error) {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			if got, err = ssh("", "status"); err == nil || time.Now().After(deadline) {
				return got, err
			}
		}
	}

	v := boot()
	// First boot: /perm was blank and is formatted; nobody may log in
	// until a key is pasted on the serial console.
	if !strings.Contains(v.out.String(), "/perm") {
		t.Errorf("the boot log does not mention /perm")
	}
	v.send("")
	v.wait("5  add an SSH key", 20*time.Second)
	v.send("5")
	v.wait("key (empty cancels):", 10*time.Second)
	v.send(strings.TrimSpace(string(pub)))
	v.wait("key added", 10*time.Second)

	got, err := sshReady()
	if err != nil || !strings.Contains(got, "engine   kernel") || !strings.Contains(got, "(no commit yet)") {
		t.Fatalf("ssh status: %v\n%s", err, got)
	}
	// The uplink takes its address from qemu's DHCP server, and the
	// default policy lets nothing from wan reach the box: SSH forwarded
	// from the host to the wan side gets no answer.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(got, "10.0.2.15/24"); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("no DHCP address on wan after 30 s:\n%s", got)
		}
		got, _ = ssh("", "status")
	}
	wanSSH := func() ([]byte, error) {
		return exec.Command("ssh", "-F", "/dev/null", "-p", strconv.Itoa(v.wanSSH), "-i", filepath.Join(dir, "admin"),
			"-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
			"-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "127.0.0.1", "status").CombinedOutput()
	}
	if b, err := wanSSH(); err == nil {
		t.Errorf("SSH from wan reached the box under the default policy:\n%s", b)
	}

	// An unknown key is refused.
	argv := sshArgs("stranger", "-o", "BatchMode=yes", "192.168.1.1", "status")
	b, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 255 || !bytes.Contains(b, []byte("Permission denied")) {
		t.Errorf("a stranger's key: %v\n%s", err, b)
	}
	tm := newTmux(t)
	tm.start("tui", sshArgs("admin", "-t", "192.168.1.1")...)
	tm.wait("tui", "Overview", "admin@test (admin)")

	// A confirmed commit survives a reboot.
	text, err := ssh("", "policy", "show")
	if err != nil {
		t.Fatal(err)
	}
	// The new policy also serves SSH on wan: the host's forwarded port
	// then reaches the box.
	renamed := strings.Replace(text, "hostname: sluice", "hostname: edge-1", 1)
	renamed = strings.Replace(renamed, "    inbound: deny", "    services: [ssh]\n    inbound: deny", 1)
	if got, err := ssh(renamed, "policy", "commit", "--why", "rename"); err != nil || !strings.Contains(got, "committed v1") {
		t.Fatalf("commit: %v\n%s", err, got)
	}
	if got, err := ssh("", "confirm"); err != nil {
		t.Fatalf("confirm: %v\n%s", err, got)
	}
	if b, err := wanSSH(); err != nil || !strings.Contains(string(b), "host     edge-1") {
		t.Errorf("SSH from wan after the policy serves it there: %v\n%s", err, b)
	}
	v.send("6")
	v.wait("reboot now? (y/n):", 10*time.Second)
	v.send("y")
	v.wait("sluice: ready", 90*time.Second)
	if got, err := sshReady(); err != nil || !strings.Contains(got, "host     edge-1") || !strings.Contains(got, "policy   v1 by admin@test") {
		t.Fatalf("status after the reboot: %v\n%s", err, got)
	}

	// qemu killed in the middle of a commit and its confirmation: after
	// the next boot the policy is the old one or the new one, whole.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ssh(strings.Replace(renamed, "edge-1", "edge-2", 1), "policy", "commit", "--why", "cut")
		ssh("", "confirm")
	}()
	time.Sleep(300 * time.Millisecond)
	v.kill()
	wg.Wait()
	v = boot()
	got, err = sshReady()
	if err != nil || !(strings.Contains(got, "host     edge-1") || strings.Contains(got, "host     edge-2")) || strings.Contains(got, "damaged") || strings.Contains(got, "corrupt") {
		t.Fatalf("status after qemu was killed during a commit: %v\n%s", err, got)
	}

	// The ACPI power button (qemu's system_powerdown) powers the box off
	// cleanly, and qemu exits.
	c, err := net.Dial("unix", monitor)
	if err != nil {
		t.Fatalf("qemu monitor: %v", err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "system_powerdown\n"); err != nil {
		t.Fatal(err)
	}
	v.wait("poweroff requested", 30*time.Second)
	select {
	case <-v.done:
	case <-time.After(30 * time.Second):
		t.Fatal("qemu still runs 30 s after the power button")
	}
	if code := v.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("sluice vm exited %d after a clean poweroff, want 0", code)
	}
}

// TestApplianceUpdate boots the disk image through UEFI and systemd-boot,
// updates it over SSH to a broken image, which must fail its tries and
// give way to the old slot by itself, and then to a good one, which must
// mark itself good.
func TestApplianceUpdate(t *testing.T) {
	requireQEMU(t)
	_, err := os.Stat("/usr/share/ovmf/OVMF.fd")
	netnstest.Require(t, err == nil, "needs OVMF (make deps installs ovmf)")
	bin := sluiceBinary(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "image")
	buildImage(t, bin, img)
	// The broken image's kernel finds no init and panics; panic=1
	// reboots it at once.
	broken := filepath.Join(dir, "broken")
	buildImage(t, bin, broken, "--cmdline", "console=ttyS0,115200 panic=1 rdinit=/nonexistent")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin@test", "-f", filepath.Join(dir, "admin")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "admin.pub"))
	lan := netnstest.Name("vmupd")
	t.Cleanup(func() { exec.Command("ip", "netns", "del", lan).Run() })
	ssh := func(stdinFile string, args ...string) (string, error) {
		argv := append([]string{"ip", "netns", "exec", lan, "ssh", "-F", "/dev/null",
			"-i", filepath.Join(dir, "admin"), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
			"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3", "-o", "BatchMode=yes", "192.168.1.1"}, args...)
		cmd := exec.Command(argv[0], argv[1:]...)
		if stdinFile != "" {
			f, err := os.Open(stdinFile)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cmd.Stdin = f
		}
		b, err := cmd.CombinedOutput()
		return string(b), err
	}

	// sshUp retries while the SSH server is not up yet: it starts once the
	// policy is in force, just after "ready".
	sshUp := func(stdinFile string, args ...string) (got string, err error) {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			got, err = ssh(stdinFile, args...)
			if err == nil || !strings.Contains(got, "Connection refused") || time.Now().After(deadline) {
				return got, err
			}
		}
	}

	v := startVM(t, bin, "--image", img, "--uefi", "--lan-netns", lan)
	v.wait("booted from slot 1", 120*time.Second)
	v.wait("sluice: ready", 60*time.Second)
	t.Logf("qemu start to policy applied through UEFI: %v", time.Since(v.start).Round(10*time.Millisecond))
	v.send("5")
	v.wait("key (empty cancels):", 10*time.Second)
	v.send(strings.TrimSpace(string(pub)))
	v.wait("key added", 10*time.Second)

	got, err := sshUp(filepath.Join(broken, "sluice.efi"), "update")
	if err != nil || !strings.Contains(got, "installed boot slot 2") {
		t.Fatalf("update to the broken image: %v\n%s", err, got)
	}
	for i := 0; i < 3; i++ {
		v.wait("Kernel panic", 120*time.Second)
	}
	v.wait("booted from slot 1", 120*time.Second)
	v.wait("sluice: ready", 60*time.Second)

	got, err = sshUp(filepath.Join(img, "sluice.efi"), "update")
	if err != nil || !strings.Contains(got, "installed boot slot 3") {
		t.Fatalf("update to a good image: %v\n%s", err, got)
	}
	v.wait("booted from slot 3 (on trial", 120*time.Second)
	v.wait("boot slot 3 is healthy", 60*time.Second)
	if got, err := sshUp("", "status"); err != nil || !strings.Contains(got, "engine   kernel") {
		t.Errorf("status after the update: %v\n%s", err, got)
	}
}

// BenchmarkBoot measures, under TCG, the time from qemu's start to the
// policy in force ("sluice: ready"), booting the kernel directly and
// through UEFI and systemd-boot. The baseline, measured in the same boots,
// is qemu's start to the kernel running sluice as /init ("sluice:
// booting"): what the firmware and the kernel take before sluice can do
// anything. /perm is formatted by a first boot that is not measured. The
// update image's size is reported too.
func BenchmarkBoot(b *testing.B) {
	requireQEMU(b)
	bin := sluiceBinary(b)
	for _, mode := range []string{"kernel", "uefi"} {
		b.Run(mode, func(b *testing.B) {
			img := filepath.Join(b.TempDir(), "image")
			buildImage(b, bin, img)
			args := []string{"--image", img}
			if mode == "uefi" {
				args = append(args, "--uefi")
			}
			boot := func() (toInit, toReady time.Duration) {
				v := startVM(b, bin, args...)
				defer v.kill()
				v.wait("sluice: booting", 120*time.Second)
				toInit = time.Since(v.start)
				v.wait("sluice: ready", 120*time.Second)
				return toInit, time.Since(v.start)
			}
			boot() // formats /perm
			var init, ready time.Duration
			b.ResetTimer()
			for range b.N {
				i, r := boot()
				init += i
				ready += r
			}
			b.ReportMetric(ready.Seconds()/float64(b.N), "s-to-ready")
			b.ReportMetric(init.Seconds()/float64(b.N), "s-to-init")
			if st, err := os.Stat(filepath.Join(img, "sluice.efi")); err == nil {
				b.ReportMetric(float64(st.Size())/1e6, "MB-image")
			}
		})
	}
}
