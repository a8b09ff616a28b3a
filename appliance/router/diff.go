package router

import (
	"fmt"
	"strings"
)

// maxDiffCells bounds the work of the line diff: beyond it (two texts with
// thousands of differing lines each), the differing middle is shown as one
// removal and one addition.
const maxDiffCells = 4_000_000

// Diff returns a unified diff of two texts with three lines of context, or
// "" when they are equal. It is a longest-common-subsequence diff over the
// lines between the common head and tail, which is what policy edits are.
func Diff(nameA, nameB, a, b string) string {
	if a == b {
		return ""
	}
	la, lb := lines(a), lines(b)
	head := 0
	for head < len(la) && head < len(lb) && la[head] == lb[head] {
		head++
	}
	tail := 0
	for tail < len(la)-head && tail < len(lb)-head && la[len(la)-1-tail] == lb[len(lb)-1-tail] {
		tail++
	}
	ops := make([]op, 0, len(la)+len(lb))
	for i := 0; i < head; i++ {
		ops = append(ops, op{' ', la[i], i, i})
	}
	ops = append(ops, middle(la[head:len(la)-tail], lb[head:len(lb)-tail], head)...)
	for i := 0; i < tail; i++ {
		ia, ib := len(la)-tail+i, len(lb)-tail+i
		ops = append(ops, op{' ', la[ia], ia, ib})
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", nameA, nameB)
	for _, h := range hunks(ops, 3) {
		writeHunk(&sb, ops[h[0]:h[1]])
	}
	return sb.String()
}

// op is one line of the edit script: ' ' kept, '-' removed, '+' added, with
// its line index in a and in b (for hunk headers).
type op struct {
	kind   byte
	line   string
	ia, ib int
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	l := strings.SplitAfter(s, "\n")
	if l[len(l)-1] == "" {
		l = l[:len(l)-1]
	}
	return l
}

// middle diffs the differing middle of two texts, starting at line off.
func middle(a, b []string, off int) []op {
	var ops []op
	if len(a)*len(b) > maxDiffCells {
		for i, l := range a {
			ops = append(ops, op{'-', l, off + i, off})
		}
		for i, l := range b {
			ops = append(ops, op{'+', l, off + len(a), off + i})
		}
		return ops
	}
	// lcs[i][j] is the length of the longest common subsequence of a[i:]
	// and b[j:].
	w := len(b) + 1
	lcs := make([]int32, (len(a)+1)*w)
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i*w+j] = lcs[(i+1)*w+j+1] + 1
			} else {
				lcs[i*w+j] = max(lcs[(i+1)*w+j], lcs[i*w+j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			ops = append(ops, op{' ', a[i], off + i, off + j})
			i, j = i+1, j+1
		case i < len(a) && (j == len(b) || lcs[(i+1)*w+j] >= lcs[i*w+j+1]):
			ops = append(ops, op{'-', a[i], off + i, off + j})
			i++
		default:
			ops = append(ops, op{'+', b[j], off + i, off + j})
			j++
		}
	}
	return ops
}

// hunks returns the [start, end) ranges of ops to print: every change with
// ctx kept lines around it, merging ranges that touch.
func hunks(ops []op, ctx int) [][2]int {
	var out [][2]int
	for i, o := range ops {
		if o.kind == ' ' {
			continue
		}
		lo, hi := max(i-ctx, 0), min(i+ctx+1, len(ops))
		if n := len(out); n > 0 && lo <= out[n-1][1] {
			out[n-1][1] = max(out[n-1][1], hi)
			continue
		}
		out = append(out, [2]int{lo, hi})
	}
	return out
}

func writeHunk(sb *strings.Builder, ops []op) {
	na, nb := 0, 0
	for _, o := range ops {
		if o.kind != '+' {
			na++
		}
		if o.kind != '-' {
			nb++
		}
	}
	// A side of one line is written without its count; an empty side
	// names the line before it.
	rng := func(first, n int) string {
		switch n {
		case 0:
			return fmt.Sprintf("%d,0", first)
		case 1:
			return fmt.Sprint(first + 1)
		}
		return fmt.Sprintf("%d,%d", first+1, n)
	}
	fmt.Fprintf(sb, "@@ -%s +%s @@\n", rng(ops[0].ia, na), rng(ops[0].ib, nb))
	for _, o := range ops {
		sb.WriteByte(o.kind)
		sb.WriteString(o.line)
		if !strings.HasSuffix(o.line, "\n") {
			sb.WriteString("\n\\ No newline at end of file\n")
		}
	}
}
