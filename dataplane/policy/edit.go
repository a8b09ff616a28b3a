package policy

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// AddAllow returns src with one entry appended to zones.<zone>.egress.allow,
// creating egress: and allow: when they are absent. Every other byte of src
// (comments, layout, order) is kept; the new text is inserted as whole lines
// in block style, or inside the brackets of a flow-style mapping or list.
//
// entry is a destination with optional ports: "1.1.1.1:443" (tcp),
// "[2001:db8::1]:443", "example.com", "example.com:443", "*.example.com
// udp/123", "10.0.0.0/8 tcp/80 tcp/443". The new entry is named after it
// ("allow-1-1-1-1-443"), made unique within the zone.
//
// Adding the first allow entry to a zone whose egress has no default: makes
// that zone deny what the list does not allow, as the policy language says;
// the caller previews the result before committing it.
//
// AddAllow fails when src does not parse as YAML, names no such zone, when
// entry is not a valid destination or port, or when the result would have
// errors that src did not have.
func AddAllow(src []byte, zone, entry string) ([]byte, error) {
	to, ports, err := parseAllowTarget(entry)
	if err != nil {
		return nil, fmt.Errorf("add allow %q to zone %s: %w", entry, zone, err)
	}
	pol, before := Parse("", src)
	file, err := parser.ParseBytes(src, 0, parser.AllowDuplicateMapKey())
	if err != nil {
		return nil, fmt.Errorf("add allow %q to zone %s: %w", entry, zone, before.Err())
	}
	var root ast.Node
	for _, doc := range file.Docs {
		if doc != nil && doc.Body != nil {
			root = doc.Body
			break
		}
	}
	zones := valueOf(root, "zones")
	zoneMV := keyOf(zones, zone)
	if zoneMV == nil {
		var names []string
		for _, z := range pol.Zones {
			names = append(names, z.Name)
		}
		return nil, fmt.Errorf("add allow %q to zone %s: no such zone (zones: %s)", entry, zone, strings.Join(names, ", "))
	}
	var taken []string
	for _, z := range pol.Zones {
		if z.Name == zone {
			for _, a := range z.Egress.Allow {
				taken = append(taken, a.Name)
			}
		}
	}
	item := allowItem(allowName(to, ports, taken), to, ports)

	e := &lineEditor{src: src}
	zv := zoneMV.Value
	egressMV := keyOf(zv, "egress")
	switch {
	case egressMV != nil:
		ev := egressMV.Value
		allowMV := keyOf(ev, "allow")
		switch {
		case allowMV != nil:
			av := allowMV.Value
			switch v := av.(type) {
			case nil, *ast.NullNode:
				ind := column(allowMV.Key) - 1 + 2
				e.insertAfter(line(allowMV.Key), pad(ind)+"- "+item+"\n")
			case *ast.SequenceNode:
				if v.IsFlowStyle {
					sep := ", "
					if len(v.Values) == 0 {
						sep = ""
					}
					e.insertAt(v.End, sep+item)
				} else {
					e.insertAfter(lastLine(v), pad(column(v)-1)+"- "+item+"\n")
				}
			default:
				return nil, fmt.Errorf("add allow %q to zone %s: egress allow at line %d is not a list", entry, zone, line(av))
			}
		default:
			switch v := ev.(type) {
			case nil, *ast.NullNode:
				ind := column(egressMV.Key) - 1 + 2
				e.insertAfter(line(egressMV.Key), pad(ind)+"allow:\n"+pad(ind+2)+"- "+item+"\n")
			case *ast.MappingNode:
				if v.IsFlowStyle {
					e.insertAt(v.End, flowSep(len(v.Values))+"allow: ["+item+"]")
				} else {
					ind := column(v.Values[0].Key) - 1
					e.insertAfter(lastLine(v), pad(ind)+"allow:\n"+pad(ind+2)+"- "+item+"\n")
				}
			case *ast.MappingValueNode:
				ind := column(v.Key) - 1
				e.insertAfter(lastLine(v), pad(ind)+"allow:\n"+pad(ind+2)+"- "+item+"\n")
			default:
				return nil, fmt.Errorf("add allow %q to zone %s: egress at line %d is not a mapping", entry, zone, line(egressMV.Key))
			}
		}
	default:
		switch v := zv.(type) {
		case nil, *ast.NullNode:
			ind := column(zoneMV.Key) - 1 + 2
			e.insertAfter(line(zoneMV.Key), pad(ind)+"egress:\n"+pad(ind+2)+"allow:\n"+pad(ind+4)+"- "+item+"\n")
		case *ast.MappingNode:
			if v.IsFlowStyle {
				e.insertAt(v.End, flowSep(len(v.Values))+"egress: {allow: ["+item+"]}")
			} else {
				ind := column(v.Values[0].Key) - 1
				e.insertAfter(lastLine(v), pad(ind)+"egress:\n"+pad(ind+2)+"allow:\n"+pad(ind+4)+"- "+item+"\n")
			}
		case *ast.MappingValueNode:
			ind := column(v.Key) - 1
			e.insertAfter(lastLine(v), pad(ind)+"egress:\n"+pad(ind+2)+"allow:\n"+pad(ind+4)+"- "+item+"\n")
		default:
			return nil, fmt.Errorf("add allow %q to zone %s: zone at line %d is not a mapping", entry, zone, line(zoneMV.Key))
		}
	}
	if e.err != nil {
		return nil, fmt.Errorf("add allow %q to zone %s: %w", entry, zone, e.err)
	}
	out := e.bytes()
	_, after := Parse("", out)
	if n, m := len(after.Errors()), len(before.Errors()); n > m {
		return nil, fmt.Errorf("add allow %q to zone %s: the result has %d new errors: %w", entry, zone, n-m, after.Err())
	}
	return out, nil
}

// parseAllowTarget splits an entry into its destination and port ranges
// (in the policy's words, such as "tcp/443").
func parseAllowTarget(entry string) (to string, ports []string, err error) {
	fs := strings.Fields(entry)
	if len(fs) == 0 {
		return "", nil, fmt.Errorf("empty entry; write a destination such as 1.1.1.1:443 or example.com")
	}
	to, rest := fs[0], fs[1:]
	if ap, err := netip.ParseAddrPort(to); err == nil {
		to = ap.Addr().String()
		ports = append(ports, "tcp/"+strconv.Itoa(int(ap.Port())))
	} else if host, port, ok := strings.Cut(to, ":"); ok && !strings.Contains(port, ":") && !strings.Contains(to, "[") {
		if _, ok := parsePort(port); !ok {
			return "", nil, fmt.Errorf("port %q is out of range or not a number", port)
		}
		to = host
		ports = append(ports, "tcp/"+port)
	}
	d := &decoder{}
	d.destination(to, Pos{})
	for _, p := range rest {
		d.portRange(p, Pos{})
		ports = append(ports, strings.ToLower(p))
	}
	if errs := d.diags.Errors(); len(errs) > 0 {
		return "", nil, fmt.Errorf("%s; %s", errs[0].Msg, errs[0].Fix)
	}
	return to, ports, nil
}

// allowName derives a valid, unused entry name from the destination and ports.
func allowName(to string, ports []string, taken []string) string {
	var b strings.Builder
	b.WriteString("allow")
	dash := false
	for _, s := range append([]string{to}, ports...) {
		for _, r := range strings.ToLower(s) {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
				if !dash {
					b.WriteByte('-')
					dash = true
				}
				b.WriteRune(r)
				continue
			}
			dash = false
		}
		dash = false
	}
	base := b.String()
	if len(base) > 29 {
		base = strings.TrimRight(base[:29], "-")
	}
	name := base
	for n := 2; slices.Contains(taken, name); n++ {
		name = base + "-" + strconv.Itoa(n)
	}
	return name
}

// allowItem writes one allow entry as a flow mapping.
func allowItem(name, to string, ports []string) string {
	s := "{name: " + name + ", to: [" + quoteIfNeeded(to) + "]"
	if len(ports) > 0 {
		s += ", ports: [" + strings.Join(ports, ", ") + "]"
	}
	return s + "}"
}

func quoteIfNeeded(s string) string {
	if strings.ContainsAny(s, ":*[]{},#") {
		return strconv.Quote(s)
	}
	return s
}

func flowSep(n int) string {
	if n == 0 {
		return ""
	}
	return ", "
}

func pad(n int) string {
	if n < 0 {
		n = 0
	}
	return strings.Repeat(" ", n)
}

// valueOf returns the value of key in mapping n, or nil.
func valueOf(n ast.Node, key string) ast.Node {
	if mv := keyOf(n, key); mv != nil {
		return mv.Value
	}
	return nil
}

func line(n ast.Node) int {
	if n == nil || n.GetToken() == nil || n.GetToken().Position == nil {
		return 0
	}
	return n.GetToken().Position.Line
}

func column(n ast.Node) int {
	if n == nil || n.GetToken() == nil || n.GetToken().Position == nil {
		return 1
	}
	return n.GetToken().Position.Column
}

// lastLine returns the last line any token of n is on.
func lastLine(n ast.Node) int {
	v := &lastLineVisitor{}
	ast.Walk(v, n)
	return v.line
}

type lastLineVisitor struct{ line int }

func (v *lastLineVisitor) Visit(n ast.Node) ast.Visitor {
	if l := line(n); l > v.line {
		v.line = l
	}
	switch n := n.(type) {
	case *ast.MappingNode:
		if n.End != nil && n.End.Position != nil && n.End.Position.Line > v.line {
			v.line = n.End.Position.Line
		}
	case *ast.SequenceNode:
		if n.End != nil && n.End.Position != nil && n.End.Position.Line > v.line {
			v.line = n.End.Position.Line
		}
	}
	return v
}

// lineEditor inserts text into src by line and column; positions refer to
// the original src, and insertions are kept in order so that several at the
// same place appear in the order they were made. It keeps the first error.
type lineEditor struct {
	src []byte
	ins []insertion
	err error
}

type insertion struct {
	off  int
	text string
}

// lineStart returns the offset of line n (from 1); past the end it is len(src).
func (e *lineEditor) lineStart(n int) int {
	off := 0
	for l := 1; l < n; l++ {
		i := bytes.IndexByte(e.src[off:], '\n')
		if i < 0 {
			return len(e.src)
		}
		off += i + 1
	}
	return off
}

// insertAfter inserts whole lines after line n.
func (e *lineEditor) insertAfter(n int, text string) {
	if n <= 0 {
		e.fail(fmt.Errorf("no position to insert at"))
		return
	}
	off := e.lineStart(n + 1)
	if off == len(e.src) && (len(e.src) == 0 || e.src[len(e.src)-1] != '\n') {
		text = "\n" + text
	}
	e.ins = append(e.ins, insertion{off, text})
}

// insertAt inserts text just before the token tk (such as a closing bracket).
func (e *lineEditor) insertAt(tk *token.Token, text string) {
	if tk == nil || tk.Position == nil {
		e.fail(fmt.Errorf("no closing bracket to insert before"))
		return
	}
	off := e.lineStart(tk.Position.Line)
	for col := 1; col < tk.Position.Column && off < len(e.src); col++ {
		_, size := utf8.DecodeRune(e.src[off:])
		off += size
	}
	e.ins = append(e.ins, insertion{off, text})
}

func (e *lineEditor) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

func (e *lineEditor) bytes() []byte {
	out := make([]byte, 0, len(e.src)+64)
	last := 0
	for _, in := range e.ins {
		out = append(out, e.src[last:in.off]...)
		out = append(out, in.text...)
		last = in.off
	}
	return append(out, e.src[last:]...)
}
