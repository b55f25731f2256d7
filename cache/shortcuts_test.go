package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/registry"
)

// heldUpstream answers blob GETs for repositories in deny only once
// release is closed, and then with err; arrived is closed when the first
// such GET arrives. Everything else goes to the fake.
type heldUpstream struct {
	*fakeUpstream
	deny    map[string]bool // nil: every repository
	err     error
	arrived chan struct{}
	release chan struct{}
	once    sync.Once
}

func newHeld(f *fakeUpstream, err error, deny ...string) *heldUpstream {
	h := &heldUpstream{fakeUpstream: f, err: err, arrived: make(chan struct{}), release: make(chan struct{})}
	if len(deny) > 0 {
		h.deny = map[string]bool{}
		for _, r := range deny {
			h.deny[r] = true
		}
	}
	return h
}

func (h *heldUpstream) Blob(ctx context.Context, repo string, d v1.Hash, head bool) (io.ReadCloser, int64, error) {
	if head || (h.deny != nil && !h.deny[repo]) {
		return h.fakeUpstream.Blob(ctx, repo, d, head)
	}
	h.once.Do(func() { close(h.arrived) })
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	return nil, 0, h.err
}

type result struct {
	status int
	body   []byte
	err    error
}

// getAsync GETs path from the cache in the background.
func (tc *testCache) getAsync(path string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		resp, err := http.Get(tc.srv.URL + path)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		ch <- result{resp.StatusCode, b, err}
	}()
	return ch
}

// waitOrGiveUp waits for ch; the timeout only keeps a broken build from
// hanging the test, it asserts nothing about speed.
func waitOrGiveUp(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

// Premise broken: "a download of digest D answers every request for D".
// Upstream a.test lacks the blob (404, held until b's request is in);
// b.test has it. The request for b must not get a's 404.
func TestDownloadsKeyedByUpstreamFailure(t *testing.T) {
	fa, fb := newFake(), newFake()
	fa.image("team/app", "v1", 4096)
	_, blobs := fb.image("team/app", "v1", 4096)
	a := newHeld(fa, fmt.Errorf("blob: %w", ErrNotFound))
	tc := newTestCache(t, 1<<30, func(o *Options) { o.Upstreams = map[string]Upstream{"a.test": a, "b.test": fb} })
	path := "/team/app/blobs/" + blobs[1].String()
	ra := tc.getAsync("/v2/a.test" + path)
	if !waitOrGiveUp(a.arrived) {
		t.Fatal("upstream a was never asked")
	}
	rb := tc.getAsync("/v2/b.test" + path)
	var got result
	select {
	case got = <-rb:
	case <-time.After(10 * time.Second): // only reached when b joined a's download
	}
	close(a.release)
	if got.status == 0 {
		got = <-rb
	}
	if got.err != nil || got.status != 200 || hashOf(got.body) != blobs[1] {
		t.Errorf("b.test while a.test fails: status %d, err %v, body %.200s; want the blob", got.status, got.err, got.body)
	}
	if r := <-ra; r.status != 404 {
		t.Errorf("a.test: status %d, want 404: %s", r.status, r.body)
	}
}

// Premise broken: "an upstream that stalls holds only its own clients".
// a.test sends half the blob, then nothing; b.test must still answer.
func TestDownloadsKeyedByUpstreamStall(t *testing.T) {
	fa, fb := newFake(), newFake()
	fa.image("team/app", "v1", 1<<20)
	_, blobs := fb.image("team/app", "v1", 1<<20)
	fa.gate = make(chan struct{}) // never opened
	tc := newTestCache(t, 1<<30, func(o *Options) {
		o.Upstreams = map[string]Upstream{"a.test": fa, "b.test": fb}
		o.StallTimeout = 3 * time.Second
	})
	path := "/team/app/blobs/" + blobs[1].String()
	resp, err := http.Get(tc.srv.URL + "/v2/a.test" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil { // a's download runs
		t.Fatal(err)
	}
	status, _, body := tc.get(t, "GET", "/v2/b.test"+path)
	if status != 200 || hashOf(body) != blobs[1] {
		t.Errorf("b.test while a.test stalls: status %d, digest %s; want the blob", status, hashOf(body))
	}
	if n := fb.count("GET blob"); n != 1 {
		t.Errorf("b.test saw %d blob GETs, want 1", n)
	}
}

// Premise broken: "every repository of one upstream grants a blob". The
// upstream refuses the blob in other/x (held until team/app joined that
// download); team/app must get it, by a download of its own.
func TestFailedDownloadOfAnotherRepoIsRetried(t *testing.T) {
	f := newFake()
	_, blobs := f.image("team/app", "v1", 4096)
	h := newHeld(f, fmt.Errorf("blob: %w", ErrNotFound), "other/x")
	tc := newTestCache(t, 1<<30, func(o *Options) { o.Upstreams = map[string]Upstream{"src.test": h} })
	rx := tc.getAsync("/v2/src.test/other/x/blobs/" + blobs[1].String())
	if !waitOrGiveUp(h.arrived) {
		t.Fatal("upstream never asked")
	}
	ra := tc.getAsync("/v2/src.test/team/app/blobs/" + blobs[1].String())
	// team/app joins the held download of other/x: nothing tells when it
	// has, so give it a moment; either way the answer must be the blob.
	time.Sleep(200 * time.Millisecond)
	close(h.release)
	if r := <-ra; r.err != nil || r.status != 200 || hashOf(r.body) != blobs[1] {
		t.Errorf("team/app after other/x was refused: status %d err %v body %.200s; want the blob", r.status, r.err, r.body)
	}
	if r := <-rx; r.status != 404 {
		t.Errorf("other/x: status %d, want 404", r.status)
	}
}

// Premise: one process per store directory (it empties tmp/ at start).
func TestSecondCacheOnOneDirRefused(t *testing.T) {
	tc := newTestCache(t, 1<<30)
	_, err := New(tc.o)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), tc.o.Dir) ||
		!strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second cache on %s: %v, want ErrLocked naming the dir and this process", tc.o.Dir, err)
	}
	_, blobs := tc.up.image("team/app", "v1", 4096)
	tc.pull(t, "team/app", "v1", blobs) // the first one works on
	tc.Close()
	c2, err := New(tc.o)
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	c2.Close()
}

func TestStoreDirThatIsAFileIsAConfigError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := New(Options{Dir: p, MaxSize: 1 << 20, Upstreams: map[string]Upstream{"src.test": newFake()}})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("dir is a file: %v, want ErrConfig", err)
	}
}

func listFiles(t *testing.T, dir string) (n int, size int64) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(dir, "tags"), func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() && filepath.Base(filepath.Dir(p)) == "_lists" {
			info, _ := de.Info()
			n, size = n+1, size+info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, size
}

// Every distinct page query is a page of its own: 300 of them must leave
// a bounded number of files, all counted in the store's size, evicted by
// the cleaner, and a page whose file went away is not served.
func TestTagListPagesCountedAndBounded(t *testing.T) {
	tc := newTestCache(t, 1<<30)
	tc.up.image("team/app", "v1", 10)
	for i := range 300 {
		if status, _, _ := tc.get(t, "GET", "/v2/src.test/team/app/tags/list?n="+strconv.Itoa(i+1)); status != 200 {
			t.Fatalf("query %d: status %d", i, status)
		}
		tc.clock.Advance(time.Millisecond)
	}
	n, size := listFiles(t, tc.o.Dir)
	if n > maxListsPerRepo || n == 0 {
		t.Errorf("300 queries left %d list files, want 1..%d", n, maxListsPerRepo)
	}
	if tc.Size() != size {
		t.Errorf("store size %d, want the %d bytes of its list pages", tc.Size(), size)
	}
	// The most recent page is kept and served when the upstream is down.
	tc.up.down = true
	if status, h, _ := tc.get(t, "GET", "/v2/src.test/team/app/tags/list?n=300"); status != 200 || h.Get(CacheHeader) != "stale" {
		t.Errorf("stored page, upstream down: %d %s, want a stale 200", status, h.Get(CacheHeader))
	}
	// Premise broken: the index says a page is stored; its file is gone.
	if err := os.Remove(tc.store.listPath("src.test", "team/app", "n=299")); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := tc.get(t, "GET", "/v2/src.test/team/app/tags/list?n=299"); status != 502 {
		t.Errorf("page file deleted, upstream down: status %d, want 502", status)
	}
	// A restart indexes the pages again, and the cleaner evicts them.
	tc.Close()
	o := tc.o
	o.MaxSize, o.Threshold = 1, -1
	c2, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if n2, size2 := listFiles(t, o.Dir); c2.Size() != size2 || n2 != n-1 {
		t.Errorf("after restart: size %d, %d files; want %d bytes, %d files", c2.Size(), n2, size2, n-1)
	}
	if r := c2.Clean(); r.Lists != n-1 {
		t.Errorf("cleaner evicted %+v, want %d pages", r, n-1)
	}
	if n3, _ := listFiles(t, o.Dir); n3 != 0 || c2.Size() != 0 {
		t.Errorf("after a pass to 1 byte: %d files, size %d", n3, c2.Size())
	}
}

func TestLongRepositoryNameIsNameInvalid(t *testing.T) {
	tc := newTestCache(t, 1<<30)
	long := strings.Repeat("a", 250) + "/" + strings.Repeat("b", 10)
	for _, p := range []string{"/manifests/v1", "/blobs/sha256:" + strings.Repeat("0", 64), "/tags/list"} {
		status, _, body := tc.get(t, "GET", "/v2/src.test/"+long+p)
		if status != 400 || !strings.Contains(string(body), "NAME_INVALID") {
			t.Errorf("%d-character name%s: %d %s, want 400 NAME_INVALID", len(long), p, status, body)
		}
	}
	if n := tc.up.count("GET manifest") + tc.up.count("GET blob") + tc.up.count("GET tags"); n != 0 {
		t.Errorf("the upstream was asked %d times", n)
	}
}

// urlUpstream fails every request with an error naming an internal URL.
type urlUpstream struct{ *fakeUpstream }

const internalURL = "https://10.20.30.40:5443/v2/team/app"

func (urlUpstream) Blob(context.Context, string, v1.Hash, bool) (io.ReadCloser, int64, error) {
	return nil, 0, &upstreamError{kind: ErrUnreachable, err: errors.New("GET " + internalURL + ": 503"), public: "the upstream could not be reached or kept failing"}
}

func (urlUpstream) Manifest(context.Context, string, string, bool) (*Manifest, error) {
	return nil, fmt.Errorf("GET %s/manifests/v1: %w", internalURL, ErrNotFound)
}

func (urlUpstream) Tags(context.Context, string, string) ([]byte, string, error) {
	return nil, "", errors.New("GET " + internalURL + "/tags/list: 400 weird")
}

func TestClientErrorsNameTheUpstreamNotItsURL(t *testing.T) {
	var log bytes.Buffer
	var mu sync.Mutex
	tc := newTestCache(t, 1<<30, func(o *Options) {
		o.Upstreams = map[string]Upstream{"src.test": urlUpstream{newFake()}}
		o.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &log}, nil))
	})
	d := hashOf([]byte("x")).String()
	for p, want := range map[string]int{"/blobs/" + d: 502, "/manifests/v1": 404, "/tags/list": 502, "/manifests/" + d: 404} {
		status, _, body := tc.get(t, "GET", "/v2/src.test/team/app"+p)
		if status != want || strings.Contains(string(body), "10.20.30.40") || !strings.Contains(string(body), `\"src.test\"`) {
			t.Errorf("%s: %d %s; want %d naming \"src.test\", not its URL", p, status, body, want)
		}
	}
	tc.requests.Wait()
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(log.String(), "10.20.30.40") {
		t.Errorf("the log lacks the upstream's URL:\n%s", log.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestPlainHTTPUpstreamOnlyOnLoopback(t *testing.T) {
	client, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := registry.NewKeychain("")
	if err != nil {
		t.Fatal(err)
	}
	for u, ok := range map[string]bool{
		"http://127.0.0.1:5000": true, "http://localhost:5000": true, "http://[::1]:5000": true, "http://127.0.0.2": true,
		"http://10.0.0.5:5000": false, "http://192.168.1.10": false, "http://harbor.corp": false, "HTTP://registry.example.com:80": false,
		"https://harbor.corp": true, "harbor.corp": true,
	} {
		_, err := NewRegistryUpstream(client, kc, u)
		if ok != (err == nil) || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("%s: %v, want accepted=%v (refusal: ErrConfig)", u, err, ok)
		}
	}
}

// The registry client's hint for a server that answers plain http names
// --plain-http, which the cache does not have.
func TestPlainHTTPHintFitsTheCache(t *testing.T) {
	tlsErr := &registry.TLSError{Registry: "10.0.0.5:5000", Err: errors.New("http: server gave HTTP response to HTTPS client")}
	err := classify(fmt.Errorf("GET team/app/blobs/x from 10.0.0.5:5000: %w", tlsErr))
	if strings.Contains(err.Error(), "--plain-http") || !strings.Contains(err.Error(), "http://") || !errors.Is(err, ErrUnreachable) {
		t.Errorf("classified: %v (unreachable %v); want a hint without --plain-http", err, errors.Is(err, ErrUnreachable))
	}
	if got := publicReason(err); !strings.Contains(got, "plain http") {
		t.Errorf("public reason %q", got)
	}
}

// damage breaks stored blob files the ways a disk, an operator or a lost
// write does: changed in place at the same size with the mtime put back,
// truncated, deleted.
func damage(t *testing.T, p string, how string) {
	t.Helper()
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	switch how {
	case "in place":
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, info.ModTime(), info.ModTime()); err != nil {
			t.Fatal(err)
		}
	case "truncated":
		if err := os.Truncate(p, info.Size()/2); err != nil {
			t.Fatal(err)
		}
	case "deleted":
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStoredBlobDamagedWhileStoppedIsFetchedAgain(t *testing.T) {
	tc := newTestCache(t, 1<<30)
	_, blobs := tc.up.image("team/app", "v1", 8192, 8192, 8192)
	tc.pull(t, "team/app", "v1", blobs)
	tc.Close()
	hows := []string{"in place", "truncated", "deleted"}
	for i, how := range hows {
		damage(t, tc.store.blobPath(blobs[i+1]), how)
	}
	c2, err := New(tc.o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c2)
	defer func() { srv.Close(); c2.Close() }()
	before := tc.up.count("GET blob")
	// A Range request on the blob changed in place gets the true bytes.
	req, _ := http.NewRequest("GET", srv.URL+"/v2/src.test/team/app/blobs/"+blobs[1].String(), nil)
	req.Header.Set("Range", "bytes=4090-4100")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := tc.up.blobs[blobs[1]][4090:4101]; resp.StatusCode == 206 && !bytes.Equal(b, want) ||
		resp.StatusCode == 200 && hashOf(b) != blobs[1] || resp.StatusCode != 200 && resp.StatusCode != 206 {
		t.Errorf("range of a blob changed in place: %d %x, want the true bytes", resp.StatusCode, b)
	}
	for i, how := range hows {
		resp, err := http.Get(srv.URL + "/v2/src.test/team/app/blobs/" + blobs[i+1].String())
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || hashOf(b) != blobs[i+1] {
			t.Errorf("blob %s: %d %v, digest %s; want the true blob", how, resp.StatusCode, err, hashOf(b))
		}
	}
	if n := tc.up.count("GET blob") - before; n != 3 {
		t.Errorf("%d upstream GETs for 3 damaged blobs, want 3", n)
	}
	// The undamaged config was hashed once and served from the store.
	if status, _, body := getFrom(t, srv.URL+"/v2/src.test/team/app/blobs/"+blobs[0].String()); status != 200 || hashOf(body) != blobs[0] {
		t.Errorf("undamaged blob: %d %s", status, hashOf(body))
	}
	if n := tc.up.count("GET blob") - before; n != 3 {
		t.Errorf("the undamaged blob was fetched again (%d upstream GETs)", n)
	}
}

func getFrom(t *testing.T, u string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func TestStoredBlobTruncatedWhileRunning(t *testing.T) {
	tc := newTestCache(t, 1<<30)
	_, blobs := tc.up.image("team/app", "v1", 8192)
	tc.pull(t, "team/app", "v1", blobs)
	damage(t, tc.store.blobPath(blobs[1]), "truncated")
	status, h, body := tc.get(t, "GET", "/v2/src.test/team/app/blobs/"+blobs[1].String())
	if status != 200 || hashOf(body) != blobs[1] || h.Get(CacheHeader) != "miss" {
		t.Errorf("truncated while running: %d %s %s, want the true blob fetched again", status, h.Get(CacheHeader), hashOf(body))
	}
}

func TestStoredManifestChangedInPlaceIsFetchedAgain(t *testing.T) {
	tc := newTestCache(t, 1<<30)
	md, blobs := tc.up.image("team/app", "v1", 100)
	tc.pull(t, "team/app", "v1", blobs)
	damage(t, tc.store.manifestPath(md), "in place")
	before := tc.up.count("GET manifest")
	status, _, body := tc.get(t, "GET", "/v2/src.test/team/app/manifests/"+md.String())
	if status != 200 || hashOf(body) != md || tc.up.count("GET manifest") != before+1 {
		t.Errorf("manifest changed in place: %d, digest %s; want %s fetched again", status, hashOf(body), md)
	}
}
