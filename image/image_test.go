package image

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicefw/sluice/internal/imagetest"
	"github.com/sluicefw/sluice/internal/netnstest"
)

// TestBuild builds an image from the real kernel package and systemd-boot
// and reads it back with the standard tools: the initramfs with cpio, the
// partition table with sgdisk, the EFI system partition with mtools.
func TestBuild(t *testing.T) {
	kernel, efi := imagetest.KernelDir(t), imagetest.BootEFI(t)
	for _, tool := range []string{"cpio", "sgdisk", "mdir", "mtype", "ldd"} {
		_, err := exec.LookPath(tool)
		netnstest.Require(t, err == nil, "needs %s", tool)
	}
	// Any static program stands in for sluice as /init.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	res, err := Build(Options{KernelDir: kernel, BootEFI: efi, Binary: self, Out: out})
	if err != nil {
		t.Fatal(err)
	}

	initrd, err := os.ReadFile(res.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(initrd))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-it", "--quiet")
	cmd.Stdin = zr
	list, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -it: %v", err)
	}
	files := map[string]bool{}
	for _, f := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		files[f] = true
	}
	load := "lib/modules/" + res.Kernel + "/modules.load"
	for _, want := range []string{"init", "dev/console", load, "lib/sluice/mke2fs", "perm"} {
		if !files[want] {
			t.Errorf("the initramfs lacks %s", want)
		}
	}
	// modules.load lists every module shipped, dependencies first: each
	// listed file is in the archive, and nf_tables comes before nft_ct.
	cmd = exec.Command("cpio", "-i", "--quiet", "--to-stdout", load)
	zr.Reset(bytes.NewReader(initrd))
	cmd.Stdin = zr
	mods, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -i %s: %v", load, err)
	}
	order := map[string]int{}
	for i, m := range strings.Split(strings.TrimSpace(string(mods)), "\n") {
		if !files[m] {
			t.Errorf("modules.load names %s, which the initramfs lacks", m)
		}
		order[strings.TrimSuffix(filepath.Base(m), ".ko")] = i + 1
	}
	if len(order) != res.Modules {
		t.Errorf("modules.load lists %d modules, Build says %d", len(order), res.Modules)
	}
	if order["nf_tables"] == 0 || order["nft_ct"] == 0 || order["nf_tables"] > order["nft_ct"] {
		t.Errorf("nf_tables at %d and nft_ct at %d in modules.load: want both, nf_tables first", order["nf_tables"], order["nft_ct"])
	}

	gdisk, err := exec.Command("sgdisk", "-v", "-p", res.Disk).CombinedOutput()
	if err != nil || !strings.Contains(string(gdisk), "No problems found") {
		t.Fatalf("sgdisk -v -p: %v\n%s", err, gdisk)
	}
	for _, want := range []string{"EF00  " + ESPName, "8300  " + PermName} {
		if !strings.Contains(string(gdisk), want) {
			t.Errorf("the partition table lacks %q:\n%s", want, gdisk)
		}
	}
	esp := res.Disk + "@@1M"
	dir, err := exec.Command("mdir", "-i", esp, "-/", "-b", "::").CombinedOutput()
	if err != nil {
		t.Fatalf("mdir: %v\n%s", err, dir)
	}
	for _, want := range []string{"::/EFI/BOOT/BOOTX64.EFI", "::/EFI/Linux/sluice-0001.efi", "::/loader/loader.conf"} {
		if !strings.Contains(string(dir), want) {
			t.Errorf("the EFI system partition lacks %s:\n%s", want, dir)
		}
	}
	slot, err := exec.Command("mtype", "-i", esp, "::/EFI/Linux/sluice-0001.efi").Output()
	if err != nil {
		t.Fatal(err)
	}
	uki, err := os.ReadFile(res.UKI)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(slot, uki) {
		t.Errorf("slot 1 on the EFI system partition (%d bytes) differs from sluice.efi (%d bytes)", len(slot), len(uki))
	}
}
