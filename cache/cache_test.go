package cache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-airgap/ferry/serve"
)

func TestPullThroughThenFromStore(t *testing.T) { forEachStore(t, testPullThroughThenFromStore) }

func testPullThroughThenFromStore(t *testing.T, store func(*Options)) {
	tc := newTestCache(t, 1<<30, store)
	md, blobs := tc.up.image("team/app", "v1", 1000, 2000)
	tc.pull(t, "team/app", "v1", blobs)
	if got := tc.up.count("GET blob"); got != len(blobs) {
		t.Fatalf("first pull: %d upstream blob GETs, want %d", got, len(blobs))
	}
	status, h, body := tc.get(t, "GET", "/v2/src.test/team/app/manifests/v1")
	if status != 200 || hashOf(body) != md || h.Get("Docker-Content-Digest") != md.String() || h.Get(CacheHeader) != "hit" {
		t.Fatalf("second manifest GET: %d %s %v, want 200 hit %s", status, h.Get(CacheHeader), hashOf(body), md)
	}
	tc.pull(t, "team/app", "v1", blobs)
	if got := tc.up.count("GET blob"); got != len(blobs) {
		t.Errorf("second pull made %d more upstream blob GETs, want 0", got-len(blobs))
	}
	if got := tc.up.count("GET manifest") + tc.up.count("HEAD manifest"); got != 1 {
		t.Errorf("within the TTL: %d upstream manifest requests, want 1", got)
	}
	// By digest, under another upstream path: the blob store is shared.
	status, h, _ = tc.get(t, "HEAD", "/v2/src.test/other/blobs/"+blobs[1].String())
	if status != 200 || h.Get("Content-Length") != "1000" || h.Get(CacheHeader) != "hit" {
		t.Errorf("HEAD stored blob: %d, length %s, %s", status, h.Get("Content-Length"), h.Get(CacheHeader))
	}
	m := tc.Metrics().Snapshot()
	if m.BytesUpstream < 3000 || m.Hits == 0 || m.Misses == 0 {
		t.Errorf("metrics %+v: want upstream bytes ≥ 3000, hits and misses", m)
	}
}

func TestContainerdNamespaceQuery(t *testing.T) {
	tc := newTestCache(t, 1<<30)
	md, _ := tc.up.image("library/redis", "7", 10)
	status, h, body := tc.get(t, "GET", "/v2/library/redis/manifests/7?ns=src.test")
	if status != 200 || hashOf(body) != md || h.Get(UpstreamHeader) != "src.test" {
		t.Fatalf("?ns=: %d %s, upstream %q", status, body, h.Get(UpstreamHeader))
	}
	status, _, body = tc.get(t, "GET", "/v2/library/redis/manifests/7?ns=elsewhere.io")
	if status != 404 || !strings.Contains(string(body), "NAME_UNKNOWN") {
		t.Errorf("unknown ns: %d %s, want 404 NAME_UNKNOWN", status, body)
	}
	status, _, _ = tc.get(t, "GET", "/v2/src.test/Bad..Name/manifests/7")
	if status != 400 {
		t.Errorf("bad repository name: status %d, want 400", status)
	}
	status, _, _ = tc.get(t, "DELETE", "/v2/src.test/library/redis/manifests/7")
	if status != 405 {
		t.Errorf("DELETE: status %d, want 405", status)
	}
}

func TestConcurrentRequestsShareOneDownload(t *testing.T) {
	forEachStore(t, testConcurrentRequestsShareOneDownload)
}

func testConcurrentRequestsShareOneDownload(t *testing.T, store func(*Options)) {
	tc := newTestCache(t, 1<<30, store)
	_, blobs := tc.up.image("big/one", "v1", 4<<20)
	gate := make(chan struct{})
	tc.up.gate = gate
	d := blobs[1]

	// One client leaves mid-download: the others must still get the blob.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", tc.srv.URL+"/v2/src.test/big/one/blobs/"+d.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()

	// Each client has its response headers, so it has joined the download,
	// which waits at the gate halfway through the blob.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	started := make(chan struct{}, 8)
	for range 8 {
		wg.Go(func() {
			resp, err := http.Get(tc.srv.URL + "/v2/src.test/big/one/blobs/" + d.String())
			started <- struct{}{}
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || hashOf(b) != d {
				errs <- errors.New("wrong or partial blob")
			}
		})
	}
	for range 8 {
		<-started
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := tc.up.count("GET blob"); got != 1 {
		t.Errorf("%d upstream GETs for one blob, want 1", got)
	}
	if _, _, ok := tc.store.openBlob(d); !ok {
		t.Error("blob not kept after the download")
	}
}

func TestCorruptBlobNeitherKeptNorServedWhole(t *testing.T) {
	forEachStore(t, testCorruptBlobNeitherKeptNorServedWhole)
}

func testCorruptBlobNeitherKeptNorServedWhole(t *testing.T, store func(*Options)) {
	tc := newTestCache(t, 1<<30, store)
	_, blobs := tc.up.image("bad/one", "v1", 300<<10)
	tc.up.corrupt[blobs[1]] = true
	// The client sees a 502, or a response cut short: never a whole blob.
	if resp, err := http.Get(tc.srv.URL + "/v2/src.test/bad/one/blobs/" + blobs[1].String()); err == nil {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && err == nil {
			t.Errorf("a blob that failed its digest check was served whole (%d bytes)", len(b))
		}
	}
	tc.wg.Wait()
	if _, _, ok := tc.store.openBlob(blobs[1]); ok {
		t.Error("corrupt blob kept in the store")
	}
	des, _ := os.ReadDir(tc.o.Dir + "/tmp")
	if len(des) != 0 {
		t.Errorf("temporary files left: %d", len(des))
	}
	status, _, _ := tc.get(t, "GET", "/v2/src.test/bad/one/blobs/sha256:"+strings.Repeat("0", 64))
	if status != 404 {
		t.Errorf("unknown blob: status %d, want 404", status)
	}
}

func TestTagListPassesThroughWithPages(t *testing.T) {
	tc := newTestCache(t, 1<<30)
	for _, tag := range []string{"a", "b", "c"} {
		tc.up.image("team/app", tag, 10)
	}
	status, h, body := tc.get(t, "GET", "/v2/src.test/team/app/tags/list")
	if status != 200 || !strings.Contains(string(body), `"tags":["a","b"]`) {
		t.Fatalf("first page: %d %s", status, body)
	}
	link := h.Get("Link")
	if link != `</v2/src.test/team/app/tags/list?last=b&n=2>; rel="next"` {
		t.Fatalf("Link %q: want the next page under the cache's path", link)
	}
	_, h, body = tc.get(t, "GET", strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`))
	if !strings.Contains(string(body), `"tags":["c"]`) || h.Get("Link") != "" {
		t.Errorf("second page: %s, Link %q", body, h.Get("Link"))
	}
	if status, _, _ := tc.get(t, "GET", "/v2/src.test/team/none/tags/list"); status != 404 {
		t.Errorf("unknown repository: status %d, want 404", status)
	}

	// Upstream down: the pages seen before are served, stale.
	tc.up.mu.Lock()
	tc.up.down = true
	tc.up.mu.Unlock()
	status, h, body = tc.get(t, "GET", "/v2/src.test/team/app/tags/list")
	if status != 200 || h.Get(CacheHeader) != "stale" || !strings.Contains(string(body), `"tags":["a","b"]`) || h.Get("Link") != link {
		t.Errorf("upstream down: %d %s %s, Link %q", status, h.Get(CacheHeader), body, h.Get("Link"))
	}
	if status, _, _ := tc.get(t, "GET", "/v2/src.test/team/app/tags/list?n=1"); status != 502 {
		t.Errorf("a page never fetched, upstream down: status %d, want 502", status)
	}
}

func TestHostilePathsHarmNothing(t *testing.T) {
	tc := newTestCache(t, 1<<30)
	tc.up.image("team/app", "v1", 10)
	for _, p := range []string{
		"/v2/src.test/../../etc/manifests/v1",
		"/v2/src.test/team/app/manifests/..",
		"/v2/src.test/team/app/manifests/a%2F..%2F..%2Fx",
		"/v2/src.test/team/app/blobs/sha256:../../x",
		"/v2/src.test/team/app/blobs/md5:abcd",
		"/v2/../manifests/v1?ns=src.test",
		"/v2/src.test/manifests/v1",
	} {
		status, _, body := tc.get(t, "GET", p)
		if status < 400 || status >= 500 {
			t.Errorf("GET %s: status %d %s, want a 4xx", p, status, body)
		}
	}
	if n := tc.up.count("GET manifest") + tc.up.count("GET blob"); n != 0 {
		t.Errorf("hostile paths reached the upstream %d times", n)
	}
}

func TestDockerMirrorPathsGoToDockerHub(t *testing.T) {
	hub := newFake()
	md, _ := hub.image("library/redis", "7", 10)
	tc := newTestCache(t, 1<<30, func(o *Options) { o.Upstreams[DockerHubName] = hub })
	status, h, body := tc.get(t, "GET", "/v2/library/redis/manifests/7")
	if status != 200 || hashOf(body) != md || h.Get(UpstreamHeader) != DockerHubName {
		t.Fatalf("docker registry-mirrors path: %d %s, upstream %q", status, body, h.Get(UpstreamHeader))
	}
	// An ns or a host-like first segment the cache does not know is an
	// error, never a silent Docker Hub pull.
	for _, p := range []string{"/v2/library/redis/manifests/7?ns=quay.io", "/v2/ghcr.io/org/app/manifests/7"} {
		if status, _, body := tc.get(t, "GET", p); status != 404 || !strings.Contains(string(body), "NAME_UNKNOWN") {
			t.Errorf("GET %s: status %d %s, want 404 NAME_UNKNOWN", p, status, body)
		}
	}
	if n := hub.count("GET manifest"); n != 1 {
		t.Errorf("Docker Hub asked %d times, want once", n)
	}
}

func TestBasicAuthAndMetrics(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	ht, err := serve.ParseHtpasswd(strings.NewReader("ops:" + string(hash) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	tc := newTestCache(t, 1<<30, func(o *Options) { o.Auth = ht })
	tc.up.image("team/app", "v1", 10)
	for _, p := range []string{"/v2/", "/v2/src.test/team/app/manifests/v1", "/metrics"} {
		status, h, _ := tc.get(t, "GET", p)
		if status != 401 || !strings.Contains(h.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("GET %s without credentials: %d, challenge %q", p, status, h.Get("WWW-Authenticate"))
		}
	}
	if n := tc.up.count("GET manifest"); n != 0 {
		t.Errorf("an unauthenticated request reached the upstream")
	}
	get := func(p string) (int, string) {
		req, _ := http.NewRequest("GET", tc.srv.URL+p, nil)
		req.SetBasicAuth("ops", "pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, _ := get("/v2/src.test/team/app/manifests/v1"); status != 200 {
		t.Fatalf("with credentials: %d", status)
	}
	get("/v2/src.test/team/app/manifests/v1")
	status, body := get("/metrics")
	for _, want := range []string{
		`ferry_cache_requests_total{result="hit"} 1`, `ferry_cache_requests_total{result="miss"} 1`,
		"# TYPE ferry_cache_store_bytes gauge", "ferry_cache_store_max_bytes 1073741824",
		`ferry_cache_evictions_total{kind="blob"} 0`, "ferry_cache_upstream_bytes_total 0",
	} {
		if status != 200 || !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

func TestStalledUpstreamEndsTheDownload(t *testing.T) {
	tc := newTestCache(t, 1<<30, func(o *Options) { o.StallTimeout = 100 * time.Millisecond })
	_, blobs := tc.up.image("slow/one", "v1", 1<<20)
	tc.up.gate = make(chan struct{}) // never opened: the upstream stops halfway
	resp, err := http.Get(tc.srv.URL + "/v2/src.test/slow/one/blobs/" + blobs[1].String())
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a stalled download was served as a whole blob")
	}
	tc.requests.Wait()
	tc.wg.Wait()
	tc.up.gate = nil
	tc.pull(t, "slow/one", "v1", blobs[1:])
	if n := tc.up.count("GET blob"); n != 2 {
		t.Errorf("%d upstream GETs, want 2 (the stalled one, then a new one)", n)
	}
}
