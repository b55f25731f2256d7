package test

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/test/harness"
)

// TestExportReproducible: with SOURCE_DATE_EPOCH set, exports of the same
// selection give byte-identical bundles whatever --jobs, the cache state
// (none, cold, warm), the order of the mapping file or a volume split (the
// volumes concatenated are the single file). Without it the export time is
// recorded, and ferry diff still sees no difference.
func TestExportReproducible(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, reg, "", harness.SmallSet())
	harness.Seed(t, reg, "", harness.LargeLayerSet(3<<20)) // so that 1 MiB volumes are several
	dir := t.TempDir()
	mappings := []string{
		"      - from: spaceone/console\n        tags: ['regex: 1\\.11\\..*', latest]\n",
		"      - from: spaceone/plugin-a\n        tags: ['semver: >=1.0.0 <2.0.0']\n",
		"      - from: library/redis\n        tags: [latest]\n",
		"      - from: library/alpine\n        tags: ['3.19']\n",
		"      - from: large/blob\n",
	}
	head := "tasks:\n  - name: t\n    source:\n      registry: " + reg.Host + "\n    mappings:\n"
	forward := writeFile(t, filepath.Join(dir, "forward.yaml"), head+strings.Join(mappings, ""))
	var rev []string
	for i := len(mappings) - 1; i >= 0; i-- {
		rev = append(rev, mappings[i])
	}
	backward := writeFile(t, filepath.Join(dir, "backward.yaml"), head+strings.Join(rev, ""))

	const epoch = "1700000000" // 2023-11-14T22:13:20Z
	export := func(env []string, mapping, out string, args ...string) {
		t.Helper()
		all := append([]string{"export", "-q", "-f", mapping, "-o", filepath.Join(dir, out)}, args...)
		if stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: env}, bin, all...); code != 0 {
			t.Fatalf("export %s: exit %d\n%s\n%s", out, code, stdout, stderr)
		}
	}
	sum := func(names ...string) string {
		t.Helper()
		var data []byte
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			data = append(data, b...)
		}
		return sha256Hex(data)
	}
	fixed := ferryEnv(t, "SOURCE_DATE_EPOCH="+epoch)
	warm := filepath.Join(dir, "warm")
	export(fixed, forward, "cold.tar", "--jobs", "1", "--cache", filepath.Join(dir, "cold"))
	export(fixed, forward, "prime.tar", "--jobs", "4", "--cache", warm)
	export(fixed, forward, "warm.tar", "--jobs", "8", "--cache", warm)
	export(fixed, backward, "backward.tar", "--jobs", "3")
	export(fixed, forward, "split.tar", "--jobs", "2", "--split", "1MiB")

	want := sum(filepath.Join(dir, "cold.tar"))
	for _, name := range []string{"warm.tar", "prime.tar", "backward.tar"} {
		if got := sum(filepath.Join(dir, name)); got != want {
			t.Errorf("%s: sha256 %s, cold.tar %s", name, got, want)
		}
	}
	vols, _ := filepath.Glob(filepath.Join(dir, "split.tar.[0-9][0-9][0-9]"))
	if len(vols) < 2 {
		t.Fatalf("split export wrote %d volumes, want several", len(vols))
	}
	if got := sum(vols...); got != want {
		t.Errorf("split volumes concatenated: sha256 %s, cold.tar %s", got, want)
	}
	side, err := os.ReadFile(filepath.Join(dir, "warm.tar.sha256"))
	if err != nil || string(side) != want+"  warm.tar\n" {
		t.Errorf("warm.tar.sha256 = %q, %v; want the same sum", side, err)
	}

	// Every recorded time is SOURCE_DATE_EPOCH.
	rec := readRecord(t, filepath.Join(dir, "cold.tar"))
	if !rec.Created.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("created = %s, want %s", rec.Created, time.Unix(1700000000, 0).UTC())
	}
	for name, mt := range tarTimes(t, filepath.Join(dir, "cold.tar")) {
		if !mt.Equal(time.Unix(1700000000, 0)) {
			t.Errorf("tar entry %s: time %s", name, mt)
		}
	}

	// Without SOURCE_DATE_EPOCH: today's time, other bytes, the same
	// content (id, and no difference for ferry diff).
	export(ferryEnv(t), forward, "today.tar")
	today := readRecord(t, filepath.Join(dir, "today.tar"))
	if time.Since(today.Created) > time.Hour || time.Since(today.Created) < -time.Minute {
		t.Errorf("created without SOURCE_DATE_EPOCH = %s, want now", today.Created)
	}
	if today.ID != rec.ID {
		t.Errorf("id %s, with SOURCE_DATE_EPOCH %s: the id must derive from content only", today.ID, rec.ID)
	}
	if stdout, stderr, code := harness.Run(t, bin, "diff", "--exit-code", filepath.Join(dir, "cold.tar"), filepath.Join(dir, "today.tar")); code != 0 || !strings.Contains(stdout, "no differences") {
		t.Errorf("diff of equal content: exit %d\n%s\n%s", code, stdout, stderr)
	}

	// A SOURCE_DATE_EPOCH that is not a number is refused, naming it.
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: ferryEnv(t, "SOURCE_DATE_EPOCH=yesterday")}, bin, "export", "-q", "-f", forward, "-o", filepath.Join(dir, "bad.tar"))
	if code == 0 || !strings.Contains(stderr, "SOURCE_DATE_EPOCH") {
		t.Errorf("bad SOURCE_DATE_EPOCH: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.tar")); !os.IsNotExist(err) {
		t.Error("a refused export left bad.tar behind")
	}
}

func readRecord(t *testing.T, path string) *bundle.Record {
	t.Helper()
	rec, err := bundle.ReadRecord(path)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// tarTimes returns every entry's modification time.
func tarTimes(t *testing.T, path string) map[string]time.Time {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]time.Time{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h.ModTime
	}
}
