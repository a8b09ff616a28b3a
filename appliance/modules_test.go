package appliance

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestParseModulesLoad(t *testing.T) {
	got := parseModulesLoad([]byte("# written by the image builder\n\nlib/modules/r/a.ko\n  /lib/modules/r/b.ko  \n"))
	want := []string{"/lib/modules/r/a.ko", "/lib/modules/r/b.ko"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLoadModules(t *testing.T) {
	k := newFakeKernel(t)
	const dir = "/lib/modules/6.1.0-test/kernel/"
	k.file("/lib/modules/6.1.0-test/modules.load", strings.Join([]string{
		dir + "libcrc32c.ko", dir + "nfnetlink.ko", dir + "nf_tables.ko",
		dir + "missing.ko", dir + "nft_ct.ko", dir + "button.ko",
	}, "\n"))
	for _, m := range []string{"libcrc32c", "nfnetlink", "nf_tables", "nft_ct", "button"} {
		k.file(dir+m+".ko", "")
	}
	k.moduleErr["nfnetlink.ko"] = unix.EEXIST // built in
	k.moduleErr["nf_tables.ko"] = unix.ENOEXEC
	var console syncBuffer
	m := &Machine{cfg: k.config(&console).withDefaults(), Console: NewConsole(&console, func() time.Duration { return 0 })}

	got, err := m.loadModules()
	if err != nil {
		t.Fatal(err)
	}

	if want := (ModuleStats{Loaded: 3, Already: 1, Failed: 2}); got != want {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
	wantCalls := []string{
		"finit_module libcrc32c.ko", "finit_module nfnetlink.ko", "finit_module nf_tables.ko",
		"finit_module nft_ct.ko", "finit_module button.ko",
	}
	if diff := cmp.Diff(wantCalls, k.Calls("finit_module")); diff != "" {
		t.Errorf("finit_module calls, in file order (-want +got):\n%s", diff)
	}
	for _, want := range []string{
		"sluice: module nf_tables.ko: finit_module " + dir + "nf_tables.ko: exec format error\n",
		"sluice: module missing.ko: open " + k.root + dir + "missing.ko: no such file or directory\n",
	} {
		if !strings.Contains(console.String(), want) {
			t.Errorf("console lacks %q; got:\n%s", want, console.String())
		}
	}
}

func TestLoadModulesWithoutList(t *testing.T) {
	k := newFakeKernel(t)
	var console syncBuffer
	if _, err := Boot(k.config(&console)); err != nil {
		t.Fatal(err)
	}
	want := "sluice: modules: module list: open " + k.root + "/lib/modules/6.1.0-test/modules.load: no such file or directory"
	if !strings.Contains(console.String(), want) {
		t.Errorf("console lacks %q; got:\n%s", want, console.String())
	}
	if got := k.Calls("finit_module"); len(got) != 0 {
		t.Errorf("finit_module calls = %q, want none", got)
	}
}
