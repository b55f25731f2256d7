package cache

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/objstore"
)

// The store in object storage, shared by every replica that names it:
//
//	blobs/sha256/HEX               blob bytes, verified before they were put
//	manifests/sha256/HEX           manifest bytes (Content-Type: its media type)
//	manifests/sha256/HEX.json      its media type and the digests it references
//	access/batch-REPLICA-SEQ       access times a replica recorded since its last batch
//	access/merged                  access times the cleaner merged from the batches
//	lease/cleaner                  held by the replica that cleans (with an expiry)
//
// Final keys are only ever written with If-None-Match: *, after the bytes
// were checked against the digest: of replicas that fetch one blob at
// once, one object is kept, and since a PUT appears whole or not at all, a
// reader never sees a partial object.

// Defaults for the object storage options.
const (
	DefaultAccessFlushEvery   = 30 * time.Second
	DefaultAccessFlushEntries = 1000
	DefaultLeaseTTL           = 10 * time.Minute
)

// objectTimeout bounds one request to the object store made for the cache
// itself (not a client's read).
const objectTimeout = 2 * time.Minute

type s3Backend struct {
	st      *objstore.Store
	log     *slog.Logger
	replica string
	every   time.Duration
	max     int

	mu      sync.Mutex
	pending map[string]time.Time // object key → last access not yet written
	seq     int
	kick    chan struct{}
}

func newS3Backend(o Options) *s3Backend {
	b := &s3Backend{st: o.Objects, log: o.Logger, replica: o.ReplicaID, every: o.AccessFlushEvery,
		max: o.AccessFlushEntries, pending: map[string]time.Time{}, kick: make(chan struct{}, 1)}
	return b
}

func blobKey(d v1.Hash) string     { return "blobs/" + d.Algorithm + "/" + d.Hex }
func manifestKey(d v1.Hash) string { return "manifests/" + d.Algorithm + "/" + d.Hex }
func objectKey(k key) string {
	if k.k == kindBlob {
		return blobKey(k.d)
	}
	return manifestKey(k.d)
}

func (b *s3Backend) shared() bool { return true }

func bg() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), objectTimeout)
}

// load indexes nothing: the index of a replica fills as objects are asked
// for (find), and the cleaner lists the bucket itself.
func (b *s3Backend) load(func(key, *entry)) error { return nil }

func (b *s3Backend) find(k key) *entry {
	ctx, cancel := bg()
	defer cancel()
	info, err := b.st.Stat(ctx, objectKey(k))
	if err != nil {
		if !errors.Is(err, objstore.ErrNotExist) {
			b.log.Warn("looking up the object store", "digest", k.d, "err", err)
		}
		return nil
	}
	// saved zero: this replica's first access is recorded (its own
	// access batch), whoever stored the object.
	e := &entry{size: info.Size, atime: info.Modified}
	if k.k == kindManifest {
		meta, err := b.meta(ctx, k.d)
		if err != nil {
			b.log.Warn("a stored manifest without its record", "digest", k.d, "err", err)
			return nil
		}
		e.mediaType, e.children = meta.MediaType, meta.Children
	}
	return e
}

func (b *s3Backend) meta(ctx context.Context, d v1.Hash) (manifestMeta, error) {
	var meta manifestMeta
	raw, _, err := b.st.Get(ctx, manifestKey(d)+".json", MaxManifestSize)
	if err == nil {
		err = json.Unmarshal(raw, &meta)
	}
	return meta, err
}

// openBlob opens the object; its reads are ranged GETs as the reader
// asks (http.ServeContent serves Range requests from it).
func (b *s3Backend) openBlob(d v1.Hash) (blobReader, int64, error) {
	obj, info, err := b.st.Open(context.Background(), blobKey(d))
	if err != nil {
		return nil, 0, err
	}
	return obj, info.Size, nil
}

// presign returns a URL that reads blob d's object for expires.
func (b *s3Backend) presign(d v1.Hash, expires time.Duration) (string, error) {
	ctx, cancel := bg()
	defer cancel()
	return b.st.PresignGet(ctx, blobKey(d), expires)
}

// putBlob puts the verified file tmp under the blob's final key, unless
// an object is there already. Shortcut: losing that race (412) counts as
// stored, and the clients of this download get the checked bytes of tmp.
// Premise: every replica writes a final key only after checking the bytes
// against the digest, so the winner's object is the same blob. It is not
// trusted further than that: the object is marked unverified (mine
// false), hashed on this replica's first hit, and dropped if bad.
// Tests: TestCacheS3ConcurrentPullsAcrossReplicas (one object kept),
// TestS3ForeignObjectWinningThePutIsHashed (a bad object that wins the
// race is not served).
func (b *s3Backend) putBlob(tmp string, d v1.Hash, size int64) (bool, error) {
	defer func() { _ = os.Remove(tmp) }() // readers that follow the download hold it open
	f, err := os.Open(tmp)
	if err != nil {
		return false, fmt.Errorf("storing blob %s: %w", d, err)
	}
	defer func() { _ = f.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), objectTimeout+time.Duration(size>>20)*time.Second)
	defer cancel()
	err = b.st.Create(ctx, blobKey(d), f, size, objstore.PutOptions{ContentType: "application/octet-stream"})
	lost := errors.Is(err, objstore.ErrPrecondition)
	if err != nil && !lost {
		return false, fmt.Errorf("storing blob %s: %w", d, err)
	}
	b.touch(key{kindBlob, d}, time.Now()) // used now (stored now, or earlier by another replica)
	return !lost, nil
}

func (b *s3Backend) readManifest(d v1.Hash) ([]byte, error) {
	ctx, cancel := bg()
	defer cancel()
	raw, _, err := b.st.Get(ctx, manifestKey(d), MaxManifestSize)
	return raw, err
}

// putManifest writes the record first, then the manifest (conditionally,
// as blobs): a listed manifest always has its record.
func (b *s3Backend) putManifest(d v1.Hash, meta manifestMeta, body []byte) error {
	raw, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	ctx, cancel := bg()
	defer cancel()
	if _, err := b.st.Put(ctx, manifestKey(d)+".json", bytes.NewReader(raw), int64(len(raw)), objstore.PutOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("storing manifest %s: %w", d, err)
	}
	err = b.st.Create(ctx, manifestKey(d), bytes.NewReader(body), int64(len(body)), objstore.PutOptions{ContentType: meta.MediaType})
	if err != nil && !errors.Is(err, objstore.ErrPrecondition) {
		return fmt.Errorf("storing manifest %s: %w", d, err)
	}
	b.touch(key{kindManifest, d}, time.Now())
	return nil
}

func (b *s3Backend) remove(k key) {
	ctx, cancel := bg()
	defer cancel()
	keys := []string{objectKey(k)}
	if k.k == kindManifest {
		keys = append(keys, manifestKey(k.d)+".json")
	}
	for _, ok := range keys {
		if err := b.st.Remove(ctx, ok); err != nil {
			b.log.Warn("removing from the object store", "key", ok, "err", err)
		}
	}
}

// touch queues the access for this replica's next access batch: no write
// per request. A full queue wakes the flusher.
func (b *s3Backend) touch(k key, t time.Time) {
	b.mu.Lock()
	b.pending[objectKey(k)] = t
	full := len(b.pending) >= b.max
	b.mu.Unlock()
	if full {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// runFlusher writes the access batch every b.every, or when it is full,
// until ctx ends; then once more.
func (b *s3Backend) runFlusher(ctx context.Context) {
	t := time.NewTicker(b.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := bg()
			b.flush(fctx)
			cancel()
			return
		case <-t.C:
		case <-b.kick:
		}
		b.flush(ctx)
	}
}

// flush writes the queued access times as one batch object.
func (b *s3Backend) flush(ctx context.Context) {
	b.mu.Lock()
	batch := b.pending
	b.pending = map[string]time.Time{}
	b.seq++
	seq := b.seq
	b.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	raw := encodeAccess(batch)
	k := fmt.Sprintf("access/batch-%s-%010d", b.replica, seq)
	if _, err := b.st.Put(ctx, k, bytes.NewReader(raw), int64(len(raw)), objstore.PutOptions{ContentType: "text/plain"}); err != nil {
		b.log.Warn("writing access times to the object store", "err", err)
		b.mu.Lock()
		for ok, t := range batch {
			if t.After(b.pending[ok]) {
				b.pending[ok] = t
			}
		}
		b.mu.Unlock()
	}
}

// encodeAccess writes "KEY UNIXNANO" lines, in key order.
func encodeAccess(m map[string]time.Time) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&buf, "%s %d\n", k, m[k].UnixNano())
	}
	return buf.Bytes()
}

// decodeAccess merges lines of encodeAccess into m (latest wins).
func decodeAccess(raw []byte, m map[string]time.Time) {
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		k, ns, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.ParseInt(ns, 10, 64)
		if !ok || err != nil {
			continue
		}
		if t := time.Unix(0, n); t.After(m[k]) {
			m[k] = t
		}
	}
}
