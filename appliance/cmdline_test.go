package appliance

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       map[string]string
	}{
		{"empty", "", map[string]string{}},
		{"typical", "BOOT_IMAGE=/vmlinuz console=ttyS0 quiet sluice.perm=/dev/vdb\n", map[string]string{
			"BOOT_IMAGE": "/vmlinuz", "console": "ttyS0", "quiet": "", "sluice.perm": "/dev/vdb",
		}},
		{"later wins", "console=tty0 console=ttyS0,115200", map[string]string{"console": "ttyS0,115200"}},
		{"value with =", "sluice.opt=a=b", map[string]string{"sluice.opt": "a=b"}},
		{"quoted", `sluice.motd="hello world" ro`, map[string]string{"sluice.motd": "hello world", "ro": ""}},
		{"init args after --", "quiet -- single sluice.perm=/dev/x", map[string]string{"quiet": ""}},
		{"extra spaces", "  a=1\t\tb  ", map[string]string{"a": "1", "b": ""}},
		{"empty key dropped", "=x y", map[string]string{"y": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ParseCmdline(tc.line)); diff != "" {
				t.Errorf("ParseCmdline(%q) (-want +got):\n%s", tc.line, diff)
			}
		})
	}
}
