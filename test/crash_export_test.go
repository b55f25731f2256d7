//go:build linux

package test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

// crashSeed fixes where the kills of the crash-and-rerun tests (export,
// unpack --static) land; a failure names the run, its scenario and its
// delay, so the run can be replayed.
const crashSeed = 22

// TestCrashExportRerun: `ferry export --cache` (one file, and --split
// volumes) is killed with SIGKILL at seeded random points, 20 times each,
// then the same export is run again. The rerun must succeed and its bundle
// verify, hold every image at the source's digest, and leave no temporary
// file of the killed run beside it. The runs vary what the cache already
// holds: nothing (cold), or the bundles of the earlier runs, kept, deleted,
// or overwritten by this run. Kill delays are spread over the measured
// length of a clean run of the same kind (a few hundred milliseconds: the
// 6 MiB layer makes kills land mid-blob).
func TestCrashExportRerun(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	set := harness.FixtureSet{Specs: append(harness.LargeLayerSet(6<<20).Specs,
		harness.FixtureSpec{Repo: "app/web", Tag: "1", Kind: harness.OCIImage, Bases: []string{"os"}},
		harness.FixtureSpec{Repo: "app/web", Tag: "2", Kind: harness.DockerImage, Bases: []string{"os"}, AppSize: 256 << 10})}
	want := fixtureDigests(harness.Seed(t, reg, "", set))
	for _, split := range []bool{false, true} {
		name := "one file"
		if split {
			name = "split"
		}
		t.Run(name, func(t *testing.T) {
			crashRuns(t, bin, reg.Host, split, want)
		})
	}
}

// crashRun is one export's arguments: where it writes and with which cache.
type crashRun struct {
	out, cache string
	split      bool
	mapping    string
}

func (r crashRun) args() []string {
	a := []string{"export", "-q", "--json", "-f", r.mapping, "-o", r.out, "--cache", r.cache}
	if r.split {
		a = append(a, "--split", "1MiB")
	}
	return a
}

func crashRuns(t *testing.T, bin, host string, split bool, want map[string]string) {
	dir := t.TempDir()
	m := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+host+
		"\n    mappings:\n      - from: large/blob\n        tags: [latest]\n      - from: app/web\n        tags: ['1', '2']\n")
	seed := uint64(crashSeed)
	if split {
		seed++
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	warm := filepath.Join(dir, "warm-cache")

	// Clean runs give the length of each kind: cold (an empty cache) and
	// warm (the layers copied from a recorded bundle).
	clean := func(r crashRun) time.Duration {
		mustDo(t, os.MkdirAll(filepath.Dir(r.out), 0o755))
		return crashFinish(t, bin, r, want)
	}
	coldLen := clean(crashRun{out: filepath.Join(dir, "clean-cold", "b.tar"), cache: filepath.Join(dir, "clean-cold", "cache"), split: split, mapping: m})
	clean(crashRun{out: filepath.Join(dir, "warm-0", "b.tar"), cache: warm, split: split, mapping: m})
	prev := filepath.Join(dir, "warm-1", "b.tar")
	warmLen := clean(crashRun{out: prev, cache: warm, split: split, mapping: m})
	t.Logf("clean runs: cold %v, warm %v", coldLen, warmLen)
	killed := 0

	for i := 1; i <= 20; i++ {
		r := crashRun{out: filepath.Join(dir, fmt.Sprintf("run-%02d", i), "b.tar"), cache: warm, split: split, mapping: m}
		length, scenario := warmLen, ""
		switch rng.IntN(4) {
		case 0:
			r.cache, length, scenario = filepath.Join(dir, fmt.Sprintf("run-%02d", i), "cache"), coldLen, "cold cache"
		case 1:
			scenario = "warm cache, earlier bundle kept"
		case 2:
			scenario = "warm cache, earlier bundle deleted"
			removeCrashBundle(t, prev)
		case 3:
			scenario = "warm cache, overwriting the earlier bundle"
			r.out = prev
		}
		mustDo(t, os.MkdirAll(filepath.Dir(r.out), 0o755))
		delay := time.Duration(rng.Int64N(int64(length)))
		t.Run(fmt.Sprintf("%02d %s, kill after %v", i, scenario, delay.Round(time.Millisecond)), func(t *testing.T) {
			if crashKill(t, bin, r, delay) {
				killed++
			}
			crashFinish(t, bin, r, want)
		})
		if r.cache == warm {
			prev = r.out
		}
	}
	t.Logf("%d of 20 exports were killed before they ended", killed)
}

// crashKill starts the export and kills it with SIGKILL after delay (or
// lets it end, when it ends first); it reports whether it killed it.
func crashKill(t *testing.T, bin string, r crashRun, delay time.Duration) bool {
	t.Helper()
	cmd := exec.Command(bin, r.args()...)
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		t.Logf("the export ended before the kill")
		return false
	case <-time.After(delay):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return true
	}
}

// crashFinish runs the export to its end and checks the bundle; it
// returns how long the export ran.
func crashFinish(t *testing.T, bin string, r crashRun, want map[string]string) time.Duration {
	t.Helper()
	start := time.Now()
	stdout, stderr, code := harness.Run(t, bin, r.args()...)
	took := time.Since(start)
	if code != 0 {
		t.Fatalf("rerun: exit %d\n%s\n%s", code, stdout, stderr)
	}
	s := parseShortcutSummary(t, stdout)
	volumes := s.Volumes
	if len(volumes) == 0 {
		volumes = []string{r.out}
	}
	checkBundle(t, bin, r.out, volumes, want)
	if len(s.Images) != 3 {
		t.Errorf("rerun exported %d images, want 3: %+v", len(s.Images), s.Images)
	}
	for _, n := range dirEntries(t, filepath.Dir(r.out)) {
		if strings.Contains(n, ".tmp-") {
			t.Errorf("a temporary file of the killed export is left: %s", n)
		}
	}
	return took
}

// removeCrashBundle deletes a bundle file or its volumes, and its checksum.
func removeCrashBundle(t *testing.T, path string) {
	t.Helper()
	matches, _ := filepath.Glob(path + "*")
	for _, p := range matches {
		mustDo(t, os.Remove(p))
	}
}
