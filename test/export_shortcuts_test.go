//go:build linux

package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/test/harness"
)

// These tests break the premise of each shortcut export takes with
// --cache (a recorded bundle copied from without hashing, an output
// trusted as up to date) and check the result is still right.

// shortcutSummary is the part of `ferry export --json` these tests read.
type shortcutSummary struct {
	UpToDate        bool     `json:"upToDate"`
	Volumes         []string `json:"volumes"`
	BytesDownloaded int64    `json:"bytesDownloaded"`
	BytesFromCache  int64    `json:"bytesFromCache"`
	Images          []struct {
		Target string   `json:"target"`
		Tags   []string `json:"tags"`
		Digest string   `json:"digest"`
	} `json:"images"`
}

const shortcutLayer = 2 << 20 // the largest blob: a flip in the middle of a bundle lands in it

// shortcutSet is one image with a 2 MiB layer and two small ones.
func shortcutSet() harness.FixtureSet {
	return harness.FixtureSet{Specs: append(harness.LargeLayerSet(shortcutLayer).Specs,
		harness.FixtureSpec{Repo: "app/web", Tag: "1", Kind: harness.OCIImage, Bases: []string{"os"}},
		harness.FixtureSpec{Repo: "app/web", Tag: "2", Kind: harness.DockerImage, Bases: []string{"os"}, AppSize: 64 << 10})}
}

func shortcutMapping(t *testing.T, dir, host string) string {
	return writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+host+
		"\n    mappings:\n      - from: large/blob\n        tags: [latest]\n      - from: app/web\n        tags: ['regex: ^[0-9]+$']\n")
}

func parseShortcutSummary(t *testing.T, stdout string) shortcutSummary {
	t.Helper()
	var s shortcutSummary
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("export --json summary: %v\n%s", err, stdout)
	}
	return s
}

// checkBundle verifies the bundle with ferry verify, then reads it (its
// volumes joined) and checks that every blob has its digest and that each
// image is at the digest the source registry serves.
func checkBundle(t *testing.T, bin, path string, volumes []string, want map[string]string) {
	t.Helper()
	verifyOK(t, bin, path)
	file := path
	if len(volumes) > 1 {
		file = filepath.Join(t.TempDir(), "joined.tar")
		var all []byte
		for _, v := range volumes {
			all = append(all, mustRead(t, v)...)
		}
		if err := os.WriteFile(file, all, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tc := readBundle(t, file)
	for name, data := range tc.Blobs {
		if got := "blobs/sha256/" + sha256Hex(data); got != name {
			t.Errorf("%s: blob %s holds bytes of %s", path, name, got)
		}
	}
	for _, im := range tc.record(t).Images {
		for _, tag := range im.Tags {
			if d, ok := want[im.Target+":"+tag]; ok && d != im.Digest {
				t.Errorf("%s: %s:%s at %s, the source has %s", path, im.Target, tag, im.Digest, d)
			}
		}
	}
}

// TestExportSplitCacheReruns: --split with --cache (which panicked after
// writing the volumes) records the volumes; the next exports, to another
// output, to the same one, as a --since delta and cut against --have,
// copy from them and verify, with the source's digests.
func TestExportSplitCacheReruns(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fx := harness.Seed(t, reg, "", shortcutSet())
	proxy, counter := harness.CountingProxy(t, reg)
	dir := t.TempDir()
	m := shortcutMapping(t, dir, proxy.Host)
	cache := filepath.Join(dir, "cache")
	want := fixtureDigests(fx)
	export := func(out string, extra ...string) shortcutSummary {
		t.Helper()
		counter.Reset()
		return runExport[shortcutSummary](t, bin, append([]string{"-f", m, "-o", out, "--split", "1MiB", "--cache", cache}, extra...)...)
	}

	b1 := filepath.Join(dir, "b1.tar")
	first := export(b1)
	if len(first.Volumes) < 3 || first.BytesDownloaded < shortcutLayer {
		t.Fatalf("first export: %+v; want 3 volumes or more, the layer downloaded", first)
	}
	checkBundle(t, bin, b1, first.Volumes, want)

	for _, out := range []string{filepath.Join(dir, "b2.tar"), filepath.Join(dir, "b2.tar")} { // another output, then the same again
		s := export(out)
		if got := counter.Count("GET", harness.KindBlob); got != 0 || s.BytesFromCache < shortcutLayer {
			t.Errorf("rerun into %s: %d blob GETs, %d bytes from the cache; want 0 GETs, the layer from the recorded volumes\n%s", out, got, s.BytesFromCache, counter)
		}
		checkBundle(t, bin, out, s.Volumes, want)
	}

	// What the "site" holds now (the same registry, read as the target),
	// then a new tag upstream: a --since delta and a --have bundle carry
	// only it.
	have := filepath.Join(dir, "have.json")
	if _, stderr, code := harness.Run(t, bin, "inventory", "-f", m, "--to", reg.Host, "-o", have); code != 0 {
		t.Fatalf("inventory: exit %d\n%s", code, stderr)
	}
	fx = append(fx, harness.Seed(t, reg, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "3", Kind: harness.OCIImage, Bases: []string{"os"}, AppSize: 1536 << 10}}})...)
	want = fixtureDigests(fx)
	for _, extra := range [][]string{{"--since", b1}, {"--have", have}} {
		out := filepath.Join(dir, strings.TrimPrefix(extra[0], "--")+".tar")
		s := export(out, extra...)
		if len(s.Images) != 1 || s.Images[0].Target != "app/web" || s.Images[0].Digest != want["app/web:3"] {
			t.Errorf("export %v: images %+v, want app/web:3 alone", extra, s.Images)
		}
		checkBundle(t, bin, out, s.Volumes, want)
	}
}

// TestExportCacheRecordedBundleGone: a bundle the cache recorded is
// deleted, moved, truncated, or changed in place with its size and
// modification time put back. The next export with that cache (which
// panicked) succeeds, fetches the layer again instead of copying it, and
// writes a bundle that verifies; the stale record is removed.
func TestExportCacheRecordedBundleGone(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	want := fixtureDigests(harness.Seed(t, reg, "", shortcutSet()))
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, path string)
	}{
		{"deleted", func(t *testing.T, path string) { mustDo(t, os.Remove(path)) }},
		{"moved", func(t *testing.T, path string) { mustDo(t, os.Rename(path, path+".shipped")) }},
		{"truncated", func(t *testing.T, path string) { mustDo(t, os.Truncate(path, shortcutLayer/2)) }},
		{"changed in place, mtime restored", func(t *testing.T, path string) {
			info, err := os.Stat(path)
			mustDo(t, err)
			time.Sleep(20 * time.Millisecond) // file times tick with the kernel's clock
			flipMiddle(t, path, info.Size())
			mustDo(t, os.Chtimes(path, info.ModTime(), info.ModTime()))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			m := shortcutMapping(t, dir, reg.Host)
			cache := filepath.Join(dir, "cache")
			b1, b2 := filepath.Join(dir, "b1.tar"), filepath.Join(dir, "b2.tar")
			runExport[shortcutSummary](t, bin, "-f", m, "-o", b1, "--cache", cache)
			if recorded(t, cache) != b1 {
				t.Fatalf("the first bundle was not recorded")
			}
			tc.change(t, b1)
			s := runExport[shortcutSummary](t, bin, "-f", m, "-o", b2, "--cache", cache)
			if s.BytesDownloaded < shortcutLayer {
				t.Errorf("%s bundle: %d bytes downloaded; the layer must be fetched again, not copied from it", tc.name, s.BytesDownloaded)
			}
			checkBundle(t, bin, b2, nil, want)
			if got := recorded(t, cache); got != b2 {
				t.Errorf("the cache records %q; want only the new bundle (the stale record removed)", got)
			}
		})
	}
}

// recorded returns the paths the cache's bundle records name, joined.
func recorded(t *testing.T, cache string) string {
	t.Helper()
	var paths []string
	for _, name := range dirEntries(t, filepath.Join(cache, "bundles")) {
		var rec struct {
			Path string `json:"path"`
		}
		if err := json.Unmarshal(mustRead(t, filepath.Join(cache, "bundles", name)), &rec); err != nil {
			t.Fatalf("record %s: %v", name, err)
		}
		paths = append(paths, rec.Path)
	}
	return strings.Join(paths, " ")
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// rewriteChecksum writes PATH.sha256 to match the file as it is now.
func rewriteChecksum(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	mustDo(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	mustDo(t, err)
	mustDo(t, os.WriteFile(path+".sha256", []byte(hex.EncodeToString(h.Sum(nil))+"  "+filepath.Base(path)+"\n"), 0o644))
}

// TestExportUpToDateRewrittenChecksum: a byte of the output's layer is
// changed in place, the .sha256 rewritten to match and the modification
// time put back. The next export must not take the output as up to date
// (it used to, then recorded it as trusted): it writes the bundle anew,
// with and without --cache, and a later bundle made from the cache carries
// the right bytes.
func TestExportUpToDateRewrittenChecksum(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	want := fixtureDigests(harness.Seed(t, reg, "", shortcutSet()))
	dir := t.TempDir()
	m := shortcutMapping(t, dir, reg.Host)
	cache := filepath.Join(dir, "cache")
	out := filepath.Join(dir, "b.tar")
	runExport[shortcutSummary](t, bin, "-f", m, "-o", out, "--cache", cache)
	damage := func() {
		info, err := os.Stat(out)
		mustDo(t, err)
		time.Sleep(20 * time.Millisecond) // file times tick with the kernel's clock
		flipMiddle(t, out, info.Size())
		rewriteChecksum(t, out)
		mustDo(t, os.Chtimes(out, info.ModTime(), info.ModTime()))
	}
	for _, args := range [][]string{{"--cache", cache}, nil} {
		damage()
		before := idOf(t, out)
		s := runExport[shortcutSummary](t, bin, append([]string{"-f", m, "-o", out}, args...)...)
		if s.UpToDate || idOf(t, out).ino == before.ino {
			t.Fatalf("a damaged output with a matching .sha256 (args %v) was taken as up to date", args)
		}
		checkBundle(t, bin, out, nil, want)
	}
	// The output written anew is recorded; an unchanged rerun is up to
	// date again, and a bundle made from the cache is right.
	if s := runExport[shortcutSummary](t, bin, "-f", m, "-o", out, "--cache", cache); !s.UpToDate {
		t.Error("an unchanged output is not up to date")
	}
	b2 := filepath.Join(dir, "b2.tar")
	if s := runExport[shortcutSummary](t, bin, "-f", m, "-o", b2, "--cache", cache); s.BytesFromCache < shortcutLayer {
		t.Errorf("the later bundle took %d bytes from the cache; want the layer", s.BytesFromCache)
	}
	checkBundle(t, bin, b2, nil, want)
}

// rawManifest is a manifest pushed as its exact bytes.
type rawManifest struct {
	data []byte
	mt   types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.data, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// TestExportLyingDescriptorSize: a manifest whose layer descriptor gives a
// size other than the blob's. With the blob in a recorded bundle the cache
// copied as many bytes as the descriptor said and the export succeeded
// with a wrong layer; now it fails as the registry path does, naming the
// image, the blob and both sizes, and writes no bundle.
func TestExportLyingDescriptorSize(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartInProcess(t) // go-containerregistry's registry stores a manifest without checking its sizes
	img, err := random.Image(64<<10, 1)
	mustDo(t, err)
	mustDo(t, remote.Write(reg.Ref(t, "lie/app:good"), img, reg.RemoteOptions("")...))
	mf, err := img.Manifest()
	mustDo(t, err)
	layer := mf.Layers[0]
	mt, _ := img.MediaType()
	for _, lie := range []struct {
		tag  string
		size int64
	}{{"short", layer.Size - 1}, {"long", layer.Size + 100}} {
		bad := *mf
		bad.Layers = append(bad.Layers[:0:0], mf.Layers...)
		bad.Layers[0].Size = lie.size
		data, err := json.Marshal(&bad)
		mustDo(t, err)
		mustDo(t, remote.Put(reg.Ref(t, "lie/app:"+lie.tag), rawManifest{data, mt}, reg.RemoteOptions("")...))
	}
	dir := t.TempDir()
	mapping := func(tag string) string {
		return writeFile(t, filepath.Join(dir, tag+".yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+reg.Host+
			"\n    mappings:\n      - from: lie/app\n        tags: ['"+tag+"']\n")
	}
	cache := filepath.Join(dir, "cache")
	runExport[shortcutSummary](t, bin, "-f", mapping("good"), "-o", filepath.Join(dir, "good.tar"), "--cache", cache)

	for _, tag := range []string{"short", "long"} {
		for _, args := range [][]string{{"--cache", cache}, nil} {
			out := filepath.Join(dir, fmt.Sprintf("%s-%d.tar", tag, len(args)))
			stdout, stderr, code := harness.Run(t, bin, append([]string{"export", "-f", mapping(tag), "-o", out}, args...)...)
			all := stdout + stderr
			if code != 1 || !strings.Contains(all, layer.Digest.String()) || !strings.Contains(all, "lie/app") ||
				!strings.Contains(all, "content does not match its digest") {
				t.Errorf("%s (args %v): exit %d; want 1, naming the image and blob %s as not matching\n%s", tag, args, code, layer.Digest, all)
			}
			if len(args) > 0 && !strings.Contains(all, fmt.Sprint(layer.Size)) {
				t.Errorf("%s from the cache: the error does not give the blob's size %d:\n%s", tag, layer.Size, all)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("%s (args %v): a bundle was written", tag, args)
			}
		}
	}
}

// TestExportBadSourceDateEpochNoRequest: an invalid SOURCE_DATE_EPOCH is
// exit 2 before any request (it was exit 1 after every mapping was
// resolved).
func TestExportBadSourceDateEpochNoRequest(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartInProcess(t)
	proxy, counter := harness.CountingProxy(t, reg)
	dir := t.TempDir()
	m := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+proxy.Host+"\n    mappings:\n      - from: a/b\n")
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: []string{"SOURCE_DATE_EPOCH=next tuesday"}}, bin,
		"export", "-f", m, "-o", filepath.Join(dir, "b.tar"))
	if code != 2 || !strings.Contains(stderr, "SOURCE_DATE_EPOCH") {
		t.Errorf("exit %d; want 2 naming SOURCE_DATE_EPOCH\n%s\n%s", code, stdout, stderr)
	}
	if n := counter.Total(); n != 0 {
		t.Errorf("%d requests were made:\n%s", n, counter)
	}
}

// TestChartWarningOnce: a chart image the bundle does not carry is warned
// about once on stderr (it was printed twice: logged, and again from the
// summary), and listed once in the --json summary.
func TestChartWarningOnce(t *testing.T) {
	h := newHelm(t)
	bin := harness.BuildFerry(t)
	repo := makeChartRepo(t, h, "registry.example/team/web:1.0", "registry.example/team/hook:2.0", "1.0.0")
	m := writeChartMapping(t, "charts:\n  - {repo: '"+repo.URL+"', name: demo, version: 1.0.0}\n")
	dir := t.TempDir()
	warnings := []string{
		"template demo/templates/deployment.yaml uses image registry.example/team/web:1.0, which the bundle does not carry",
		"template demo/templates/tests/test-connection.yaml uses image registry.example/team/hook:2.0, which the bundle does not carry",
	}
	stdout, stderr, code := harness.Run(t, bin, "export", "-f", m, "-o", filepath.Join(dir, "b.tar"))
	if code != 0 {
		t.Fatalf("export: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, w := range warnings {
		if n := strings.Count(stderr, w); n != 1 {
			t.Errorf("warning %q printed %d times, want once:\n%s", w, n, stderr)
		}
	}
	stdout, stderr, code = harness.Run(t, bin, "export", "--json", "-f", m, "-o", filepath.Join(dir, "j.tar"))
	if code != 0 {
		t.Fatalf("export --json: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var s struct {
		Warnings []string `json:"warnings"`
	}
	mustDo(t, json.Unmarshal([]byte(stdout), &s))
	for _, w := range warnings {
		if n := strings.Count(strings.Join(s.Warnings, "\n"), w); n != 1 || strings.Count(stderr, w) != 1 {
			t.Errorf("--json: warning %q listed %d times in the summary, printed %d times on stderr; want once each", w, n, strings.Count(stderr, w))
		}
	}
}
