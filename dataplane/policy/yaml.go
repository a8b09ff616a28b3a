package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// decoder walks the YAML syntax tree of one policy file and collects every
// problem it finds instead of stopping at the first. It is used once, by one
// goroutine.
type decoder struct {
	file  string
	diags Diagnostics
}

func (d *decoder) errorf(p Pos, fix, format string, args ...any) {
	d.diags = append(d.diags, Diagnostic{File: d.file, Pos: p, Severity: Error, Msg: fmt.Sprintf(format, args...), Fix: fix})
}

func (d *decoder) warnf(p Pos, fix, format string, args ...any) {
	d.diags = append(d.diags, Diagnostic{File: d.file, Pos: p, Severity: Warning, Msg: fmt.Sprintf(format, args...), Fix: fix})
}

// parseYAML returns the root node of the single document in src, or nil when
// the file is empty or could not be parsed (the reason is recorded).
func (d *decoder) parseYAML(src []byte) ast.Node {
	// Duplicate keys are reported by entries, with the other problems.
	f, err := parser.ParseBytes(src, 0, parser.AllowDuplicateMapKey())
	if err != nil {
		var se *yaml.SyntaxError
		p := Pos{Line: 1, Col: 1}
		msg := err.Error()
		if errors.As(err, &se) {
			msg = se.GetMessage()
			if tk := se.GetToken(); tk != nil && tk.Position != nil {
				p = Pos{Line: tk.Position.Line, Col: tk.Position.Column}
			}
		}
		d.errorf(p, "fix the YAML syntax", "YAML syntax error: %s", firstLine(msg))
		return nil
	}
	var bodies []ast.Node
	for _, doc := range f.Docs {
		if doc != nil && doc.Body != nil {
			bodies = append(bodies, doc.Body)
		}
	}
	switch len(bodies) {
	case 0:
		d.errorf(Pos{Line: 1, Col: 1}, "write a policy with at least interfaces: and zones:", "the policy file is empty")
		return nil
	case 1:
		return bodies[0]
	default:
		d.errorf(posOf(bodies[1]), "keep one policy per file", "the file holds %d YAML documents", len(bodies))
		return nil
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// posOf returns where a node starts. Block mappings are positioned at their
// first key rather than at its colon.
func posOf(n ast.Node) Pos {
	switch v := n.(type) {
	case nil:
		return Pos{}
	case *ast.MappingNode:
		if !v.IsFlowStyle && len(v.Values) > 0 {
			return posOf(v.Values[0])
		}
	case *ast.MappingValueNode:
		return posOf(v.Key)
	}
	tk := n.GetToken()
	if tk == nil || tk.Position == nil {
		return Pos{}
	}
	return Pos{Line: tk.Position.Line, Col: tk.Position.Column}
}

// field is one key of a mapping with its value.
type field struct {
	key    string
	keyPos Pos
	val    ast.Node // nil for "key:" with nothing after it
}

// plain rejects the YAML features a policy does not use (anchors, aliases,
// tags), so that what a person reads is what the policy says.
func (d *decoder) plain(n ast.Node) bool {
	switch n.(type) {
	case *ast.AnchorNode, *ast.AliasNode:
		d.errorf(posOf(n), "write the value out in full", "YAML anchors and aliases are not supported in a policy")
		return false
	case *ast.TagNode:
		d.errorf(posOf(n), "remove the tag", "YAML tags are not supported in a policy")
		return false
	case *ast.MergeKeyNode:
		d.errorf(posOf(n), "write the keys out in full", "YAML merge keys are not supported in a policy")
		return false
	}
	return true
}

// mappingValues returns the key-value pairs of a mapping node; ok is false
// when n is not a mapping. A mapping with one key may be parsed as the bare
// pair.
func mappingValues(n ast.Node) (values []*ast.MappingValueNode, ok bool) {
	switch v := n.(type) {
	case *ast.MappingNode:
		return v.Values, true
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{v}, true
	}
	return nil, false
}

// keyOf returns the pair of key in mapping n, or nil.
func keyOf(n ast.Node, key string) *ast.MappingValueNode {
	values, _ := mappingValues(n)
	for _, mv := range values {
		if mv == nil || mv.Key == nil {
			continue
		}
		if k, ok := scalarText(mv.Key); ok && k == key {
			return mv
		}
	}
	return nil
}

// hasKey reports whether mapping n has key, even one whose value was refused.
func hasKey(n ast.Node, key string) bool { return keyOf(n, key) != nil }

func isNull(n ast.Node) bool {
	if n == nil {
		return true
	}
	_, ok := n.(*ast.NullNode)
	return ok
}

// mapping decodes a mapping whose keys must be among known; it reports
// unknown and duplicate keys and returns the fields in file order. A null
// node is an empty mapping.
func (d *decoder) mapping(n ast.Node, what string, known []string) []field {
	fs := d.entries(n, what)
	var out []field
	for _, f := range fs {
		if known != nil && !slices.Contains(known, f.key) {
			fix := "expected one of: " + strings.Join(known, ", ")
			if s := suggest(f.key, known); s != "" {
				fix = fmt.Sprintf("did you mean %q? (%s)", s, fix)
			}
			d.errorf(f.keyPos, fix, "unknown key %q in %s", f.key, what)
			continue
		}
		out = append(out, f)
	}
	return out
}

// entries decodes a mapping with free-form keys (names), reporting duplicate
// and non-scalar keys.
func (d *decoder) entries(n ast.Node, what string) []field {
	if isNull(n) || !d.plain(n) {
		return nil
	}
	values, ok := mappingValues(n)
	if !ok {
		d.errorf(posOf(n), "write it as key: value pairs", "%s must be a mapping, not %s", what, describe(n))
		return nil
	}
	seen := map[string]Pos{}
	var out []field
	for _, mv := range values {
		if mv == nil || mv.Key == nil {
			continue
		}
		if !d.plain(mv.Key) {
			continue
		}
		key, ok := scalarText(mv.Key)
		if !ok {
			d.errorf(posOf(mv.Key), "use a plain word as the key", "a key in %s must be a plain value, not %s", what, describe(mv.Key))
			continue
		}
		kp := posOf(mv.Key)
		if first, dup := seen[key]; dup {
			d.errorf(kp, fmt.Sprintf("remove it or merge it with the one at line %d", first.Line), "duplicate key %q in %s", key, what)
			continue
		}
		seen[key] = kp
		val := mv.Value
		if val != nil && !d.plain(val) {
			continue
		}
		out = append(out, field{key: key, keyPos: kp, val: val})
	}
	return out
}

// list decodes a sequence; a single scalar is taken as a list of one, so that
// "to: wan" and "to: [wan]" mean the same. A null node is an empty list.
func (d *decoder) list(n ast.Node, what string) []ast.Node {
	if isNull(n) || !d.plain(n) {
		return nil
	}
	switch v := n.(type) {
	case *ast.SequenceNode:
		var out []ast.Node
		for _, item := range v.Values {
			if item != nil && d.plain(item) {
				out = append(out, item)
			}
		}
		return out
	case *ast.MappingNode, *ast.MappingValueNode:
		d.errorf(posOf(n), "write a list: [a, b] or one \"- item\" per line", "%s must be a list, not a mapping", what)
		return nil
	}
	return []ast.Node{n}
}

// nonEmptyList is list for keys where an empty list would silently mean
// "anything": it is an error, and the key must be removed to mean that.
func (d *decoder) nonEmptyList(f field, what, fix string) []ast.Node {
	items := d.list(f.val, what)
	if len(items) == 0 {
		if seq, ok := f.val.(*ast.SequenceNode); f.val == nil || isNull(f.val) || ok && len(seq.Values) == 0 {
			d.errorf(f.keyPos, fix, "%s is empty", what)
		}
	}
	return items
}

// scalar decodes a single plain value.
func (d *decoder) scalar(n ast.Node, p Pos, what string) (string, Pos, bool) {
	if isNull(n) {
		d.errorf(p, "give it a value", "%s has no value", what)
		return "", p, false
	}
	if !d.plain(n) {
		return "", p, false
	}
	s, ok := scalarText(n)
	if !ok {
		d.errorf(posOf(n), "write a single value", "%s must be a single value, not %s", what, describe(n))
		return "", posOf(n), false
	}
	return s, posOf(n), true
}

// choice decodes a scalar that must be one of options.
func (d *decoder) choice(f field, what string, options ...string) (string, bool) {
	s, p, ok := d.scalar(f.val, f.keyPos, what)
	if !ok {
		return "", false
	}
	if !slices.Contains(options, s) {
		d.errorf(p, "write one of: "+strings.Join(options, ", "), "%s %q is not valid", what, s)
		return "", false
	}
	return s, true
}

func scalarText(n ast.Node) (string, bool) {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value, true
	case *ast.LiteralNode:
		if v.Value == nil {
			return "", true
		}
		return strings.TrimRight(v.Value.Value, "\n"), true
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		tk := n.GetToken()
		if tk == nil {
			return "", false
		}
		return tk.Value, true
	}
	return "", false
}

func describe(n ast.Node) string {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.NullNode:
		return "nothing"
	}
	if s, ok := scalarText(n); ok {
		return fmt.Sprintf("%q", s)
	}
	return "a " + strings.ToLower(n.Type().String())
}

// suggest returns the known word closest to s, if it is close enough to be a
// likely typo.
func suggest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if dist := editDistance(s, k); dist < bestD {
			best, bestD = k, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
