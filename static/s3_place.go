package static

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/ctxio"
	"github.com/ferry-airgap/ferry/internal/objstore"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/serve"
)

// blobPut is how a config or layer object is written.
func blobPut(h v1.Hash) objstore.PutOptions {
	return objstore.PutOptions{ContentType: "application/octet-stream", Metadata: digestMeta(h)}
}

// checkMissing checks, before anything is written, that the tree holds
// every blob a delta left to its base: a checked copy, or an object of
// the right name and size whose bytes hash to the digest.
func (t *s3Tree) checkMissing(ctx context.Context, contents []serve.Content) error {
	missing := map[v1.Hash]string{}
	for _, c := range contents {
		for _, h := range c.Missing {
			missing[h] = c.Name
		}
	}
	var absent []string
	for _, h := range sortedHashes(missing) {
		if _, err := t.source(ctx, h, -1); errors.Is(err, errNoSource) {
			absent = append(absent, fmt.Sprintf("%s (needed by %s)", h, missing[h]))
		} else if err != nil {
			return err
		}
	}
	if len(absent) > 0 {
		return errMissingBase(t.st.Location().String(), absent, len(missing))
	}
	return nil
}

// source returns a key that holds blob h, checked: one the journal vouches
// for, else one whose bytes it hashes now (and records). size -1 (a blob
// no bundle holds, so of unknown size) takes each object's listed size.
// errNoSource if none.
func (t *s3Tree) source(ctx context.Context, h v1.Hash, size int64) (string, error) {
	t.mu.Lock()
	keys := append([]string(nil), t.byDigest[h.String()]...)
	t.mu.Unlock()
	sort.Strings(keys)
	sizeAt := func(k string) int64 {
		if size >= 0 {
			return size
		}
		return t.sizeOf(k)
	}
	for _, k := range keys {
		if t.verified(k, h, sizeAt(k)) {
			return k, nil
		}
	}
	for _, k := range keys {
		ok, err := t.hashObject(ctx, k, h, sizeAt(k))
		if err != nil {
			return "", err
		}
		if ok {
			return k, nil
		}
	}
	return "", errNoSource
}

// hashObject reads key and reports whether its bytes are blob h (size
// bytes); if so it records the ETag of the version it read.
func (t *s3Tree) hashObject(ctx context.Context, key string, h v1.Hash, size int64) (bool, error) {
	t.mu.Lock()
	info, ok := t.objects[key]
	t.mu.Unlock()
	if !ok || info.Size != size || h.Algorithm != "sha256" {
		return false, nil
	}
	obj, got, err := t.st.Open(ctx, key)
	if errors.Is(err, objstore.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("%w: %w", ErrTree, err)
	}
	defer func() { _ = obj.Close() }()
	hh := sha256.New()
	n, err := io.Copy(hh, io.LimitReader(ctxio.Reader(ctx, obj), size+1))
	if err != nil {
		return false, fmt.Errorf("%w: reading s3://%s/%s: %w", ErrTree, t.st.Location().Bucket, key, err)
	}
	if n != size || got.Size != size || hex.EncodeToString(hh.Sum(nil)) != h.Hex {
		return false, nil
	}
	t.record(key, h, size, got.ETag)
	return true, nil
}

// blobKeys maps every config and layer the contents reference to the
// keys it goes to (one per repository), digests in order.
func blobKeys(contents []serve.Content) ([]v1.Hash, map[v1.Hash][]string) {
	keys := map[v1.Hash][]string{}
	var order []v1.Hash
	for _, c := range contents {
		for _, list := range [][]v1.Hash{c.Blobs, c.Missing} {
			for _, h := range list {
				if _, ok := keys[h]; !ok {
					order = append(order, h)
				}
				keys[h] = append(keys[h], "v2/"+c.Name+"/blobs/"+h.String())
			}
		}
	}
	return order, keys
}

// placeBlobs makes every repository's blobs/ hold its configs and layers,
// o.jobs digests at a time: each blob is uploaded from its bundle at most
// once, digest checked, and copied on the server to the other keys.
func (t *s3Tree) placeBlobs(ctx context.Context, reg *serve.Registry, contents []serve.Content, o *options, sum *Summary) error {
	order, keys := blobKeys(contents)
	t.copySem = make(chan struct{}, o.jobs)
	var total int64
	for _, h := range order {
		if rd := reg.Holder(h); rd != nil {
			size, _ := rd.BlobSize(h)
			if _, err := t.sourceKnown(h, size); err != nil {
				total += size
			}
		}
	}
	o.progress.Event(bundle.Event{Kind: bundle.EventPlanned, Total: total})
	var written atomic.Int64
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.jobs)
	for _, h := range order {
		g.Go(func() error {
			up, files, err := t.placeBlob(gctx, reg, h, keys[h], o.progress, &written)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case up:
				sum.BlobsWritten++
			case files == 0 && err == nil:
				sum.BlobsPresent++
			}
			sum.FilesWritten += files
			return err
		})
	}
	err := g.Wait()
	sum.BytesWritten = written.Load()
	return err
}

// sourceKnown is source without reading: a key the journal vouches for.
func (t *s3Tree) sourceKnown(h v1.Hash, size int64) (string, error) {
	t.mu.Lock()
	keys := append([]string(nil), t.byDigest[h.String()]...)
	t.mu.Unlock()
	for _, k := range keys {
		if t.verified(k, h, size) {
			return k, nil
		}
	}
	return "", errNoSource
}

// placeBlob writes blob h to those of keys that do not hold it checked. It
// reports whether it uploaded the blob from its bundle and how many
// objects it wrote.
func (t *s3Tree) placeBlob(ctx context.Context, reg *serve.Registry, h v1.Hash, keys []string, p bundle.Progress, written *atomic.Int64) (bool, int, error) {
	rd := reg.Holder(h)
	size := int64(-1)
	if rd != nil {
		size, _ = rd.BlobSize(h)
	} else if src, err := t.source(ctx, h, -1); err == nil {
		size = t.sizeOf(src) // a blob a delta left to its base (checkMissing found it)
	} else {
		return false, 0, err
	}
	var todo []string
	for _, k := range keys {
		if !t.verified(k, h, size) {
			todo = append(todo, k)
		}
	}
	if len(todo) == 0 {
		return false, 0, nil
	}
	src, err := t.source(ctx, h, size)
	uploaded := false
	switch {
	case errors.Is(err, errNoSource) && rd != nil:
		n, err := t.upload(ctx, rd, h, todo[0], p)
		written.Add(n)
		if err != nil {
			p.Event(bundle.Event{Kind: bundle.EventBlobFailed, Digest: h, Err: err})
			return false, 0, fmt.Errorf("bundle %s: blob %s: %w", rd.Path(), h, err)
		}
		p.Event(bundle.Event{Kind: bundle.EventBlobDone, Digest: h})
		src, uploaded = todo[0], true
	case err != nil:
		return false, 0, err
	}
	copies, err := t.copyBlob(ctx, h, src, todo, size)
	if uploaded {
		copies++
	}
	return uploaded, copies, err
}

// copyBlob copies blob h from key src to every key of todo that does not
// hold it checked, on the server, several at once (a base layer shared by
// forty repositories is not copied forty times in a row); copySem bounds
// the copies of all blobs together. It returns how many it made.
func (t *s3Tree) copyBlob(ctx context.Context, h v1.Hash, src string, todo []string, size int64) (int, error) {
	var n atomic.Int32
	g, gctx := errgroup.WithContext(ctx)
	for _, k := range todo {
		if k == src || t.verified(k, h, size) {
			continue
		}
		g.Go(func() error {
			select {
			case t.copySem <- struct{}{}:
				defer func() { <-t.copySem }()
			case <-gctx.Done():
				return gctx.Err()
			}
			etag, err := t.st.Copy(gctx, k, src, blobPut(h))
			if err != nil {
				return fmt.Errorf("%w: blob %s: %w", ErrTree, h, err)
			}
			t.record(k, h, size, etag)
			n.Add(1)
			return nil
		})
	}
	err := g.Wait()
	return int(n.Load()), err
}

func (t *s3Tree) sizeOf(key string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.objects[key].Size
}

// upload streams blob h out of rd to key, digest checked: the last byte is
// sent only when the check passed (bundle.HoldLast), so a damaged blob's
// PUT ends short and the store creates nothing. It returns the bytes sent.
func (t *s3Tree) upload(ctx context.Context, rd *bundle.Reader, h v1.Hash, key string, p bundle.Progress) (int64, error) {
	b, err := rd.Blob(h)
	if err != nil {
		return 0, err
	}
	size, _ := rd.BlobSize(h)
	cr := &countReader{r: bundle.HoldLast(b, size), p: p, h: h}
	etag, err := t.st.Put(ctx, key, ctxio.Reader(ctx, cr), size, blobPut(h))
	if cerr := cr.err; cerr != nil {
		return cr.n, cerr // the bundle's bytes failed their check: say that, not the cut request
	}
	if err != nil {
		return cr.n, fmt.Errorf("%w: %w", ErrTree, err)
	}
	t.record(key, h, size, etag)
	t.mu.Lock()
	t.byDigest[h.String()] = append(t.byDigest[h.String()], key)
	t.mu.Unlock()
	return cr.n, nil
}

// countReader reports the bytes read as progress and keeps the source's
// own error (a failed digest check).
type countReader struct {
	r   io.Reader
	p   bundle.Progress
	h   v1.Hash
	n   int64
	err error
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if n > 0 {
		c.p.Event(bundle.Event{Kind: bundle.EventBytes, Digest: c.h, Bytes: int64(n)})
	}
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// manifestPut is one manifest object to write: key, the manifest, the
// Content-Type, and whether it is a tag.
type manifestPut struct {
	key string
	h   v1.Hash
	mt  types.MediaType
	tag bool
}

// manifestPuts lists every repository's manifest objects in two batches:
// by digest (under manifests/ with their media type, under blobs/ as
// bytes), then tags and referrers indexes.
func manifestPuts(contents []serve.Content, sum *Summary) (byDigest, tags []manifestPut) {
	for _, c := range contents {
		base := "v2/" + c.Name + "/"
		ms := manifestList(c)
		for _, h := range ms {
			byDigest = append(byDigest, manifestPut{base + "blobs/" + h.String(), h, "application/octet-stream", false},
				manifestPut{base + "manifests/" + h.String(), h, c.Manifests[h], false})
		}
		for _, tag := range tagsOf(c) {
			tags = append(tags, manifestPut{base + "manifests/" + tag, c.Tags[tag], c.Manifests[c.Tags[tag]], true})
		}
		for _, h := range ms {
			if idx, ok := c.Tags[oci.DigestTag(h)]; ok && idx != h && c.Manifests[idx] == types.OCIImageIndex {
				tags = append(tags, manifestPut{base + "referrers/" + h.String(), idx, types.OCIImageIndex, false})
			}
		}
		sum.Tags += len(c.Tags)
	}
	return byDigest, tags
}

// readManifests reads (and checks) each manifest of puts out of its
// bundle once, however many keys it goes to.
func readManifests(reg *serve.Registry, puts []manifestPut) (map[v1.Hash][]byte, error) {
	data := map[v1.Hash][]byte{}
	for _, p := range puts {
		if _, ok := data[p.h]; ok {
			continue
		}
		rd := reg.Holder(p.h)
		if rd == nil {
			return nil, fmt.Errorf("%w: manifest %s is in none of the bundles", ErrTree, p.h)
		}
		b, err := rd.ReadBlob(p.h, bundle.MaxManifestSize)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", rd.Path(), err)
		}
		data[p.h] = b
	}
	return data, nil
}

// placeManifests writes the manifest objects, those by digest first: a
// tag object appears only after all it references exists.
func (t *s3Tree) placeManifests(ctx context.Context, reg *serve.Registry, contents []serve.Content, o *options, sum *Summary) error {
	byDigest, tags := manifestPuts(contents, sum)
	data, err := readManifests(reg, append(append([]manifestPut(nil), byDigest...), tags...))
	if err != nil {
		return err
	}
	for _, batch := range [][]manifestPut{byDigest, tags} {
		var mu sync.Mutex
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(o.jobs)
		for _, p := range batch {
			g.Go(func() error {
				wrote, err := t.putSmall(gctx, p.key, data[p.h], objstore.PutOptions{ContentType: string(p.mt), Metadata: digestMeta(p.h)})
				mu.Lock()
				defer mu.Unlock()
				if wrote {
					sum.FilesWritten++
					if p.tag {
						sum.TagsChanged++
					}
				}
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return nil
}
