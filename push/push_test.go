package push_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/export"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/push"
	"github.com/ferry-airgap/ferry/test/harness"
)

// exportMapping selects, from harness.SmallSet: two Docker images of one
// repository, one OCI image, an OCI index (two tags) and a Docker manifest
// list. Every image shares the "os" base layer, so the layer is wanted in
// four repositories.
const exportMapping = `
tasks:
  - name: t
    source:
      registry: %s
    mappings:
      - from: spaceone/console
        to: spaceone/console
        tags: ['1.11.0', '1.11.5']
      - from: spaceone/plugin-a
        to: spaceone/plugin-a
        tags: ['1.4.1']
      - from: library/redis
        to: library/redis
        tags: ['7.2.4', 'latest']
      - from: library/alpine
        to: library/alpine
        tags: ['3.19']
`

var (
	bundleOnce sync.Once
	bundleDir  string
	bundleFile string
	bundleFix  []harness.Fixture
	bundleErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if bundleDir != "" {
		_ = os.RemoveAll(bundleDir)
	}
	os.Exit(code)
}

// testBundle exports the mapping above from an in-process source registry
// once, and returns a private copy of the bundle.
func testBundle(t *testing.T) (string, map[string]harness.Fixture) {
	t.Helper()
	bundleOnce.Do(func() {
		src := harness.StartInProcess(t)
		bundleFix = harness.Seed(t, src, "", harness.SmallSet())
		bundleDir, bundleErr = os.MkdirTemp("", "ferry-push-test-")
		if bundleErr != nil {
			return
		}
		m := filepath.Join(bundleDir, "m.yaml")
		if bundleErr = os.WriteFile(m, fmt.Appendf(nil, exportMapping, src.Host), 0o600); bundleErr != nil {
			return
		}
		var client *registry.Client
		var kc *registry.Keychain
		if client, bundleErr = registry.New(registry.Options{}); bundleErr != nil {
			return
		}
		if kc, bundleErr = registry.NewKeychain(""); bundleErr != nil {
			return
		}
		bundleFile = filepath.Join(bundleDir, "bundle.tar")
		_, bundleErr = export.Run(context.Background(), export.Options{Files: []string{m}, Output: bundleFile, Client: client, Keychain: kc,
			Progress: bundle.ProgressFunc(func(bundle.Event) {})})
	})
	if bundleErr != nil {
		t.Fatalf("making the test bundle: %v", bundleErr)
	}
	b, err := os.ReadFile(bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bundle.tar")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	fix := map[string]harness.Fixture{}
	for _, f := range bundleFix {
		fix[f.Repo+":"+f.Tag] = f
	}
	return p, fix
}

// req is one request the target saw, in arrival order.
type req struct {
	Method, Path, Query string
	Status              int
	Body                int64 // request body bytes the target read
}

// target is go-containerregistry's in-process registry behind a small
// layer that keeps blobs per repository (the in-process registry shares
// them across repositories) and implements cross-repository mounts, as
// distribution does. Every request is recorded in order.
type target struct {
	srv  *httptest.Server
	host string

	mu      sync.Mutex
	reqs    []req
	present map[string]bool // repo@digest
	// refuse, when set, answers a request with its status instead (0 =
	// serve it).
	refuse func(r *http.Request) int
}

func newTarget(t *testing.T) *target {
	t.Helper()
	tg := &target{present: map[string]bool{}}
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repo, kind, ref := split(r.URL.Path)
		sw := &statusWriter{ResponseWriter: w, status: 200}
		query := r.URL.RawQuery // as sent (a mount may be turned into a plain POST below)
		body := &countingBody{ReadCloser: r.Body}
		r.Body = body
		defer func() {
			tg.mu.Lock()
			tg.reqs = append(tg.reqs, req{r.Method, r.URL.Path, query, sw.status, body.n})
			tg.mu.Unlock()
		}()
		tg.mu.Lock()
		refuse := tg.refuse
		tg.mu.Unlock()
		if refuse != nil {
			if code := refuse(r); code != 0 {
				sw.WriteHeader(code)
				return
			}
		}
		switch {
		case kind == "blobs" && (r.Method == http.MethodHead || r.Method == http.MethodGet):
			if !tg.has(repo, ref) {
				sw.WriteHeader(http.StatusNotFound)
				return
			}
		case kind == "uploads" && r.Method == http.MethodPost && r.URL.Query().Get("mount") != "":
			d, from := r.URL.Query().Get("mount"), r.URL.Query().Get("from")
			if tg.has(from, d) {
				tg.mark(repo, d)
				w.Header().Set("Location", "/v2/"+repo+"/blobs/"+d)
				w.Header().Set("Docker-Content-Digest", d)
				sw.WriteHeader(http.StatusCreated)
				return
			}
			// Not in from: open a plain upload (202), as distribution does.
			r.URL.RawQuery = ""
		}
		h.ServeHTTP(sw, r)
		if kind == "uploads" && r.Method == http.MethodPut && sw.status == http.StatusCreated {
			tg.mark(repo, r.URL.Query().Get("digest"))
		}
	}))
	t.Cleanup(tg.srv.Close)
	tg.host = strings.TrimPrefix(tg.srv.URL, "http://")
	return tg
}

// countingBody counts the bytes a handler reads from a request body.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

func (tg *target) has(repo, d string) bool {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return tg.present[repo+"@"+d]
}

func (tg *target) mark(repo, d string) {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	tg.present[repo+"@"+d] = true
}

func (tg *target) requests() []req {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]req(nil), tg.reqs...)
}

func (tg *target) reset() {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	tg.reqs = nil
}

// split parses /v2/REPO/{blobs,manifests}/REF and /v2/REPO/blobs/uploads/...
func split(p string) (repo, kind, ref string) {
	p = strings.TrimPrefix(p, "/v2/")
	if i := strings.Index(p, "/blobs/uploads"); i >= 0 {
		return p[:i], "uploads", strings.TrimPrefix(p[i+len("/blobs/uploads"):], "/")
	}
	for _, k := range []string{"blobs", "manifests"} {
		if i := strings.Index(p, "/"+k+"/"); i >= 0 {
			return p[:i], k, p[i+len(k)+2:]
		}
	}
	return "", "", ""
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func run(t *testing.T, bundlePath, to string, mod func(*push.Options)) (*push.Summary, error) {
	t.Helper()
	client, err := registry.New(registry.Options{Retry: registry.RetryPolicy{Attempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := registry.NewKeychain("")
	if err != nil {
		t.Fatal(err)
	}
	o := push.Options{Bundle: bundlePath, To: to, Jobs: 4, Client: client, Keychain: kc}
	if mod != nil {
		mod(&o)
	}
	return push.Run(context.Background(), o)
}

// images reads the bundle's images and trees.
func trees(t *testing.T, path string) (map[string]*bundle.Node, []bundle.Image) {
	t.Helper()
	r, err := bundle.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out := map[string]*bundle.Node{}
	for _, im := range r.Record().Images {
		h, _ := v1.NewHash(im.Digest)
		n, err := r.Tree(h)
		if err != nil {
			t.Fatal(err)
		}
		out[im.Digest] = n
	}
	return out, r.Record().Images
}

func isManifest(n *bundle.Node) bool { return oci.KindOf(n.MediaType) != oci.KindUnknown }

func TestPushOrderTagsLast(t *testing.T) {
	path, _ := testBundle(t)
	tg := newTarget(t)
	sum, err := run(t, path, tg.host+"/mirror", nil)
	if err != nil {
		t.Fatalf("push: %v\n%+v", err, sum)
	}
	reqs := tg.requests()
	pos := func(method, path string) int {
		for i, r := range reqs {
			if r.Method == method && r.Path == path && r.Status < 300 {
				return i
			}
		}
		return -1
	}
	// The first blob completion or mount in a repository, by repo@digest.
	blobAt := map[string]int{}
	for i, r := range reqs {
		repo, kind, ref := split(r.Path)
		switch {
		case kind == "uploads" && r.Method == http.MethodPut && r.Status == 201:
			d := strings.TrimPrefix(r.Query, "digest=")
			d = strings.ReplaceAll(d, "%3A", ":")
			if i2 := strings.IndexByte(d, '&'); i2 >= 0 {
				d = d[:i2]
			}
			blobAt[repo+"@"+d] = i
		case kind == "uploads" && r.Method == http.MethodPost && r.Status == 201:
			blobAt[repo+"@"+strings.ReplaceAll(strings.Split(strings.TrimPrefix(r.Query, "from="), "&mount=")[1], "%3A", ":")] = i
		case kind == "blobs" && r.Method == http.MethodHead && r.Status == 200:
			if _, ok := blobAt[repo+"@"+ref]; !ok {
				blobAt[repo+"@"+ref] = i
			}
		}
	}
	ts, recs := trees(t, path)
	lastManifestPut := map[string]int{}
	for i, r := range reqs {
		if _, kind, _ := split(r.Path); kind == "manifests" && r.Method == http.MethodPut {
			lastManifestPut[r.Path] = i
		}
	}
	for _, rec := range recs {
		repo := "mirror/" + rec.Target
		root := ts[rec.Digest]
		// The image's own manifest goes in once, with its first tag.
		rootAt := pos(http.MethodPut, "/v2/"+repo+"/manifests/"+rec.Tags[0])
		if rootAt < 0 {
			t.Fatalf("%s: manifest %s never PUT by its tag %s", repo, root.Digest, rec.Tags[0])
		}
		if at := pos(http.MethodPut, "/v2/"+repo+"/manifests/"+root.Digest.String()); at >= 0 {
			t.Errorf("%s: tagged manifest %s also PUT by digest (request %d)", repo, root.Digest, at)
		}
		_ = root.Walk(func(n *bundle.Node) error {
			if n == root {
				return nil
			}
			if isManifest(n) {
				at := pos(http.MethodPut, "/v2/"+repo+"/manifests/"+n.Digest.String())
				if at < 0 || at > rootAt {
					t.Errorf("%s: child manifest %s at %d, index at %d", repo, n.Digest, at, rootAt)
				}
				return nil
			}
			at, ok := blobAt[repo+"@"+n.Digest.String()]
			if !ok {
				t.Errorf("%s: blob %s never reached the repository", repo, n.Digest)
			}
			// Every blob is in before the manifest that references it
			// (and so before the index above it).
			if at > rootAt {
				t.Errorf("%s: blob %s at request %d, after the manifest at %d", repo, n.Digest, at, rootAt)
			}
			return nil
		})
		// Tags last: after the image's own manifest and every child of it.
		var own []string
		_ = root.Walk(func(n *bundle.Node) error {
			if isManifest(n) {
				own = append(own, "/v2/"+repo+"/manifests/"+n.Digest.String())
			}
			return nil
		})
		for _, tag := range rec.Tags {
			at := pos(http.MethodPut, "/v2/"+repo+"/manifests/"+tag)
			if at < 0 {
				t.Fatalf("%s:%s never tagged", repo, tag)
			}
			for _, p := range own {
				if i := lastManifestPut[p]; i > at {
					t.Errorf("%s:%s tagged at %d before %s at %d", repo, tag, at, p, i)
				}
			}
		}
	}
	if sum.Pushed != len(recs) || sum.Failed != 0 || sum.UpToDate != 0 {
		t.Errorf("summary: pushed %d failed %d up to date %d, want %d/0/0", sum.Pushed, sum.Failed, sum.UpToDate, len(recs))
	}
}

func TestPushDedupAndMount(t *testing.T) {
	path, _ := testBundle(t)
	tg := newTarget(t)
	sum, err := run(t, path, tg.host, nil)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	ts, recs := trees(t, path)
	// repos per blob digest, and the unique bytes.
	repos := map[v1.Hash]map[string]bool{}
	sizes := map[v1.Hash]int64{}
	for _, rec := range recs {
		_ = ts[rec.Digest].Walk(func(n *bundle.Node) error {
			if !isManifest(n) {
				if repos[n.Digest] == nil {
					repos[n.Digest] = map[string]bool{}
				}
				repos[n.Digest][rec.Target] = true
				sizes[n.Digest] = n.Size
			}
			return nil
		})
	}
	puts := map[string]int{}
	mounts := map[string]int{}
	for _, r := range tg.requests() {
		repo, kind, _ := split(r.Path)
		if kind == "uploads" && r.Method == http.MethodPut {
			d := strings.ReplaceAll(strings.TrimPrefix(r.Query, "digest="), "%3A", ":")
			puts[d]++
		}
		// Cross-repository mounts only: a mount from the repository itself
		// is how import asks whether a blob is there before uploading it.
		if q, _ := url.ParseQuery(r.Query); kind == "uploads" && r.Method == http.MethodPost && q.Get("mount") != "" && q.Get("from") != repo {
			mounts[repo]++
		}
	}
	var wantMounts int
	var unique int64
	for d, rs := range repos {
		if puts[d.String()] != 1 {
			t.Errorf("blob %s (in %d repositories) uploaded %d times, want once", d, len(rs), puts[d.String()])
		}
		wantMounts += len(rs) - 1
		unique += sizes[d]
	}
	var totalMounts int
	for _, n := range mounts {
		totalMounts += n
	}
	if wantMounts == 0 {
		t.Fatal("fixture has no blob shared across repositories")
	}
	if totalMounts != wantMounts || sum.BlobsMounted != wantMounts {
		t.Errorf("mount POSTs %d, summary mounted %d, want %d", totalMounts, sum.BlobsMounted, wantMounts)
	}
	if sum.BytesUploaded != unique {
		t.Errorf("uploaded %d bytes, unique blob bytes are %d", sum.BytesUploaded, unique)
	}
}

func TestPushSecondRunUploadsNothing(t *testing.T) {
	path, _ := testBundle(t)
	tg := newTarget(t)
	first, err := run(t, path, tg.host+"/p", nil)
	if err != nil {
		t.Fatal(err)
	}
	tg.reset()
	sum, err := run(t, path, tg.host+"/p", nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.BytesUploaded != 0 || sum.BlobsUploaded != 0 || sum.BlobsMounted != 0 {
		t.Errorf("second run uploaded %d bytes (%d blobs), mounted %d", sum.BytesUploaded, sum.BlobsUploaded, sum.BlobsMounted)
	}
	if sum.UpToDate != len(sum.Images) || sum.Pushed != 0 {
		t.Errorf("second run: %d up to date, %d pushed of %d", sum.UpToDate, sum.Pushed, len(sum.Images))
	}
	if sum.BytesSkipped != first.BytesUploaded+first.BytesMounted {
		t.Errorf("second run skipped %d bytes; the first put %d there", sum.BytesSkipped, first.BytesUploaded+first.BytesMounted)
	}
	for _, r := range tg.requests() {
		if r.Method != http.MethodHead && r.Method != http.MethodGet {
			t.Errorf("second run sent %s %s", r.Method, r.Path)
		}
	}
}

func TestPushDryRun(t *testing.T) {
	path, _ := testBundle(t)
	tg := newTarget(t)
	sum, err := run(t, path, tg.host, func(o *push.Options) { o.DryRun = true })
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range sum.Images {
		if im.Status != push.StatusNew {
			t.Errorf("%s: %s, want new", im.Repository, im.Status)
		}
	}
	if sum.BytesToUpload == 0 || sum.BytesUploaded != 0 {
		t.Errorf("dry run: to upload %d, uploaded %d", sum.BytesToUpload, sum.BytesUploaded)
	}
	for _, r := range tg.requests() {
		if r.Method != http.MethodHead && r.Method != http.MethodGet {
			t.Errorf("dry run sent %s %s", r.Method, r.Path)
		}
	}
	// Push for real, then move one tag elsewhere: the dry run says so.
	real, err := run(t, path, tg.host, nil)
	if err != nil {
		t.Fatal(err)
	}
	if real.BytesUploaded != sum.BytesToUpload {
		t.Errorf("dry run predicted %d bytes, the push uploaded %d", sum.BytesToUpload, real.BytesUploaded)
	}
	_, recs := trees(t, path)
	var console, plugin bundle.Image
	for _, rec := range recs {
		switch rec.Target {
		case "spaceone/console":
			if len(rec.Tags) > 0 && rec.Tags[0] == "1.11.0" {
				console = rec
			}
		case "spaceone/plugin-a":
			plugin = rec
		}
	}
	// Tag spaceone/console:1.11.0 with the 1.11.5 manifest.
	r, _ := bundle.Open(path)
	var other bundle.Image
	for _, rec := range recs {
		if rec.Target == "spaceone/console" && rec.Digest != console.Digest {
			other = rec
		}
	}
	h, _ := v1.NewHash(other.Digest)
	data, mt, err := r.Manifest(h)
	_ = r.Close()
	if err != nil {
		t.Fatal(err)
	}
	putManifest(t, tg, "spaceone/console", "1.11.0", data, mt)
	sum, err = run(t, path, tg.host, func(o *push.Options) { o.DryRun = true })
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range sum.Images {
		switch {
		case im.Digest == console.Digest:
			if im.Status != push.StatusMoveTag || im.Tags[0].Previous != other.Digest {
				t.Errorf("moved tag: %+v", im)
			}
		case im.Digest == plugin.Digest:
			if im.Status != push.StatusUpToDate {
				t.Errorf("plugin: %s, want up to date", im.Status)
			}
		}
	}
	if sum.BytesToUpload != 0 {
		t.Errorf("dry run after push: %d bytes to upload", sum.BytesToUpload)
	}
}

// TestPushImagesDoNotWaitForEachOther: an image's manifests and tags go
// as soon as its own blobs are in place. While the upload of one image's
// layer is held, other images are completed and tagged; the held image
// is tagged only after its layer arrived.
func TestPushImagesDoNotWaitForEachOther(t *testing.T) {
	path, _ := testBundle(t)
	d, held := uniqueLayer(t, path)
	tg := newTarget(t)
	tagged := make(chan struct{})
	var once sync.Once
	tg.refuse = func(r *http.Request) int {
		_, kind, _ := split(r.URL.Path)
		switch {
		case kind == "manifests" && r.Method == http.MethodPut:
			once.Do(func() { close(tagged) })
		case kind == "uploads" && r.Method == http.MethodPut && r.URL.Query().Get("digest") == d.String():
			select {
			case <-tagged:
			case <-time.After(10 * time.Second):
				t.Errorf("no manifest was put while the upload of %s (image %s) was held", d, held.Target)
			}
		}
		return 0
	}
	sum, err := run(t, path, tg.host+"/m", nil)
	if err != nil {
		t.Fatalf("push: %v\n%+v", err, sum)
	}
	uploaded := false
	for _, r := range tg.requests() {
		repo, kind, ref := split(r.Path)
		switch {
		case kind == "uploads" && r.Method == http.MethodPut && strings.Contains(r.Query, d.Hex):
			uploaded = true
		case kind == "manifests" && r.Method == http.MethodPut && repo == "m/"+held.Target && slices.Contains(held.Tags, ref) && !uploaded:
			t.Errorf("%s %s before its layer %s was uploaded", r.Method, r.Path, d)
		}
	}
	if !uploaded {
		t.Errorf("layer %s was not uploaded", d)
	}
}
