// Command sluice is an edge router and firewall in one binary: it checks,
// explains, compiles and applies firewall policies, runs the router daemon,
// builds and boots the appliance image, and, started by the kernel as PID
// 1, is the appliance's init.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/sluicefw/sluice/appliance"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if appliance.IsInit() {
		initMain() // sluice is the machine's init: it never returns
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// command is one subcommand. run returns the process exit code.
type command struct {
	name    string
	args    string
	summary string
	run     func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"check", "[FILE...]", "validate policies (the built-in default when no FILE is given)", runCheck},
		{"explain", "[--json] FILE PACKET", "show the verdict and deciding rule for one packet", runExplain},
		{"compile", "[FILE]", "print the nftables ruleset a policy compiles to", runCompile},
		{"apply", "[FILE]", "apply a policy to this network namespace's kernel once", runApply},
		{"run", "[--config FILE] [--state DIR] [--ssh ADDR] [--console TTY]", "run the router daemon: apply the policy, keep it applied, serve management", runRun},
		{"key", "add|list --state DIR [--role ROLE] [FILE]", "manage the SSH keys that may log in", runKey},
		{"image", "--out DIR", "build the bootable appliance image", runImage},
		{"vm", "[--image DIR] [--uefi]", "boot the appliance image under qemu", runVM},
		{"lab", "up|down|run", "build a router lab of network namespaces and run sluice in it", runLab},
		{"version", "", "print the version", runVersion},
	}
}

// run dispatches to a subcommand and returns the exit code: 0 success, 1 the
// command's own failure (an invalid policy), 2 a usage error.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return run([]string{args[1], "--help"}, stdin, stdout, stderr)
		}
		usage(stdout)
		return 0
	case "--version", "-version":
		return runVersion(nil, stdin, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdin, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "sluice is an edge router and firewall in one binary.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage:")
	for _, c := range commands() {
		line := strings.TrimSpace("sluice " + c.name + " " + c.args)
		fmt.Fprintf(w, "  %-38s %s\n", line, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "sluice COMMAND --help" for a command's flags.`)
}

func runVersion(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", "", "Print the sluice version, the Go version and the platform.", stderr)
	if code, done := parseFlags(fs, args); done {
		return code
	}
	fmt.Fprintf(stdout, "sluice %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}
