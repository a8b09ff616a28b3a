package appliance

import "strings"

// ParseCmdline splits a kernel command line into options: "key=value" maps
// key to value, a bare "flag" maps to "". Double quotes group words as the
// kernel's own parser does (key="a b" is "a b"); a later option overrides an
// earlier one of the same key. Parsing stops at "--", after which the words
// are arguments for init, not options.
func ParseCmdline(line string) map[string]string {
	opts := make(map[string]string)
	for _, word := range cmdlineWords(line) {
		if word == "--" {
			break
		}
		key, value, _ := strings.Cut(word, "=")
		if key == "" {
			continue
		}
		opts[key] = value
	}
	return opts
}

// cmdlineWords splits at unquoted white space and removes the quotes.
func cmdlineWords(line string) []string {
	var (
		words  []string
		word   strings.Builder
		inWord bool
		quoted bool
	)
	for _, r := range line {
		switch {
		case r == '"':
			quoted = !quoted
			inWord = true
		case !quoted && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, word.String())
	}
	return words
}
