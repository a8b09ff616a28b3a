package appliance

import (
	"bytes"
	"log"
	"testing"
	"time"
)

func TestStamp(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                           "[   0.000] ",
		1234 * time.Millisecond:     "[   1.234] ",
		1234567 * time.Microsecond:  "[   1.234] ",
		98765432 * time.Millisecond: "[98765.432] ",
	} {
		if got := stamp(d); got != want {
			t.Errorf("stamp(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestConsole(t *testing.T) {
	var buf bytes.Buffer
	up := 1234 * time.Millisecond
	c := NewConsole(&buf, func() time.Duration { return up })

	c.Logf("modules: %d loaded", 61)
	up = 2500 * time.Millisecond
	logger := log.New(c, "routerd: ", 0)
	logger.Print("policy v3 in force")
	n, err := c.Write([]byte("line one\nline two"))
	if n != 17 || err != nil {
		t.Errorf("Write = %d, %v; want 17, nil", n, err)
	}

	want := "[   1.234] sluice: modules: 61 loaded\n" +
		"[   2.500] routerd: policy v3 in force\n" +
		"[   2.500] line one\n" +
		"[   2.500] line two\n"
	if got := buf.String(); got != want {
		t.Errorf("console got:\n%s\nwant:\n%s", got, want)
	}
}
