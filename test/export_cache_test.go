package test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

type cacheSummary struct {
	Images []struct {
		Target    string   `json:"target"`
		Tags      []string `json:"tags"`
		Digest    string   `json:"digest"`
		Unchanged bool     `json:"unchanged"`
	} `json:"images"`
	ImagesNew       int   `json:"imagesNew"`
	ImagesUnchanged int   `json:"imagesUnchanged"`
	BytesDownloaded int64 `json:"bytesDownloaded"`
	BytesFromCache  int64 `json:"bytesFromCache"`
	ManifestGets    int64 `json:"manifestGets"`
}

func runExportJSON(t *testing.T, bin string, args ...string) cacheSummary {
	t.Helper()
	return runExport[cacheSummary](t, bin, args...)
}

// runExport runs ferry export --json -q with args, fails the test unless
// it exits 0, and decodes its summary into T (the fields a test reads).
func runExport[T any](t *testing.T, bin string, args ...string) T {
	t.Helper()
	stdout, stderr, code := harness.Run(t, bin, append([]string{"export", "--json", "-q"}, args...)...)
	if code != 0 {
		t.Fatalf("export exit %d\n%s\n%s", code, stdout, stderr)
	}
	var s T
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("summary: %v\n%s", err, stdout)
	}
	return s
}

// TestExportCacheNoWastedPulls: a second export with the same cache makes
// no manifest GET and no blob GET; after a new tag appears upstream, only
// that tag's new manifest and blobs are fetched.
func TestExportCacheNoWastedPulls(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, reg, "", harness.SmallSet())
	proxy, counter := harness.CountingProxy(t, reg)
	dir := t.TempDir()
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), `
tasks:
  - name: t
    source:
      registry: `+proxy.Host+`
    mappings:
      - from: spaceone/console
        tags: ['regex: 1\.11\..*']
      - from: library/redis
        tags: [latest]
`)
	cache := filepath.Join(dir, "cache")
	first := runExportJSON(t, bin, "-f", mapping, "-o", filepath.Join(dir, "b1.tar"), "--cache", cache)
	if first.ImagesNew != len(first.Images) || first.ImagesUnchanged != 0 || first.BytesDownloaded == 0 {
		t.Fatalf("first run: %+v", first)
	}
	counter.Reset()
	second := runExportJSON(t, bin, "-f", mapping, "-o", filepath.Join(dir, "b2.tar"), "--cache", cache)
	if got := counter.Count("GET", harness.KindBlob); got != 0 {
		t.Errorf("second export made %d blob GETs, want 0\n%s", got, counter)
	}
	if got := counter.Count("GET", harness.KindManifest); got != 0 {
		t.Errorf("second export made %d manifest GETs, want 0\n%s", got, counter)
	}
	if second.ImagesUnchanged != len(second.Images) || second.BytesDownloaded != 0 || second.ManifestGets != 0 {
		t.Errorf("second run: %+v", second)
	}
	if len(second.Images) != len(first.Images) {
		t.Fatalf("second run exported %d images, first %d", len(second.Images), len(first.Images))
	}
	// Both bundles verify and hold the same images.
	for _, b := range []string{"b1.tar", "b2.tar"} {
		if out, _, code := harness.Run(t, bin, "verify", filepath.Join(dir, b)); code != 0 {
			t.Fatalf("verify %s: %s", b, out)
		}
	}

	// A new tag upstream: only its manifest and its own layer are fetched.
	set := harness.FixtureSet{Specs: []harness.FixtureSpec{{Repo: "spaceone/console", Tag: "1.11.13", Kind: harness.DockerImage, Bases: []string{"os", "node-runtime"}}}}
	fx := harness.Seed(t, reg, "", set)
	counter.Reset()
	third := runExportJSON(t, bin, "-f", mapping, "-o", filepath.Join(dir, "b3.tar"), "--cache", cache)
	if third.ImagesNew != 1 || third.ImagesUnchanged != len(first.Images) {
		t.Errorf("third run: new %d unchanged %d, want 1 and %d", third.ImagesNew, third.ImagesUnchanged, len(first.Images))
	}
	if got := counter.Count("GET", harness.KindManifest); got != 1 {
		t.Errorf("third export made %d manifest GETs, want 1\n%s", got, counter)
	}
	// The new image shares its base layers: one new layer and its config.
	if got := counter.Count("GET", harness.KindBlob); got != 2 {
		t.Errorf("third export made %d blob GETs, want 2 (new layer + config)\n%s", got, counter)
	}
	found := false
	for _, im := range third.Images {
		if im.Digest == fx[0].Digest {
			found = !im.Unchanged
		}
	}
	if !found {
		t.Errorf("new tag not reported as new: %+v", third.Images)
	}
}

// slowProxy forwards to target, delivering blob bodies at about rate
// bytes per second, so that a test can interrupt a transfer midway.
func slowProxy(t *testing.T, target *harness.Registry, rate int) string {
	t.Helper()
	u, _ := url.Parse(target.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/blobs/sha256:") && resp.Request.Method == http.MethodGet {
			resp.Body = &slowBody{rc: resp.Body, rate: rate}
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

type slowBody struct {
	rc   io.ReadCloser
	rate int
}

func (s *slowBody) Read(p []byte) (int, error) {
	if len(p) > s.rate/20 {
		p = p[:s.rate/20]
	}
	time.Sleep(50 * time.Millisecond)
	return s.rc.Read(p)
}

func (s *slowBody) Close() error { return s.rc.Close() }

// TestExportKilledMidBlobResumes: kill -9 in the middle of a large blob,
// rerun with the same cache: the export completes and downloads only what
// the first run had not finished.
func TestExportKilledMidBlobResumes(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	const layer = 8 << 20
	set := harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "big/app", Tag: "1", Kind: harness.OCIImage, LargeLayer: layer},
		{Repo: "big/app", Tag: "2", Kind: harness.OCIImage, LargeLayer: layer},
		{Repo: "big/app", Tag: "3", Kind: harness.OCIImage, LargeLayer: layer},
	}}
	harness.Seed(t, reg, "", set)
	host := slowProxy(t, reg, 16<<20) // ~0.5 s per layer
	dir := t.TempDir()
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+host+"\n    mappings:\n      - from: big/app\n        tags: ['1', '2', '3']\n")
	cache := filepath.Join(dir, "cache")
	out := filepath.Join(dir, "bundle.tar")

	cmd := exec.Command(bin, "export", "-q", "--jobs", "1", "-f", mapping, "-o", out, "--cache", cache)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until one layer is complete and another is partway: layers are
	// written once, into the unfinished bundle beside the output (sparse
	// until written), which the cache notes; count its allocated bytes.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatal("the export never got partway through a second layer")
		}
		notes, _ := os.ReadDir(filepath.Join(cache, "partial"))
		if len(notes) > 0 && allocatedTemp(dir) > layer+layer/4 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a killed export left a bundle at -o")
	}

	sum := runExportJSON(t, bin, "--jobs", "1", "-f", mapping, "-o", out, "--cache", cache)
	if len(sum.Images) != 3 {
		t.Fatalf("rerun exported %d images", len(sum.Images))
	}
	// At least one whole layer came from the cache; at most the two layers
	// not yet complete were downloaded (plus small configs).
	if sum.BytesFromCache < layer || sum.BytesDownloaded > 2*layer+64<<10 {
		t.Errorf("rerun downloaded %d bytes, %d from the cache; want ≤ %d downloaded and ≥ %d cached", sum.BytesDownloaded, sum.BytesFromCache, 2*layer, layer)
	}
	if stdout, _, code := harness.Run(t, bin, "verify", out); code != 0 {
		t.Fatalf("verify: %s", stdout)
	}
	// The killed run's unfinished bundle served the rerun and is gone.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("unfinished bundle of the killed run left beside the output: %s", e.Name())
		}
	}
	if notes, _ := os.ReadDir(filepath.Join(cache, "partial")); len(notes) != 0 {
		t.Errorf("%d notes of unfinished bundles left in the cache", len(notes))
	}
}

// allocatedTemp is the disk space used by unfinished bundles in dir.
func allocatedTemp(dir string) int64 {
	entries, _ := os.ReadDir(dir)
	var n int64
	for _, e := range entries {
		if !strings.Contains(e.Name(), ".tmp-") {
			continue
		}
		if info, err := e.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
	}
	return n
}
