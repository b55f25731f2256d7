package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func hashOf(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// fakeUpstream is an in-memory registry that counts requests. A blob GET
// waits on gate (when set) before sending its body.
type fakeUpstream struct {
	mu        sync.Mutex
	manifests map[string][]byte // "repo:tag" and "repo@digest"
	blobs     map[v1.Hash][]byte
	corrupt   map[v1.Hash]bool // serve wrong bytes
	down      bool
	gate      chan struct{}
	counts    map[string]int // "GET blob", "HEAD manifest", ...
}

func newFake() *fakeUpstream {
	return &fakeUpstream{manifests: map[string][]byte{}, blobs: map[v1.Hash][]byte{}, corrupt: map[v1.Hash]bool{}, counts: map[string]int{}}
}

func (f *fakeUpstream) count(k string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[k]
}

// image adds an image of layers with the given sizes under repo:tag and
// returns its manifest digest and blob digests (config first).
func (f *fakeUpstream) image(repo, tag string, sizes ...int) (v1.Hash, []v1.Hash) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cfg := []byte(fmt.Sprintf(`{"repo":%q,"tag":%q}`, repo, tag))
	cd := hashOf(cfg)
	f.blobs[cd] = cfg
	digests := []v1.Hash{cd}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	m := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{2, "application/vnd.oci.image.manifest.v1+json", desc{"application/vnd.oci.image.config.v1+json", cd.String(), len(cfg)}, nil}
	for i, n := range sizes {
		b := bytes.Repeat([]byte{byte(i + 1)}, n)
		copy(b, repo+tag) // unique per image
		d := hashOf(b)
		f.blobs[d] = b
		digests = append(digests, d)
		m.Layers = append(m.Layers, desc{"application/vnd.oci.image.layer.v1.tar", d.String(), n})
	}
	body, _ := json.Marshal(m)
	md := hashOf(body)
	f.manifests[repo+":"+tag] = body
	f.manifests[repo+"@"+md.String()] = body
	return md, digests
}

func (f *fakeUpstream) Manifest(ctx context.Context, repo, ref string, head bool) (*Manifest, error) {
	f.mu.Lock()
	method := map[bool]string{true: "HEAD", false: "GET"}[head]
	f.counts[method+" manifest"]++
	down := f.down
	sep := ":"
	if _, err := v1.NewHash(ref); err == nil {
		sep = "@"
	}
	body, ok := f.manifests[repo+sep+ref]
	f.mu.Unlock()
	if down {
		return nil, fmt.Errorf("%w: connection refused", ErrUnreachable)
	}
	if !ok {
		return nil, fmt.Errorf("manifest %s:%s: %w", repo, ref, ErrNotFound)
	}
	m := &Manifest{Digest: hashOf(body), MediaType: "application/vnd.oci.image.manifest.v1+json"}
	if !head {
		m.Body = body
	}
	return m, nil
}

func (f *fakeUpstream) Blob(ctx context.Context, repo string, d v1.Hash, head bool) (io.ReadCloser, int64, error) {
	f.mu.Lock()
	method := map[bool]string{true: "HEAD", false: "GET"}[head]
	f.counts[method+" blob"]++
	b, ok := f.blobs[d]
	down, gate, bad := f.down, f.gate, f.corrupt[d]
	f.mu.Unlock()
	if down {
		return nil, 0, fmt.Errorf("%w: connection refused", ErrUnreachable)
	}
	if !ok {
		return nil, 0, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	if head {
		return nil, int64(len(b)), nil
	}
	if bad {
		b = bytes.Repeat([]byte{'x'}, len(b))
	}
	if gate != nil {
		return &gatedReader{ctx: ctx, gate: gate, r: bytes.NewReader(b)}, int64(len(b)), nil
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

// gatedReader sends the first half of its bytes, then waits for gate.
type gatedReader struct {
	ctx    context.Context
	gate   chan struct{}
	r      *bytes.Reader
	passed bool
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if !g.passed && g.r.Len() <= int(g.r.Size())/2 {
		select {
		case <-g.gate:
		case <-g.ctx.Done():
			return 0, g.ctx.Err() // as an HTTP body does
		}
		g.passed = true
	}
	if !g.passed && len(p) > g.r.Len()-int(g.r.Size())/2 {
		p = p[:g.r.Len()-int(g.r.Size())/2]
	}
	return g.r.Read(p)
}

func (g *gatedReader) Close() error { return nil }

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type testCache struct {
	*Cache
	up    *fakeUpstream
	clock *fakeClock
	srv   *httptest.Server
	// requests in the handler: a client has its body a moment before the
	// handler returns and releases the blob.
	requests sync.WaitGroup
}

func newTestCache(t *testing.T, maxSize int64, mod ...func(*Options)) *testCache {
	t.Helper()
	up := newFake()
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o := Options{Dir: t.TempDir(), MaxSize: maxSize, Upstreams: map[string]Upstream{"src.test": up}, Now: clock.Now}
	for _, m := range mod {
		m(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCache{Cache: c, up: up, clock: clock}
	tc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tc.requests.Add(1)
		defer tc.requests.Done()
		c.ServeHTTP(w, r)
	}))
	srv := tc.srv
	t.Cleanup(func() { srv.Close(); c.Close() })
	return tc
}

// get fetches path from the cache and returns status, headers and body.
func (tc *testCache) get(t *testing.T, method, path string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, tc.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, b
}

// pull GETs repo:tag's manifest and every blob, checking digests.
func (tc *testCache) pull(t *testing.T, repo, tag string, blobs []v1.Hash) {
	t.Helper()
	status, _, _ := tc.get(t, "GET", "/v2/src.test/"+repo+"/manifests/"+tag)
	if status != 200 {
		t.Fatalf("manifest %s:%s: status %d", repo, tag, status)
	}
	for _, d := range blobs {
		tc.clock.Advance(time.Millisecond)
		status, _, b := tc.get(t, "GET", "/v2/src.test/"+repo+"/blobs/"+d.String())
		if status != 200 || hashOf(b) != d {
			t.Fatalf("blob %s of %s:%s: status %d, digest %s", d, repo, tag, status, hashOf(b))
		}
	}
	tc.clock.Advance(time.Millisecond)
	// The handlers' and downloads' bookkeeping ends just after the last byte.
	tc.requests.Wait()
	tc.wg.Wait()
}

// Tags lists repo's tags, two per page, with a next-page query.
func (f *fakeUpstream) Tags(ctx context.Context, repo, query string) ([]byte, string, error) {
	f.mu.Lock()
	f.counts["GET tags"]++
	var tags []string
	for k := range f.manifests {
		if r, tag, ok := strings.Cut(k, ":"); ok && r == repo {
			tags = append(tags, tag)
		}
	}
	down := f.down
	f.mu.Unlock()
	if down {
		return nil, "", fmt.Errorf("%w: connection refused", ErrUnreachable)
	}
	if len(tags) == 0 {
		return nil, "", fmt.Errorf("repository %s: %w", repo, ErrNotFound)
	}
	sort.Strings(tags)
	q, _ := url.ParseQuery(query)
	start := sort.SearchStrings(tags, q.Get("last"))
	if q.Get("last") != "" {
		start++
	}
	end, next := min(start+2, len(tags)), ""
	if end < len(tags) {
		next = "n=2&last=" + url.QueryEscape(tags[end-1])
	}
	b, _ := json.Marshal(map[string]any{"name": repo, "tags": tags[start:end]})
	return b, next, nil
}
