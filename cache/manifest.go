package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fetchTimeout bounds one upstream manifest fetch, which runs detached
// from the client that asked (others may be waiting for it).
const fetchTimeout = 2 * time.Minute

type fetched struct {
	d         v1.Hash
	mediaType string
	body      []byte
}

// fetchManifest GETs repo:ref from up once for all concurrent callers,
// checks its digest and stores it.
func (c *Cache) fetchManifest(ctx context.Context, up Upstream, upName, repo, ref string) (*fetched, error) {
	ch := c.mflight.DoChan(upName+"/"+repo+"@"+ref, func() (any, error) {
		fctx, cancel := context.WithTimeout(c.ctx, fetchTimeout)
		defer cancel()
		m, err := up.Manifest(fctx, repo, ref, false)
		if err != nil {
			c.metrics.add(&c.metrics.upstreamErrors, 1)
			return nil, err
		}
		sum := sha256.Sum256(m.Body)
		d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
		if want, err := v1.NewHash(ref); err == nil && want != d {
			return nil, fmt.Errorf("manifest %s from %s: %w: got %s", ref, upName, ErrDigestMismatch, d)
		}
		if m.Digest != (v1.Hash{}) && m.Digest.Algorithm == "sha256" && m.Digest != d {
			return nil, fmt.Errorf("manifest %s:%s from %s: %w: upstream says %s, bytes are %s", repo, ref, upName, ErrDigestMismatch, m.Digest, d)
		}
		mt := mediaTypeOf(m.MediaType, m.Body)
		if err := c.store.putManifest(d, mt, m.Body); err != nil {
			return nil, err
		}
		return &fetched{d: d, mediaType: mt, body: m.Body}, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*fetched), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// mediaTypeOf prefers the upstream's Content-Type, else the manifest's own
// mediaType field, else guesses OCI from its shape.
func mediaTypeOf(contentType string, body []byte) string {
	if contentType != "" && contentType != "application/json" && contentType != "text/plain" {
		return contentType
	}
	var m struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	_ = json.Unmarshal(body, &m)
	switch {
	case m.MediaType != "":
		return m.MediaType
	case m.Manifests != nil:
		return "application/vnd.oci.image.index.v1+json"
	}
	return "application/vnd.oci.image.manifest.v1+json"
}

func (c *Cache) serveManifestDigest(w http.ResponseWriter, r *http.Request, up Upstream, upName, repo string, d v1.Hash) {
	if body, mt, ok := c.store.manifest(d); ok {
		c.metrics.add(&c.metrics.hits, 1)
		writeManifest(w, r, "hit", d, mt, body)
		return
	}
	c.metrics.add(&c.metrics.misses, 1)
	f, err := c.fetchManifest(r.Context(), up, upName, repo, d.String())
	if err != nil {
		c.upstreamError(w, r, upName, "MANIFEST_UNKNOWN", "manifest "+repo+"@"+d.String(), err)
		return
	}
	writeManifest(w, r, "miss", f.d, f.mediaType, f.body)
}

// serveManifestTag serves a tag from the store while its TTL runs; then
// one upstream HEAD says whether it moved. An upstream that cannot answer
// leaves the stored manifest in service (stale).
func (c *Cache) serveManifestTag(w http.ResponseWriter, r *http.Request, up Upstream, k tagKey) {
	rec, known := c.store.tag(k)
	if known {
		if c.o.Now().Sub(rec.Checked) < c.o.ManifestTTL {
			if body, mt, ok := c.store.manifest(rec.Digest); ok {
				c.metrics.add(&c.metrics.hits, 1)
				writeManifest(w, r, "hit", rec.Digest, mt, body)
				return
			}
		}
		d, err := c.revalidate(r.Context(), up, k)
		switch {
		case err == nil && d == rec.Digest:
			if body, mt, ok := c.store.manifest(rec.Digest); ok {
				rec.Checked = c.o.Now()
				if err := c.store.setTag(k, rec); err != nil {
					c.log.Warn("recording a revalidated tag", "err", err)
				}
				c.metrics.add(&c.metrics.hits, 1)
				writeManifest(w, r, "hit", rec.Digest, mt, body)
				return
			}
		case err != nil:
			if !c.serveStale(w, r, k, rec, err) {
				c.upstreamError(w, r, k.upstream, "MANIFEST_UNKNOWN", "manifest "+k.repo+":"+k.tag, err)
			}
			return
		}
	}
	c.metrics.add(&c.metrics.misses, 1)
	f, err := c.fetchManifest(r.Context(), up, k.upstream, k.repo, k.tag)
	if err != nil {
		if !known || !c.serveStale(w, r, k, rec, err) {
			c.upstreamError(w, r, k.upstream, "MANIFEST_UNKNOWN", "manifest "+k.repo+":"+k.tag, err)
		}
		return
	}
	if err := c.store.setTag(k, tagRec{Digest: f.d, MediaType: f.mediaType, Checked: c.o.Now()}); err != nil {
		c.log.Warn("recording a tag", "err", err)
	}
	writeManifest(w, r, "miss", f.d, f.mediaType, f.body)
}

// serveStale serves the stored manifest of k after err, unless err says
// the tag is gone upstream or the client left. It reports whether it did.
func (c *Cache) serveStale(w http.ResponseWriter, r *http.Request, k tagKey, rec tagRec, err error) bool {
	if errors.Is(err, ErrNotFound) || r.Context().Err() != nil {
		return false
	}
	body, mt, ok := c.store.manifest(rec.Digest)
	if !ok {
		return false
	}
	c.metrics.add(&c.metrics.stale, 1)
	c.log.Warn("upstream unreachable; serving the stored manifest", "upstream", k.upstream,
		"repo", k.repo, "tag", k.tag, "digest", rec.Digest, "checked", rec.Checked, "err", err)
	writeManifest(w, r, "stale", rec.Digest, mt, body)
	return true
}

// revalidateTimeout bounds a tag's revalidation: a client waits at most
// this long for an upstream that does not answer before it gets the
// stored manifest.
const revalidateTimeout = 10 * time.Second

// downFor is how long an upstream that could not be reached is not asked
// again to revalidate tags: its stored tags are served at once meanwhile.
const downFor = 30 * time.Second

// revalidate returns the digest tag k has upstream now, with one HEAD
// shared by concurrent callers. Digest zero: the upstream did not say.
func (c *Cache) revalidate(ctx context.Context, up Upstream, k tagKey) (v1.Hash, error) {
	c.fmu.Lock()
	until, down := c.down[k.upstream]
	c.fmu.Unlock()
	if down && c.o.Now().Before(until) {
		return v1.Hash{}, fmt.Errorf("%w: %s did not answer at %s; asking again from %s", ErrUnreachable,
			k.upstream, until.Add(-downFor).Format(time.RFC3339), until.Format(time.RFC3339))
	}
	ch := c.mflight.DoChan("HEAD "+k.upstream+"/"+k.repo+":"+k.tag, func() (any, error) {
		hctx, cancel := context.WithTimeout(c.ctx, revalidateTimeout)
		defer cancel()
		m, err := up.Manifest(hctx, k.repo, k.tag, true)
		if err != nil {
			c.metrics.add(&c.metrics.upstreamErrors, 1)
			if !errors.Is(err, ErrNotFound) {
				c.fmu.Lock()
				c.down[k.upstream] = c.o.Now().Add(downFor)
				c.fmu.Unlock()
			}
			return v1.Hash{}, err
		}
		c.fmu.Lock()
		delete(c.down, k.upstream)
		c.fmu.Unlock()
		return m.Digest, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return v1.Hash{}, res.Err
		}
		return res.Val.(v1.Hash), nil
	case <-ctx.Done():
		return v1.Hash{}, ctx.Err()
	}
}

func writeManifest(w http.ResponseWriter, r *http.Request, how string, d v1.Hash, mediaType string, body []byte) {
	h := w.Header()
	h.Set(CacheHeader, how)
	h.Set("Content-Type", mediaType)
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Etag", `"`+d.String()+`"`)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}
