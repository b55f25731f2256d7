package cache

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/internal/objstore"
)

func testBackend(t *testing.T, store func(*Options), replica string) *s3Backend {
	o := Options{Logger: slog.New(slog.DiscardHandler), ReplicaID: replica}
	store(&o)
	if err := objectDefaults(&o); err != nil {
		t.Fatal(err)
	}
	return newS3Backend(o)
}

// TestS3LeaseOneCleanerAtATime: of replicas that take the cleaner's lease
// at once, one wins; an unexpired lease is not taken; an expired one is
// taken over by exactly one; a holder whose lease was taken over does not
// release the new holder's.
func TestS3LeaseOneCleanerAtATime(t *testing.T) {
	store := onS3(t)
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var bs []*s3Backend
	for _, id := range []string{"r0", "r1", "r2", "r3", "r4", "r5"} {
		bs = append(bs, testBackend(t, store, id))
	}
	take := func(at time.Time) []func() {
		var mu sync.Mutex
		var held []func()
		var wg sync.WaitGroup
		for _, b := range bs {
			wg.Go(func() {
				release, err := b.takeLease(ctx, at, time.Minute)
				if err != nil {
					t.Error(err)
				}
				if release != nil {
					mu.Lock()
					held = append(held, release)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return held
	}
	first := take(now)
	if len(first) != 1 {
		t.Fatalf("%d replicas hold the lease, want 1", len(first))
	}
	if again := take(now.Add(30 * time.Second)); len(again) != 0 {
		t.Fatalf("an unexpired lease was taken %d times", len(again))
	}
	second := take(now.Add(2 * time.Minute))
	if len(second) != 1 {
		t.Fatalf("expired lease taken over by %d replicas, want 1", len(second))
	}
	first[0]() // the old holder ends: the new holder's lease stays
	if again := take(now.Add(2*time.Minute + time.Second)); len(again) != 0 {
		t.Fatalf("the old holder's release freed the new holder's lease (%d takers)", len(again))
	}
	second[0]()
	if again := take(now.Add(2*time.Minute + 2*time.Second)); len(again) != 1 {
		t.Fatalf("after release: %d takers, want 1", len(again))
	}
}

// TestS3AccessBatchesMerged: accesses recorded by replicas reach the
// cleaner's snapshot as the objects' last use, latest wins, and merged
// batches are removed.
func TestS3AccessBatchesMerged(t *testing.T) {
	store := onS3(t)
	tc := newTestCache(t, 1<<30, store)
	_, blobs := tc.up.image("team/app", "v1", 100, 200)
	tc.pull(t, "team/app", "v1", blobs)
	ctx := context.Background()
	b1, b2 := testBackend(t, store, "one"), testBackend(t, store, "two")
	late := time.Now().Add(time.Hour)
	b1.touch(key{kindBlob, blobs[1]}, late.Add(-time.Minute))
	b2.touch(key{kindBlob, blobs[1]}, late)
	b1.flush(ctx)
	b2.flush(ctx)
	idx, logged, batches, err := b1.snapshot(ctx, tc.store)
	if err != nil {
		t.Fatal(err)
	}
	if len(batches) < 2 {
		t.Errorf("%d batches read, want at least 2", len(batches))
	}
	if e := idx.items[key{kindBlob, blobs[1]}]; e == nil || !e.atime.Equal(late) {
		t.Fatalf("blob's last use in the snapshot: %+v, want %s", e, late)
	}
	if e := idx.items[key{kindBlob, blobs[2]}]; e == nil || e.size != 200 {
		t.Errorf("untouched blob: %+v, want 200 bytes", e)
	}
	b1.compact(ctx, idx, logged, batches)
	idx2, _, batches2, err := b1.snapshot(ctx, tc.store)
	if err != nil {
		t.Fatal(err)
	}
	if len(batches2) != 0 {
		t.Errorf("%d batches left after compaction", len(batches2))
	}
	if e := idx2.items[key{kindBlob, blobs[1]}]; e == nil || !e.atime.Equal(late) {
		t.Errorf("after compaction the last use is %+v, want %s (from access/merged)", e, late)
	}
	// blobs[2] is named by no batch yet (its replica has not flushed): its
	// estimated last use must not be written down as a logged one.
	merged, _, err := tc.o.Objects.Get(ctx, "access/merged", 1<<20)
	if err != nil || bytes.Contains(merged, []byte(blobs[2].Hex)) {
		t.Errorf("access/merged (%v) names a blob no batch named:\n%s", err, merged)
	}
}

func TestAccessEncodingRoundTrips(t *testing.T) {
	a := time.Unix(100, 5)
	m := map[string]time.Time{"blobs/sha256/aa": a, "manifests/sha256/bb": a.Add(time.Second)}
	got := map[string]time.Time{"blobs/sha256/aa": a.Add(time.Hour)}
	decodeAccess(append(encodeAccess(m), []byte("garbage\nx y\n")...), got)
	if !got["blobs/sha256/aa"].Equal(a.Add(time.Hour)) || !got["manifests/sha256/bb"].Equal(a.Add(time.Second)) || len(got) != 2 {
		t.Errorf("merged: %v", got)
	}
}

// TestS3ForeignObjectWinningThePutIsHashed breaks the premise of
// s3Backend.putBlob's shortcut: an object with the right size and wrong
// bytes appears under the blob's final key while the cache downloads it,
// so the cache's conditional put loses. The download's client still gets
// the checked bytes; the next hit hashes the object, drops it and fetches
// the blob again: the bad bytes are never served.
func TestS3ForeignObjectWinningThePutIsHashed(t *testing.T) {
	store := onS3(t)
	tc := newTestCache(t, 1<<30, store)
	_, blobs := tc.up.image("team/app", "v1", 64<<10)
	d := blobs[1]
	gate := make(chan struct{})
	tc.up.gate = gate
	got := make(chan []byte, 1)
	go func() {
		_, _, b := tc.get(t, "GET", "/v2/src.test/team/app/blobs/"+d.String())
		got <- b
	}()
	for tc.up.count("GET blob") == 0 { // the download has started
		time.Sleep(10 * time.Millisecond)
	}
	bad := bytes.Repeat([]byte{'x'}, 64<<10)
	if err := tc.o.Objects.Create(context.Background(), blobKey(d), bytes.NewReader(bad), int64(len(bad)), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	close(gate)
	if b := <-got; hashOf(b) != d {
		t.Fatalf("the download's client got %d bytes of %s, want %s", len(b), hashOf(b), d)
	}
	tc.wg.Wait()
	status, _, b := tc.get(t, "GET", "/v2/src.test/team/app/blobs/"+d.String())
	if status != 200 || hashOf(b) != d {
		t.Fatalf("hit after a foreign object won the put: %d, %s; want %s", status, hashOf(b), d)
	}
	if n := tc.up.count("GET blob"); n != 2 {
		t.Errorf("%d upstream GETs, want 2 (the bad object dropped and the blob fetched again)", n)
	}
	raw, _, err := tc.o.Objects.Get(context.Background(), blobKey(d), 1<<20)
	if err != nil || hashOf(raw) != d {
		t.Errorf("stored object after the refetch: %s, %v; want %s", hashOf(raw), err, d)
	}
}
