package appliance

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// inputEventBytes encodes a struct input_event as the kernel does on a
// 64-bit machine.
func inputEventBytes(typ, code uint16, value int32) []byte {
	b := make([]byte, inputEventSize)
	binary.NativeEndian.PutUint64(b[0:], 1700000000) // tv_sec
	binary.NativeEndian.PutUint64(b[8:], 123456)     // tv_usec
	binary.NativeEndian.PutUint16(b[16:], typ)
	binary.NativeEndian.PutUint16(b[18:], code)
	binary.NativeEndian.PutUint32(b[20:], uint32(value))
	return b
}

func TestDecodeInputEvent(t *testing.T) {
	got, ok := decodeInputEvent(inputEventBytes(evKey, keyPower, 1))
	if want := (inputEvent{Type: 1, Code: 116, Value: 1}); !ok || got != want {
		t.Errorf("decodeInputEvent = %+v, %v; want %+v, true", got, ok, want)
	}
	if _, ok := decodeInputEvent(make([]byte, 23)); ok {
		t.Error("decodeInputEvent accepted 23 bytes")
	}
	neg, _ := decodeInputEvent(inputEventBytes(3, 0, -5))
	if neg.Value != -5 {
		t.Errorf("value = %d, want -5", neg.Value)
	}
}

func FuzzDecodeInputEvent(f *testing.F) {
	f.Add(inputEventBytes(evKey, keyPower, 1))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := decodeInputEvent(b)
		if ok != (len(b) >= 24) {
			t.Fatalf("ok = %v for %d bytes", ok, len(b))
		}
		if !ok {
			return
		}
		// Reference: read the same fields as a struct.
		var ref struct {
			Sec, Usec  uint64
			Type, Code uint16
			Value      int32
		}
		if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &ref); err != nil {
			t.Fatal(err)
		}
		if want := (inputEvent{ref.Type, ref.Code, ref.Value}); got != want {
			t.Fatalf("decodeInputEvent = %+v, want %+v", got, want)
		}
	})
}

func TestReadPowerButton(t *testing.T) {
	var stream []byte
	for _, ev := range []inputEvent{
		{evKey, 30, 1},       // KEY_A down
		{evKey, keyPower, 1}, // power down: the one press
		{0, 0, 0},            // EV_SYN
		{evKey, keyPower, 2}, // autorepeat
		{evKey, keyPower, 0}, // power up
		{4, 4, 116},          // EV_MSC scan code
	} {
		stream = append(stream, inputEventBytes(ev.Type, ev.Code, ev.Value)...)
	}
	presses := 0
	err := readPowerButton(bytes.NewReader(stream), func() { presses++ })
	if err != io.EOF {
		t.Errorf("readPowerButton error = %v, want EOF", err)
	}
	if presses != 1 {
		t.Errorf("presses = %d, want 1", presses)
	}
}

func TestPowerButtons(t *testing.T) {
	k := newFakeKernel(t)
	k.file("/sys/class/input/event0/device/name", "AT Translated Set 2 keyboard\n")
	k.file("/sys/class/input/event1/device/name", "Power Button\n")
	k.file("/sys/class/input/event2/device/name", "Sleep Button\n")
	k.file("/sys/class/input/event4/device/name", "Power Button\n")
	k.file("/sys/class/input/mouse0/device/name", "Power Button\n") // not an event device
	cfg := k.config(nil)
	got := cfg.powerButtons()
	want := []string{"/dev/input/event1", "/dev/input/event4"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestSignalEvent(t *testing.T) {
	for sig, want := range map[os.Signal]Event{
		unix.SIGINT: Reboot, unix.SIGTERM: Reboot,
		unix.SIGUSR2: PowerOff, unix.SIGPWR: PowerOff,
		unix.SIGHUP: 0,
	} {
		if got := signalEvent(sig); got != want {
			t.Errorf("signalEvent(%v) = %v, want %v", sig, got, want)
		}
	}
	for _, sig := range powerSignals() {
		if signalEvent(sig) == 0 {
			t.Errorf("power signal %v maps to no event", sig)
		}
	}
}

func TestEvents(t *testing.T) {
	k := newFakeKernel(t)
	k.file("/sys/class/input/event3/device/name", "Power Button\n")
	fifo := filepath.Join(k.root, "dev/input/event3")
	if err := os.MkdirAll(filepath.Dir(fifo), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no FIFO for a fake input device: %v", err)
	}
	// Opened read-write first, so Boot's read-only open does not block.
	button, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer button.Close()
	var console syncBuffer
	m, err := Boot(k.config(&console))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(PowerOff)

	next := func() Event {
		t.Helper()
		select {
		case ev := <-m.Events():
			return ev
		case <-time.After(10 * time.Second):
			t.Fatalf("no event; console:\n%s", console.String())
			return 0
		}
	}
	for _, tc := range []struct {
		name string
		send func()
		want Event
	}{
		{"ctrl-alt-del", func() { k.signal(unix.SIGINT) }, Reboot},
		{"SIGTERM", func() { k.signal(unix.SIGTERM) }, Reboot},
		{"SIGUSR2", func() { k.signal(unix.SIGUSR2) }, PowerOff},
		{"SIGPWR", func() { k.signal(unix.SIGPWR) }, PowerOff},
		{"power button", func() {
			button.Write(append(inputEventBytes(evKey, keyPower, 1), inputEventBytes(0, 0, 0)...))
		}, PowerOff},
		{"a reboot chosen on the console", func() { m.Request(Reboot) }, Reboot},
	} {
		tc.send()
		if got := next(); got != tc.want {
			t.Errorf("%s: event %v, want %v", tc.name, got, tc.want)
		}
	}
	if diff := cmp.Diff([]string{"reboot 0x0"}, k.Calls("reboot")); diff != "" {
		t.Errorf("ctrl-alt-del not handed to PID 1 (-want +got):\n%s", diff)
	}
}

func TestEventString(t *testing.T) {
	for ev, want := range map[Event]string{Reboot: "reboot", PowerOff: "poweroff", 9: "Event(9)"} {
		if got := ev.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(ev), got, want)
		}
	}
}
