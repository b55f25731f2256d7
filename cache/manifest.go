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
		c.upstreamError(w, r, "MANIFEST_UNKNOWN", err)
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
		hm, err := up.Manifest(r.Context(), k.repo, k.tag, true)
		switch {
		case err == nil && hm.Digest == rec.Digest:
			if body, mt, ok := c.store.manifest(rec.Digest); ok {
				rec.Checked = c.o.Now()
				if err := c.store.setTag(k, rec); err != nil {
					c.log.Warn("recording a revalidated tag", "err", err)
				}
				c.metrics.add(&c.metrics.hits, 1)
				writeManifest(w, r, "hit", rec.Digest, mt, body)
				return
			}
		case err != nil && !errors.Is(err, ErrNotFound) && r.Context().Err() == nil:
			if body, mt, ok := c.store.manifest(rec.Digest); ok {
				c.metrics.add(&c.metrics.upstreamErrors, 1)
				c.metrics.add(&c.metrics.stale, 1)
				c.log.Warn("upstream unreachable; serving the stored manifest", "upstream", k.upstream,
					"repo", k.repo, "tag", k.tag, "digest", rec.Digest, "checked", rec.Checked, "err", err)
				writeManifest(w, r, "stale", rec.Digest, mt, body)
				return
			}
		case err != nil:
			c.upstreamError(w, r, "MANIFEST_UNKNOWN", err)
			return
		}
	}
	c.metrics.add(&c.metrics.misses, 1)
	f, err := c.fetchManifest(r.Context(), up, k.upstream, k.repo, k.tag)
	if err != nil {
		c.upstreamError(w, r, "MANIFEST_UNKNOWN", err)
		return
	}
	if err := c.store.setTag(k, tagRec{Digest: f.d, MediaType: f.mediaType, Checked: c.o.Now()}); err != nil {
		c.log.Warn("recording a tag", "err", err)
	}
	writeManifest(w, r, "miss", f.d, f.mediaType, f.body)
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
