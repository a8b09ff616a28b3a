package tui

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/sluicefw/sluice/dataplane/flows"
	"github.com/sluicefw/sluice/dataplane/policy"
)

// flowSort is the order of the flows page.
type flowSort uint8

const (
	byBytes flowSort = iota // most bytes first
	byAge                   // oldest first
)

func (s flowSort) String() string {
	if s == byAge {
		return "age"
	}
	return "bytes"
}

// flowTable is the flows page: every live flow, filtered and sorted when
// the data, the filter or the order changes, never when it is drawn, and
// drawn only for the rows on screen. It is a value; its slices and map are
// replaced on change, never written in place, so copies do not interfere.
type flowTable struct {
	all       []flows.Flow
	start     []time.Time // per all[i]: Flow.Start, or when it was first seen
	rows      []int32     // indices into all, filtered and sorted
	filter    string
	order     flowSort
	cursor    int
	top       int
	firstSeen map[uint32]time.Time // when a flow without Flow.Start was first listed, by ID
}

func newFlowTable() flowTable {
	return flowTable{firstSeen: make(map[uint32]time.Time)}
}

// setFlows takes a new listing taken at now.
func (t flowTable) setFlows(fs []flows.Flow, now time.Time) flowTable {
	var selected uint32
	hadSel := t.cursor < len(t.rows)
	if hadSel {
		selected = t.all[t.rows[t.cursor]].ID
	}
	t.all = fs
	t.start = make([]time.Time, len(fs))
	live := make(map[uint32]time.Time, len(fs))
	for i, f := range fs {
		if !f.Start.IsZero() {
			t.start[i] = f.Start
			continue
		}
		seen, ok := t.firstSeen[f.ID]
		if !ok {
			seen = now
		}
		live[f.ID] = seen
		t.start[i] = seen
	}
	t.firstSeen = live
	t = t.recompute()
	if hadSel {
		for i, r := range t.rows {
			if t.all[r].ID == selected {
				t.cursor = i
				break
			}
		}
	}
	return t.clampCursor(0)
}

// recompute filters and sorts the rows. It sorts pairs of a key and an
// index, contiguous in memory, rather than chasing indices into all.
func (t flowTable) recompute() flowTable {
	type keyed struct {
		key uint64
		idx int32
	}
	ks := make([]keyed, 0, len(t.all))
	needle := []byte(strings.ToLower(t.filter))
	var buf []byte
	for i := range t.all {
		f := &t.all[i]
		if len(needle) > 0 {
			buf = f.AppendTo(buf[:0])
			if !bytes.Contains(buf, needle) && !containsFold(f.State, needle) {
				continue
			}
		}
		var k uint64
		if t.order == byBytes {
			k = ^(f.Bytes[0] + f.Bytes[1]) // most first
		} else {
			k = uint64(t.start[i].UnixNano()) ^ 1<<63 // oldest first, as unsigned
		}
		ks = append(ks, keyed{k, int32(i)})
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		if c := cmp.Compare(a.key, b.key); c != 0 {
			return c
		}
		return cmp.Compare(a.idx, b.idx)
	})
	rows := make([]int32, len(ks))
	for i, k := range ks {
		rows[i] = k.idx
	}
	t.rows = rows
	return t
}

// containsFold reports whether s contains the lower-case ASCII needle,
// ignoring case.
func containsFold(s string, needle []byte) bool {
	n := len(needle)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for ; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != needle[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}

func (t flowTable) setFilter(s string) flowTable {
	if s == t.filter {
		return t
	}
	t.filter = s
	t.cursor, t.top = 0, 0
	return t.recompute()
}

func (t flowTable) toggleSort() flowTable {
	if t.order == byBytes {
		t.order = byAge
	} else {
		t.order = byBytes
	}
	t.cursor, t.top = 0, 0
	return t.recompute()
}

// selected returns the flow under the cursor.
func (t flowTable) selected() (flows.Flow, bool) {
	if t.cursor < 0 || t.cursor >= len(t.rows) {
		return flows.Flow{}, false
	}
	return t.all[t.rows[t.cursor]], true
}

// Update moves the cursor; height is how many rows are shown.
func (t flowTable) Update(msg tea.KeyMsg, height int) flowTable {
	switch msg.String() {
	case "up", "k":
		t.cursor--
	case "down", "j":
		t.cursor++
	case "pgup":
		t.cursor -= height
	case "pgdown":
		t.cursor += height
	case "home", "g":
		t.cursor = 0
	case "end", "G":
		t.cursor = len(t.rows) - 1
	}
	return t.clampCursor(height)
}

func (t flowTable) clampCursor(height int) flowTable {
	t.cursor = clamp(t.cursor, 0, len(t.rows)-1)
	if height > 0 {
		t.top = clamp(t.top, t.cursor-height+1, t.cursor)
	}
	t.top = clamp(t.top, 0, max(len(t.rows)-1, 0))
	return t
}

// flowColumns lays out a row: the address columns share what is left of
// width after the fixed ones.
func flowColumns(width int) string {
	addr := clamp((width-2-6-12-10-8-5)/2, 15, 47)
	return "%-6s %-" + strconv.Itoa(addr) + "s %-" + strconv.Itoa(addr) + "s %-12s %10s %8s"
}

// View draws the header and the rows on screen.
func (t flowTable) View(st styles, now time.Time, width, height int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d flows", len(t.all))
	if t.filter != "" {
		fmt.Fprintf(&b, ", %d match %q", len(t.rows), t.filter)
	}
	fmt.Fprintf(&b, ", sorted by %s\n", t.order)
	cols := flowColumns(width)
	b.WriteString(st.header.Render(truncate("  "+fmt.Sprintf(cols, "PROTO", "SRC", "DST", "STATE", "BYTES", "AGE"), width)))
	height -= 2
	top := clamp(t.top, t.cursor-height+1, t.cursor)
	top = max(top, 0)
	for i := top; i < top+height && i < len(t.rows); i++ {
		f := &t.all[t.rows[i]]
		src, dst := f.Src.String(), f.Dst.String()
		if f.Src.Port() == 0 && f.Dst.Port() == 0 {
			src, dst = f.Src.Addr().String(), f.Dst.Addr().String()
		}
		state := f.State
		if state == "" {
			state = "-"
		}
		mark := "  "
		if i == t.cursor {
			mark = "> "
		}
		line := truncate(mark+fmt.Sprintf(cols, protoName(f.Proto), src, dst, state,
			humanBytes(f.Bytes[0]+f.Bytes[1]), age(now.Sub(t.start[t.rows[i]]))), width)
		b.WriteString("\n")
		if i == t.cursor {
			line = st.selected.Render(line)
		}
		b.WriteString(line)
	}
	return b.String()
}

func protoName(p uint8) string {
	if name, ok := policy.ProtoName(p); ok {
		return name
	}
	return fmt.Sprint(p)
}

// humanBytes writes n with a binary unit: 512B, 1.5KiB, 3.2MiB.
func humanBytes(n uint64) string { return binaryBytes(n, "") }

// binaryBytes writes n with a binary unit, sep between number and unit.
func binaryBytes(n uint64, sep string) string {
	if n < 1024 {
		return strconv.FormatUint(n, 10) + sep + "B"
	}
	div, exp := uint64(1024), 0
	for m := n / 1024; m >= 1024; m /= 1024 {
		div *= 1024
		exp++
	}
	return fmt.Sprintf("%.1f%s%ciB", float64(n)/float64(div), sep, "KMGTPE"[exp])
}

// age writes a duration the way people read it: 42s, 3m12s, 5h03m, 2d04h.
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
}

// ago writes how long ago something was in its largest unit: 45s ago,
// 3m ago, 5h ago, 2d ago.
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", max(int(d/time.Second), 0))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}
