package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

type diffJSON struct {
	TagsAdded   []diffTag `json:"tagsAdded"`
	TagsRemoved []diffTag `json:"tagsRemoved"`
	TagsMoved   []struct {
		Target, Tag, OldDigest, NewDigest string
		LayersKnown                       bool
		LayersAdded, LayersRemoved        []struct{ Digest string }
	} `json:"tagsMoved"`
	ImagesAdded   []struct{ Target, Digest string } `json:"imagesAdded"`
	ImagesRemoved []struct{ Target, Digest string } `json:"imagesRemoved"`
	NewBlobs      int                               `json:"newBlobs"`
	NewBytes      int64                             `json:"newBytes"`
}

type diffTag struct{ Target, Tag, Digest string }

func runDiff(t *testing.T, bin string, args ...string) (diffJSON, int) {
	t.Helper()
	stdout, stderr, code := harness.Run(t, bin, append([]string{"diff", "--json"}, args...)...)
	var d diffJSON
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatalf("diff %v: exit %d, output is not JSON: %v\n%s\n%s", args, code, err, stdout, stderr)
	}
	return d, code
}

func tagList(ts []diffTag) []string {
	var out []string
	for _, x := range ts {
		out = append(out, x.Target+":"+x.Tag)
	}
	return out
}

// TestDiff: ferry diff on two full bundles and on a base (in volumes) and
// its delta lists exactly the changed tags, the moved tag's layers and the
// new bytes; --exit-code says whether they differ; hostile input is a clear
// error with exit 2.
func TestDiff(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fx := harness.Seed(t, reg, "", harness.SmallSet())
	harness.Seed(t, reg, "", harness.LargeLayerSet(3<<20)) // so that the base is in several 1 MiB volumes
	dir := t.TempDir()
	mapping := func(name, consoleTags string, withPluginB bool) string {
		m := "tasks:\n  - name: t\n    source:\n      registry: " + reg.Host + "\n    mappings:\n" +
			"      - from: spaceone/console\n        tags: [" + consoleTags + "]\n" +
			"      - from: library/redis\n        tags: ['7.2.4']\n" +
			"      - from: large/blob\n"
		if withPluginB {
			m += "      - from: spaceone/plugin-b\n        tags: ['1.0.0']\n"
		}
		return writeFile(t, filepath.Join(dir, name), m)
	}
	export := func(m, out string, args ...string) {
		t.Helper()
		if stdout, stderr, code := harness.Run(t, bin, append([]string{"export", "-q", "-f", m, "-o", filepath.Join(dir, out)}, args...)...); code != 0 {
			t.Fatalf("export %s: exit %d\n%s\n%s", out, code, stdout, stderr)
		}
	}
	old := filepath.Join(dir, "old.tar")
	export(mapping("old.yaml", "'1.11.0', '1.11.5', latest", true), "old.tar", "--split", "1MiB")
	if _, err := os.Stat(old + ".002"); err != nil {
		t.Fatalf("the base is not in volumes: %v", err)
	}

	// Upstream: a new 1.11.13, and latest moves to it. The new selection
	// drops 1.11.0 and plugin-b and adds 1.11.13.
	added := harness.Seed(t, reg, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "spaceone/console", Tag: "1.11.13", Kind: harness.DockerImage, Bases: []string{"os", "node-runtime"}},
		{Repo: "spaceone/console", Tag: "latest", AliasOf: "1.11.13"},
	}})
	newMap := mapping("new.yaml", "'1.11.5', '1.11.13', latest", false)
	export(newMap, "new.tar")
	export(newMap, "delta.tar", "--since", old)

	oldLatest := fixtureByRef(t, fx, "spaceone/console:latest")
	wantAdded := []string{"spaceone/console:1.11.13"}
	// A delta stands for the registry after importing it on top of its
	// base, and import removes nothing: a delta shows no removals. The
	// full bundle of the new selection shows what the selection dropped:
	// two tags, and three images (1.11.0, plugin-b and latest's old image).
	for _, c := range []struct {
		newer         string
		wantRemoved   []string
		imagesRemoved int
	}{
		{filepath.Join(dir, "new.tar"), []string{"spaceone/console:1.11.0", "spaceone/plugin-b:1.0.0"}, 3},
		{filepath.Join(dir, "delta.tar"), nil, 0},
	} {
		newer, wantRemoved := c.newer, c.wantRemoved
		d, code := runDiff(t, bin, old, newer)
		if code != 0 {
			t.Errorf("diff %s: exit %d without --exit-code", newer, code)
		}
		if got := tagList(d.TagsAdded); !slices.Equal(got, wantAdded) {
			t.Errorf("%s: added %v, want %v", newer, got, wantAdded)
		}
		if got := tagList(d.TagsRemoved); !slices.Equal(got, wantRemoved) {
			t.Errorf("%s: removed %v, want %v", newer, got, wantRemoved)
		}
		if len(d.TagsMoved) != 1 {
			t.Fatalf("%s: moved %+v, want spaceone/console:latest", newer, d.TagsMoved)
		}
		m := d.TagsMoved[0]
		if m.Target != "spaceone/console" || m.Tag != "latest" || m.OldDigest != oldLatest.Digest || m.NewDigest != added[0].Digest {
			t.Errorf("%s: moved %+v, want latest %s → %s", newer, m, oldLatest.Digest, added[0].Digest)
		}
		// The images share their bases: only the app layer differs.
		var plus, minus []string
		for _, l := range m.LayersAdded {
			plus = append(plus, l.Digest)
		}
		for _, l := range m.LayersRemoved {
			minus = append(minus, l.Digest)
		}
		if !m.LayersKnown || !slices.Equal(plus, layersMinus(added[0].Layers, oldLatest.Layers)) || !slices.Equal(minus, layersMinus(oldLatest.Layers, added[0].Layers)) {
			t.Errorf("%s: layers known %v, +%v -%v; want +%v -%v", newer, m.LayersKnown, plus, minus,
				layersMinus(added[0].Layers, oldLatest.Layers), layersMinus(oldLatest.Layers, added[0].Layers))
		}
		if len(d.ImagesAdded) != 1 || d.ImagesAdded[0].Digest != added[0].Digest || len(d.ImagesRemoved) != c.imagesRemoved {
			t.Errorf("%s: images added %+v, removed %+v", newer, d.ImagesAdded, d.ImagesRemoved)
		}
		// New: 1.11.13's manifest, config and app layer.
		if d.NewBlobs != 3 || d.NewBytes <= 0 {
			t.Errorf("%s: new blobs %d (%d bytes), want 3", newer, d.NewBlobs, d.NewBytes)
		}
	}

	// The table, for people.
	stdout, stderr, code := harness.Run(t, bin, "diff", "--exit-code", old, filepath.Join(dir, "new.tar"))
	if code != 1 {
		t.Errorf("diff --exit-code of differing bundles: exit %d, want 1\n%s", code, stderr)
	}
	for _, want := range []string{"spaceone/console:latest", "moved", "spaceone/console:1.11.13", "added", "spaceone/plugin-b:1.0.0", "removed",
		"layers of spaceone/console:latest", "1 tags added, 2 removed, 1 moved; 1 images added, 3 removed; 3 new blobs"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	stdout, _, code = harness.Run(t, bin, "diff", old, filepath.Join(dir, "delta.tar"))
	if code != 0 || !strings.Contains(stdout, "delta of ") || !strings.Contains(stdout, "1 tags added, 0 removed, 1 moved") {
		t.Errorf("diff against the delta: exit %d\n%s", code, stdout)
	}
	// A bundle in volumes against itself (by base name and first volume):
	// no differences, exit 0.
	if stdout, stderr, code := harness.Run(t, bin, "diff", "--exit-code", old, old+".000"); code != 0 || !strings.Contains(stdout, "no differences") {
		t.Errorf("old vs itself: exit %d\n%s\n%s", code, stdout, stderr)
	}

	checkDiffHostile(t, bin, dir, filepath.Join(dir, "new.tar"))
}

// checkDiffHostile: a missing file, a non-bundle and a truncated bundle are
// refused with exit 2 and a message that names the argument; --json adds
// an error object on stdout.
func checkDiffHostile(t *testing.T, bin, dir, good string) {
	t.Helper()
	notBundle := writeFile(t, filepath.Join(dir, "notes.txt"), "these are not the images you are looking for\n")
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.tar")
	if err := os.WriteFile(truncated, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{filepath.Join(dir, "missing.tar"), good}, "OLD: opening bundle"},
		{[]string{good, notBundle}, "NEW: " + notBundle + ": not a ferry bundle"},
		{[]string{good, truncated}, "NEW: bundle " + truncated},
		{[]string{good}, "diff needs two bundles"},
	} {
		stdout, stderr, code := harness.Run(t, bin, append([]string{"diff", "--exit-code"}, c.args...)...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("diff %v: exit %d, want 2 and %q\nstdout:\n%s\nstderr:\n%s", c.args, code, c.want, stdout, stderr)
		}
	}
	// The error object every command prints, not a bare string.
	stdout, _, code := harness.Run(t, bin, "diff", "--json", good, truncated)
	var e struct{ Error cliError }
	if code != 2 || json.Unmarshal([]byte(stdout), &e) != nil || !strings.Contains(e.Error.Message, "truncated.tar") ||
		e.Error.Kind != "bundle" || e.Error.ExitCode != 2 {
		t.Errorf("diff --json of a truncated bundle: exit %d, stdout %q", code, stdout)
	}
}

// layersMinus lists the layers of a not in b, sorted.
func layersMinus(a, b []string) []string {
	var out []string
	for _, l := range a {
		if !slices.Contains(b, l) && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}
