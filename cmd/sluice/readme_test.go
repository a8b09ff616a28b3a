package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// shellWords splits a command line the way a POSIX shell would for the
// README's examples: words separated by spaces, single quotes kept literal.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// TestReadmeExamples runs every "$ sluice ..." example in the README and
// requires the output printed below it, so the manual stays true.
func TestReadmeExamples(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	n := 0
	for i := 0; i < len(lines); i++ {
		cmdline, ok := strings.CutPrefix(lines[i], "$ sluice ")
		if !ok {
			continue
		}
		var want []string
		for i++; i < len(lines) && lines[i] != "" && lines[i] != "```"; i++ {
			want = append(want, lines[i])
		}
		n++
		t.Run(cmdline, func(t *testing.T) {
			args := shellWords(cmdline)
			for j, a := range args {
				if strings.HasPrefix(a, "examples/") {
					args[j] = "../../" + a
				}
			}
			var stdout, stderr bytes.Buffer
			if code := run(args, strings.NewReader(""), &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			got := strings.ReplaceAll(strings.TrimRight(stdout.String(), "\n"), "../../examples/", "examples/")
			if diff := cmp.Diff(strings.Join(want, "\n"), got); diff != "" {
				t.Errorf("README output differs (-readme +got):\n%s", diff)
			}
		})
	}
	if n < 2 {
		t.Errorf("found %d README examples, want at least 2", n)
	}
}

// The README's full policy example is examples/office.yaml, from its first
// key on.
func TestReadmePolicyIsOfficeExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	office, err := os.ReadFile(officePolicy)
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "```yaml\nhostname: office-edge")
	block, _, _ = strings.Cut(block, "```")
	_, body, _ := strings.Cut(string(office), "hostname: office-edge")
	if !ok || block != body {
		t.Errorf("the README's policy example differs from %s:\n%s", officePolicy, cmp.Diff(body, block))
	}
}
