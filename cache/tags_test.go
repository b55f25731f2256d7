package cache

import (
	"net/http/httptest"
	"testing"
	"time"
)

func TestTagRevalidatedAfterTTL(t *testing.T) { forEachStore(t, testTagRevalidatedAfterTTL) }

func testTagRevalidatedAfterTTL(t *testing.T, store func(*Options)) {
	tc := newTestCache(t, 1<<30, store, func(o *Options) { o.ManifestTTL = time.Minute })
	md1, _ := tc.up.image("team/app", "v1", 10)
	if s, _, _ := tc.get(t, "GET", "/v2/src.test/team/app/manifests/v1"); s != 200 {
		t.Fatalf("status %d", s)
	}
	tc.clock.Advance(59 * time.Second)
	tc.get(t, "GET", "/v2/src.test/team/app/manifests/v1")
	if n := tc.up.count("HEAD manifest"); n != 0 {
		t.Fatalf("within the TTL: %d upstream HEADs, want 0", n)
	}
	tc.clock.Advance(2 * time.Second)
	_, h, body := tc.get(t, "GET", "/v2/src.test/team/app/manifests/v1")
	if n := tc.up.count("HEAD manifest"); n != 1 || hashOf(body) != md1 || h.Get(CacheHeader) != "hit" {
		t.Fatalf("after the TTL, unchanged: %d HEADs, %s, %s; want 1 HEAD, hit of %s", n, h.Get(CacheHeader), hashOf(body), md1)
	}
	if n := tc.up.count("GET manifest"); n != 1 {
		t.Errorf("unchanged tag fetched again: %d GETs", n)
	}

	// The tag moves upstream.
	md2, _ := tc.up.image("team/app", "v1", 20)
	tc.clock.Advance(2 * time.Minute)
	_, h, body = tc.get(t, "GET", "/v2/src.test/team/app/manifests/v1")
	if hashOf(body) != md2 || h.Get(CacheHeader) != "miss" {
		t.Fatalf("moved tag: got %s (%s), want %s", hashOf(body), h.Get(CacheHeader), md2)
	}

	// The upstream goes down: the tag is served from the store, stale.
	tc.up.mu.Lock()
	tc.up.down = true
	tc.up.mu.Unlock()
	tc.clock.Advance(2 * time.Minute)
	status, h, body := tc.get(t, "GET", "/v2/src.test/team/app/manifests/v1")
	if status != 200 || hashOf(body) != md2 || h.Get(CacheHeader) != "stale" {
		t.Fatalf("upstream down: %d %s %s, want 200 stale %s", status, h.Get(CacheHeader), hashOf(body), md2)
	}
	// By digest: never revalidated, served while the upstream is down.
	heads := tc.up.count("HEAD manifest")
	status, h, _ = tc.get(t, "GET", "/v2/src.test/team/app/manifests/"+md1.String())
	if status != 200 || h.Get(CacheHeader) != "hit" || tc.up.count("HEAD manifest") != heads {
		t.Errorf("by digest, upstream down: %d %s", status, h.Get(CacheHeader))
	}
	// A tag never pulled cannot be served.
	status, _, _ = tc.get(t, "GET", "/v2/src.test/team/app/manifests/v9")
	if status != 502 {
		t.Errorf("unknown tag, upstream down: status %d, want 502", status)
	}
	if tc.Metrics().Snapshot().Stale != 1 {
		t.Errorf("stale count %d, want 1", tc.Metrics().Snapshot().Stale)
	}

	// While the upstream is known to be down, stored tags are served at
	// once, without asking it again; after a while it is asked again.
	heads = tc.up.count("HEAD manifest")
	tc.clock.Advance(10 * time.Second)
	if _, h, _ := tc.get(t, "GET", "/v2/src.test/team/app/manifests/v1"); h.Get(CacheHeader) != "stale" || tc.up.count("HEAD manifest") != heads {
		t.Errorf("upstream known down: %s, %d more HEADs; want stale, none", h.Get(CacheHeader), tc.up.count("HEAD manifest")-heads)
	}
	tc.up.mu.Lock()
	tc.up.down = false
	tc.up.mu.Unlock()
	tc.clock.Advance(downFor)
	if _, h, body := tc.get(t, "GET", "/v2/src.test/team/app/manifests/v1"); h.Get(CacheHeader) != "hit" || hashOf(body) != md2 {
		t.Errorf("upstream back: %s %s, want a revalidated hit of %s", h.Get(CacheHeader), hashOf(body), md2)
	}
}

func TestTagsSurviveRestart(t *testing.T) { forEachStore(t, testTagsSurviveRestart) }

func testTagsSurviveRestart(t *testing.T, store func(*Options)) {
	tc := newTestCache(t, 1<<30, store)
	md, blobs := tc.up.image("team/app", "v1", 10)
	tc.pull(t, "team/app", "v1", blobs)
	tc.Close()
	c2, err := New(tc.o)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	rec, ok := c2.store.tag(tagKey{"src.test", "team/app", "v1"})
	if !ok || rec.Digest != md {
		t.Fatalf("tag after restart: %v %v, want %s", rec, ok, md)
	}
	// A shared store's index fills as objects are asked for (the
	// cleaner lists the bucket): only the disk store knows its size.
	if tc.o.Objects == nil && c2.Size() != tc.Size() {
		t.Errorf("size after restart %d, want %d", c2.Size(), tc.Size())
	}
	// The upstream goes down: the tag is served, stale, from the store.
	tc.up.mu.Lock()
	tc.up.down = true
	tc.up.mu.Unlock()
	tc.clock.Advance(time.Hour)
	w := httptest.NewRecorder()
	c2.ServeHTTP(w, httptest.NewRequest("GET", "/v2/src.test/team/app/manifests/v1", nil))
	if w.Code != 200 || hashOf(w.Body.Bytes()) != md || w.Header().Get(CacheHeader) != "stale" {
		t.Errorf("after restart, upstream down: %d %s %s, want 200 stale %s", w.Code, w.Header().Get(CacheHeader), hashOf(w.Body.Bytes()), md)
	}

}
