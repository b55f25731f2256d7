package cache

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestCleanerEvictsLeastRecentlyUsed(t *testing.T) {
	const layer = 100 << 10
	tc := newTestCache(t, 250<<10, func(o *Options) { o.Threshold = 10 })
	mdA, blobsA := tc.up.image("team/a", "v1", layer)
	mdB, blobsB := tc.up.image("team/b", "v1", layer)
	mdC, blobsC := tc.up.image("team/c", "v1", layer)
	tc.pull(t, "team/a", "v1", blobsA)
	tc.pull(t, "team/b", "v1", blobsB)
	if r := tc.Clean(); r.Blobs != 0 {
		t.Fatalf("under the bound: evicted %+v", r)
	}
	tc.pull(t, "team/c", "v1", blobsC)
	tc.pull(t, "team/a", "v1", blobsA) // a is now more recent than b

	r := tc.Clean()
	if tc.Size() > 250<<10 {
		t.Fatalf("store %d bytes after a pass, want ≤ %d", tc.Size(), 250<<10)
	}
	if r.Blobs == 0 || r.Manifests == 0 {
		t.Fatalf("pass evicted %+v", r)
	}
	has := func(md v1.Hash, blobs []v1.Hash) (manifest bool, n int) {
		_, _, manifest = tc.store.manifest(md)
		for _, d := range blobs {
			if f, _, ok := tc.store.openBlob(d); ok {
				f.Close()
				n++
			}
		}
		return
	}
	if m, n := has(mdB, blobsB); m || n == len(blobsB) {
		t.Errorf("b (least recently used) kept: manifest %v, %d of %d blobs", m, n, len(blobsB))
	}
	for name, img := range map[string]struct {
		md    v1.Hash
		blobs []v1.Hash
	}{"a": {mdA, blobsA}, "c": {mdC, blobsC}} {
		if m, n := has(img.md, img.blobs); !m || n != len(img.blobs) {
			t.Errorf("%s evicted: manifest %v, %d of %d blobs", name, m, n, len(img.blobs))
		}
	}
	if _, ok := tc.store.tag(tagKey{"src.test", "team/b", "v1"}); ok {
		t.Error("tag of an evicted manifest kept")
	}
	// Pulling b again works.
	tc.pull(t, "team/b", "v1", blobsB)
}

func TestCleanerKeepsBlobsInUseAndNoOrphanManifest(t *testing.T) {
	tc := newTestCache(t, 10<<10, func(o *Options) { o.Threshold = 1 })
	md, blobs := tc.up.image("team/a", "v1", 20<<10, 30<<10)
	tc.pull(t, "team/a", "v1", blobs)
	release := tc.store.acquire(blobs[2]) // being served
	r := tc.Clean()
	if f, _, ok := tc.store.openBlob(blobs[2]); !ok {
		t.Error("a blob being served was evicted")
	} else {
		f.Close()
	}
	if _, _, ok := tc.store.manifest(md); ok {
		t.Error("a manifest whose blobs are gone was kept")
	}
	if r.Manifests != 1 || r.Tags != 1 {
		t.Errorf("evicted %+v, want the manifest and its tag", r)
	}
	release()
	tc.Clean()
	if tc.Size() != 0 {
		t.Errorf("store %d bytes after release and a pass, want 0", tc.Size())
	}
}
