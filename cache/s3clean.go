package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/objstore"
)

// objectDefaults fills the object storage options.
func objectDefaults(o *Options) error {
	if o.AccessFlushEvery == 0 {
		o.AccessFlushEvery = DefaultAccessFlushEvery
	}
	if o.AccessFlushEntries == 0 {
		o.AccessFlushEntries = DefaultAccessFlushEntries
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Redirect != 0 && (o.Objects == nil || o.Redirect < time.Minute) {
		return fmt.Errorf("%w: blob redirects need the object store and a lifetime of at least a minute", ErrConfig)
	}
	if o.AccessFlushEvery < 0 || o.AccessFlushEntries < 0 || o.LeaseTTL < 0 {
		return fmt.Errorf("%w: negative access flush or lease setting", ErrConfig)
	}
	if o.ReplicaID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		o.ReplicaID = hex.EncodeToString(b[:])
	}
	if strings.ContainsAny(o.ReplicaID, "/ \n") {
		return fmt.Errorf("%w: replica id %q: no slashes or spaces", ErrConfig, o.ReplicaID)
	}
	return nil
}

const leaseKey = "lease/cleaner"

type lease struct {
	Holder  string    `json:"holder"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// takeLease makes this replica the one that cleans, until ttl passes:
// created with If-None-Match: * when there is none, taken over with
// If-Match on the ETag read when the holder's has expired. Of replicas
// that try at once, one wins. It returns a release function, or nil when
// another replica holds the lease.
func (b *s3Backend) takeLease(ctx context.Context, now time.Time, ttl time.Duration) (func(), error) {
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	mine := lease{Holder: b.replica, Token: hex.EncodeToString(tok[:]), Expires: now.Add(ttl)}
	raw, _ := json.Marshal(mine)
	err := b.st.Create(ctx, leaseKey, bytes.NewReader(raw), int64(len(raw)), objstore.PutOptions{ContentType: "application/json"})
	if errors.Is(err, objstore.ErrPrecondition) {
		cur, info, gerr := b.st.Get(ctx, leaseKey, 1<<16)
		if errors.Is(gerr, objstore.ErrNotExist) || errors.Is(gerr, objstore.ErrPrecondition) {
			// Released, or being taken over (SeaweedFS answers a read
			// during a conditional write with 412), since the create
			// lost: not taking it this time is always safe.
			return nil, nil
		}
		var held lease
		if gerr != nil || json.Unmarshal(cur, &held) != nil {
			return nil, fmt.Errorf("reading the cleaner's lease: %w", errors.Join(gerr, errors.New("unreadable")))
		}
		if now.Before(held.Expires) {
			return nil, nil
		}
		b.log.Info("taking over the cleaner's expired lease", "holder", held.Holder, "expired", held.Expires)
		err = b.st.Replace(ctx, leaseKey, info.ETag, bytes.NewReader(raw), int64(len(raw)), objstore.PutOptions{ContentType: "application/json"})
	}
	if errors.Is(err, objstore.ErrPrecondition) {
		return nil, nil // another replica was quicker
	}
	if err != nil {
		return nil, err
	}
	return func() {
		rctx, cancel := bg()
		defer cancel()
		cur, _, err := b.st.Get(rctx, leaseKey, 1<<16)
		var held lease
		if err == nil && json.Unmarshal(cur, &held) == nil && held.Token == mine.Token {
			_ = b.st.Remove(rctx, leaseKey)
		}
	}, nil
}

// cleanShared runs one cleaner pass over the shared store, if this
// replica gets the lease: list every blob and manifest, take their last
// access from the access batches of all replicas (else the object's
// modification time), and evict the least recently used until the store
// is at most MaxSize, as the local cleaner does. Objects another replica
// is serving are not known here; such a read may fail mid-way, and its
// client retries.
func (c *Cache) cleanShared(b *s3Backend) CleanResult {
	ctx, cancel := context.WithTimeout(c.ctx, c.o.LeaseTTL)
	defer cancel()
	release, err := b.takeLease(ctx, c.o.Now(), c.o.LeaseTTL)
	if err != nil {
		c.log.Warn("cleaner pass skipped", "err", err)
		return CleanResult{}
	}
	if release == nil {
		c.log.Debug("cleaner pass skipped: another replica holds the lease")
		return CleanResult{}
	}
	defer release()
	b.flush(ctx)
	idx, logged, batches, err := b.snapshot(ctx, c.store)
	if err != nil {
		c.log.Warn("cleaner pass failed", "err", err)
		return CleanResult{}
	}
	var r CleanResult
	if idx.total > c.high() {
		before := make(map[key]bool, len(idx.items))
		for k := range idx.items {
			before[k] = true
		}
		r = idx.evict(c.o.MaxSize)
		c.store.mu.Lock()
		for k := range before {
			if idx.items[k] == nil {
				c.store.removeKey(k, &CleanResult{}, false)
			}
		}
		c.store.mu.Unlock()
		c.metrics.evicted(r)
		c.log.Info("cleaner pass", "evicted_blobs", r.Blobs, "evicted_manifests", r.Manifests, "freed", r.Bytes, "size", idx.total, "max", c.o.MaxSize)
	}
	b.compact(ctx, idx, logged, batches)
	return r
}

// snapshot lists the shared store into an index of its own (backed by b,
// so that evicting from it removes objects), with access times merged
// from every batch; it returns the access times it read and the batch
// keys it read them from. Blobs this replica is serving or downloading are
// marked in use.
func (b *s3Backend) snapshot(ctx context.Context, local *store) (*store, map[string]time.Time, []string, error) {
	idx := &store{b: b, now: local.now, log: local.log, items: map[key]*entry{}, parents: map[v1.Hash]map[v1.Hash]bool{},
		tags: map[tagKey]tagRec{}, tagsOf: map[v1.Hash]map[tagKey]bool{}, inUse: map[v1.Hash]int{}, listsOf: map[string]map[v1.Hash]bool{}}
	atimes := map[string]time.Time{}
	var batches []string
	err := b.st.List(ctx, "access/", func(i objstore.Info) error {
		raw, _, err := b.st.Get(ctx, i.Key, 256<<20)
		if errors.Is(err, objstore.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		decodeAccess(raw, atimes)
		if strings.HasPrefix(i.Key, "access/batch-") {
			batches = append(batches, i.Key)
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, err
	}
	for _, kind := range []kind{kindBlob, kindManifest} {
		if err := b.listKind(ctx, idx, kind, atimes); err != nil {
			return nil, nil, nil, err
		}
	}
	local.mu.Lock()
	for d, n := range local.inUse {
		idx.inUse[d] = n
	}
	local.mu.Unlock()
	return idx, atimes, batches, nil
}

func (b *s3Backend) listKind(ctx context.Context, idx *store, k kind, atimes map[string]time.Time) error {
	prefix := "blobs/sha256/"
	if k == kindManifest {
		prefix = "manifests/sha256/"
	}
	return b.st.List(ctx, prefix, func(i objstore.Info) error {
		d, err := v1.NewHash("sha256:" + strings.TrimPrefix(i.Key, prefix))
		if err != nil {
			return nil // a record (.json) or a stranger
		}
		// An object no batch names yet was stored by a replica that has
		// not flushed: it counts as used at the end of its modification
		// second (listings truncate times to the second), not before
		// objects stored earlier in that second and used since.
		e := &entry{size: i.Size, atime: i.Modified.Truncate(time.Second).Add(time.Second - time.Nanosecond)}
		if t, ok := atimes[i.Key]; ok {
			e.atime = t
			if i.Modified.After(t) {
				e.atime = i.Modified
			}
		}
		if k == kindManifest {
			meta, err := b.meta(ctx, d)
			if errors.Is(err, objstore.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			e.mediaType, e.children = meta.MediaType, meta.Children
		}
		e.saved = e.atime
		idx.add(key{k, d}, e)
		return nil
	})
}

// compact writes the logged access times of the objects still stored as
// access/merged and removes the batches it merged. Only logged times: the
// estimate given to an object no batch named yet must not outlive the
// batch that will name it.
func (b *s3Backend) compact(ctx context.Context, idx *store, logged map[string]time.Time, batches []string) {
	merged := make(map[string]time.Time, len(idx.items))
	for k := range idx.items {
		if t, ok := logged[objectKey(k)]; ok {
			merged[objectKey(k)] = t
		}
	}
	raw := encodeAccess(merged)
	if _, err := b.st.Put(ctx, "access/merged", bytes.NewReader(raw), int64(len(raw)), objstore.PutOptions{ContentType: "text/plain"}); err != nil {
		b.log.Warn("writing merged access times", "err", err)
		return
	}
	for _, k := range batches {
		if err := b.st.Remove(ctx, k); err != nil {
			b.log.Warn("removing a merged access batch", "key", k, "err", err)
		}
	}
}
