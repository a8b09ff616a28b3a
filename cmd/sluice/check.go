package main

import (
	"fmt"
	"io"
	"os"

	"github.com/sluicefw/sluice/dataplane/policy"
)

func runCheck(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", "[FILE...]", `Validate policy files. Every problem is printed on stderr as
FILE:LINE:COL: what is wrong; what would be right. Warnings do not fail the
check. With no FILE, the built-in default policy is checked; "-" reads stdin.
Exits 0 when every policy is valid, 1 otherwise.`, stderr)
	if code, done := parseFlags(fs, args); done {
		return code
	}
	files := fs.Args()
	if len(files) == 0 {
		files = []string{""}
	}
	code := 0
	for _, file := range files {
		name, src, err := readPolicy(file, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "sluice check: %v\n", err)
			code = 1
			continue
		}
		pol, diags := policy.Parse(name, src)
		for _, d := range diags {
			fmt.Fprintln(stderr, d)
		}
		if diags.Err() != nil {
			code = 1
			continue
		}
		prog, err := policy.Compile(pol)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			code = 1
			continue
		}
		fmt.Fprintf(stdout, "%s: ok: %d interfaces, %d zones, %d rules, %d warnings\n",
			name, len(prog.Interfaces), len(prog.Zones), len(prog.Rules), len(diags.Warnings()))
	}
	return code
}

// readPolicy reads a policy file; "" is the built-in default and "-" is stdin.
func readPolicy(file string, stdin io.Reader) (name string, src []byte, err error) {
	switch file {
	case "":
		return policy.DefaultFile, policy.Default(), nil
	case "-":
		src, err = io.ReadAll(stdin)
		if err != nil {
			return "<stdin>", nil, fmt.Errorf("read stdin: %w", err)
		}
		return "<stdin>", src, nil
	}
	src, err = os.ReadFile(file)
	if err != nil {
		return file, nil, fmt.Errorf("read policy: %w", err)
	}
	return file, src, nil
}

// loadProgram reads, validates and compiles a policy for command cmd,
// printing its problems on stderr.
func loadProgram(cmd, file string, stdin io.Reader, stderr io.Writer) (*policy.Program, bool) {
	name, src, err := readPolicy(file, stdin)
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
		return nil, false
	}
	return compileSource(name, src, stderr)
}

// compileSource validates and compiles a policy already read, printing its
// problems on stderr.
func compileSource(name string, src []byte, stderr io.Writer) (*policy.Program, bool) {
	pol, ok := parseSource(name, src, stderr)
	if !ok {
		return nil, false
	}
	return compilePolicy(name, pol, stderr)
}

// parseSource parses and validates a policy, printing its problems on
// stderr.
func parseSource(name string, src []byte, stderr io.Writer) (*policy.Policy, bool) {
	pol, diags := policy.Parse(name, src)
	if diags.Err() != nil {
		for _, d := range diags {
			fmt.Fprintln(stderr, d)
		}
		return nil, false
	}
	return pol, true
}

// compilePolicy compiles a parsed policy, printing why it cannot on stderr.
func compilePolicy(name string, pol *policy.Policy, stderr io.Writer) (*policy.Program, bool) {
	prog, err := policy.Compile(pol)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, false
	}
	return prog, true
}
