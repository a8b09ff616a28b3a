package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/sluicefw/sluice/image"
)

func runImage(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("image", "--out DIR [--kernel DIR] [--boot-efi DIR]", `Build the appliance image from Debian's kernel package (fetched by "make
kernel" into .cache/kernel-cloud; KERNEL=generic for hardware) and this
very binary, which boots as the machine's init:

  DIR/vmlinuz, DIR/initrd.img   the kernel and the initramfs (qemu -kernel/-initrd)
  DIR/sluice.efi                both as one EFI program: the update image
  DIR/disk.img                  a GPT disk: systemd-boot with slot 1, and /perm

The same inputs give the same bytes.`, stderr)
	out := fs.String("out", "", "the output directory (required)")
	kernel := fs.String("kernel", os.Getenv("SLUICE_KERNEL_DIR"), "the extracted kernel package (default $SLUICE_KERNEL_DIR, else .cache/kernel-cloud)")
	bootEFI := fs.String("boot-efi", "/usr/lib/systemd/boot/efi", "systemd-boot's EFI files (Debian's systemd-boot-efi)")
	cmdline := fs.String("cmdline", image.DefaultCmdline, "the kernel command line")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	if *kernel == "" {
		*kernel = filepath.Join(".cache", "kernel-cloud")
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "sluice image: %v\n", err)
		return 1
	}
	res, err := image.Build(image.Options{KernelDir: *kernel, BootEFI: *bootEFI, Binary: self, Out: *out, Cmdline: *cmdline})
	if err != nil {
		fmt.Fprintf(stderr, "sluice image: %v\n", err)
		return 1
	}
	for _, f := range []string{res.Vmlinuz, res.Initrd, res.UKI, res.Disk} {
		st, err := os.Stat(f)
		if err != nil {
			fmt.Fprintf(stderr, "sluice image: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s\t%d bytes\n", f, st.Size())
	}
	fmt.Fprintf(stdout, "kernel %s with %d modules\n", res.Kernel, res.Modules)
	return 0
}
