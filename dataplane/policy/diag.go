package policy

import (
	"fmt"
	"strings"
)

// Pos is a position in a policy file; lines and columns count from 1. The zero
// Pos means "no position" (a built-in rule, or a file-wide problem).
type Pos struct {
	Line, Col int
}

func (p Pos) String() string { return fmt.Sprintf("%d:%d", p.Line, p.Col) }

// Severity says whether a diagnostic stops the policy from being used.
type Severity uint8

const (
	// Error makes the policy invalid.
	Error Severity = iota
	// Warning points at something that is valid but probably not meant.
	Warning
)

// Diagnostic is one problem found in a policy: where it is, what is wrong, and
// what would be right.
type Diagnostic struct {
	File     string
	Pos      Pos
	Severity Severity
	Msg      string // what is wrong
	Fix      string // what would be right
}

// String formats the diagnostic as FILE:LINE:COL: what is wrong; what would be right.
func (d Diagnostic) String() string {
	var b strings.Builder
	b.WriteString(d.File)
	b.WriteString(":")
	b.WriteString(d.Pos.String())
	b.WriteString(": ")
	if d.Severity == Warning {
		b.WriteString("warning: ")
	}
	b.WriteString(d.Msg)
	if d.Fix != "" {
		b.WriteString("; ")
		b.WriteString(d.Fix)
	}
	return b.String()
}

// Diagnostics is every problem found in one policy, in file order.
type Diagnostics []Diagnostic

// Errors returns only the diagnostics that make the policy invalid.
func (ds Diagnostics) Errors() Diagnostics {
	var out Diagnostics
	for _, d := range ds {
		if d.Severity == Error {
			out = append(out, d)
		}
	}
	return out
}

// Warnings returns only the warnings.
func (ds Diagnostics) Warnings() Diagnostics {
	var out Diagnostics
	for _, d := range ds {
		if d.Severity == Warning {
			out = append(out, d)
		}
	}
	return out
}

// Err returns nil when there are no errors, and otherwise an error whose text
// lists every error, one per line.
func (ds Diagnostics) Err() error {
	errs := ds.Errors()
	if len(errs) == 0 {
		return nil
	}
	return &InvalidError{Diagnostics: errs}
}

// InvalidError is returned for a policy with errors; it carries all of them.
type InvalidError struct {
	Diagnostics Diagnostics
}

func (e *InvalidError) Error() string {
	lines := make([]string, len(e.Diagnostics))
	for i, d := range e.Diagnostics {
		lines[i] = d.String()
	}
	return strings.Join(lines, "\n")
}
