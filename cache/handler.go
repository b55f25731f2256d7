package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/names"
	"github.com/ferry-airgap/ferry/serve"
)

// Headers the cache adds.
const (
	// CacheHeader says how a blob or manifest was served: hit, miss, or
	// stale (a tag served from the store because the upstream could not be
	// asked).
	CacheHeader = "X-Ferry-Cache"
	// UpstreamHeader names the upstream a request went to.
	UpstreamHeader = "X-Ferry-Upstream"
)

// truncateName shortens a hostile name for an error message.
func truncateName(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// ServeHTTP answers the pull side of the distribution API for every
// upstream (/v2/NAME/REPO/manifests/REF, /v2/NAME/REPO/blobs/DIGEST, also
// containerd's /v2/REPO/...?ns=NAME), and /metrics.
func (c *Cache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(serve.APIVersionHeader, serve.APIVersion)
	if c.o.Auth != nil {
		user, pass, ok := r.BasicAuth()
		if !ok || !c.o.Auth.Check(user, pass) {
			w.Header().Set("WWW-Authenticate", `Basic realm="ferry-cache"`)
			serve.WriteError(w, r, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required", nil)
			return
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		serve.WriteError(w, r, http.StatusMethodNotAllowed, "UNSUPPORTED", "the cache is read-only", nil)
		return
	}
	p := r.URL.Path
	switch {
	case p == "/metrics":
		s := c.metrics.Snapshot()
		s.Store = c.store.size()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_ = writeMetrics(w, s, c.o.MaxSize)
		return
	case p == "/v2/" || p == "/v2":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
		return
	case !strings.HasPrefix(p, "/v2/"):
		serve.WriteError(w, r, http.StatusNotFound, "NOT_FOUND", "not a registry path", nil)
		return
	}
	c.serveV2(w, r, strings.TrimPrefix(p, "/v2/"))
}

func (c *Cache) serveV2(w http.ResponseWriter, r *http.Request, p string) {
	var name, ref, what string
	if i := strings.LastIndex(p, "/manifests/"); i > 0 {
		name, ref, what = p[:i], p[i+len("/manifests/"):], "manifest"
	} else if i := strings.LastIndex(p, "/blobs/"); i > 0 {
		name, ref, what = p[:i], p[i+len("/blobs/"):], "blob"
	} else if n, ok := strings.CutSuffix(p, "/tags/list"); ok && n != "" {
		name, what = n, "tags"
	} else {
		serve.WriteError(w, r, http.StatusNotFound, "UNSUPPORTED", "the cache serves manifests, blobs and tag lists only", nil)
		return
	}
	upName, repo, ok := c.route(name, r.URL.Query().Get("ns"))
	if !ok {
		serve.WriteError(w, r, http.StatusNotFound, "NAME_UNKNOWN", "no upstream for "+strconv.Quote(name)+": the path starts with the upstream's name, e.g. /v2/docker.io/library/redis/", nil)
		return
	}
	if !names.ValidRepository(repo) {
		serve.WriteError(w, r, http.StatusBadRequest, "NAME_INVALID", fmt.Sprintf("invalid repository name %q: want %s, at most %d characters",
			truncateName(repo), names.RepositoryRules, names.MaxNameLength), nil)
		return
	}
	w.Header().Set(UpstreamHeader, upName)
	up := c.o.Upstreams[upName]
	if what == "tags" {
		c.serveTags(w, r, up, upName, repo)
		return
	}
	if what == "blob" {
		d, err := v1.NewHash(ref)
		if err != nil || d.Algorithm != "sha256" {
			serve.WriteError(w, r, http.StatusBadRequest, "DIGEST_INVALID", "invalid digest "+strconv.Quote(ref), nil)
			return
		}
		c.serveBlob(w, r, up, upName, repo, d)
		return
	}
	if d, err := v1.NewHash(ref); err == nil && d.Algorithm == "sha256" {
		c.serveManifestDigest(w, r, up, upName, repo, d)
		return
	}
	if !names.ValidTag(ref) {
		serve.WriteError(w, r, http.StatusBadRequest, "MANIFEST_INVALID", "invalid tag or digest "+strconv.Quote(ref), nil)
		return
	}
	c.serveManifestTag(w, r, up, tagKey{upstream: upName, repo: repo, tag: ref})
}

// route splits NAME/REPO into the upstream and the repository: the first
// segments name the upstream; failing that, containerd's ns query does;
// failing that, docker.io, for Docker's registry-mirrors.
func (c *Cache) route(name, ns string) (upstream, repo string, ok bool) {
	for _, n := range c.names {
		if rest, found := strings.CutPrefix(name, n+"/"); found && rest != "" {
			return n, rest, true
		}
	}
	if _, found := c.o.Upstreams[ns]; found {
		return ns, name, true
	}
	// Docker's registry-mirrors sends Docker Hub paths as they are, with no
	// ns: /v2/library/redis/... A Hub namespace never contains a dot or a
	// colon: a first segment that does names an upstream the cache lacks.
	first, _, _ := strings.Cut(name, "/")
	if _, found := c.o.Upstreams[DockerHubName]; found && ns == "" && !strings.ContainsAny(first, ".:") {
		return DockerHubName, name, true
	}
	return "", "", false
}

// DockerHubName is the upstream that paths without an upstream name (and
// without containerd's ns) go to, when there is one by that name.
const DockerHubName = "docker.io"

func (c *Cache) serveBlob(w http.ResponseWriter, r *http.Request, up Upstream, upName, repo string, d v1.Hash) {
	release := c.store.acquire(d)
	defer release()
	h := w.Header()
	h.Set(serve.DigestHeader, d.String())
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Etag", `"`+d.String()+`"`)
	if f, ok := c.storedBlob(d); ok {
		defer func() { _ = f.Close() }()
		c.metrics.add(&c.metrics.hits, 1)
		h.Set(CacheHeader, "hit")
		if c.redirectBlob(w, r, d) {
			return
		}
		cw := &countWriter{ResponseWriter: w}
		http.ServeContent(cw, r, "", time.Time{}, f)
		c.metrics.add(&c.metrics.bytesServed, cw.n)
		return
	}
	c.metrics.add(&c.metrics.misses, 1)
	h.Set(CacheHeader, "miss")
	if r.Method == http.MethodHead {
		_, size, err := up.Blob(r.Context(), repo, d, true)
		if err != nil {
			c.upstreamError(w, r, upName, "BLOB_UNKNOWN", "blob "+d.String(), err)
			return
		}
		if size >= 0 {
			h.Set("Content-Length", strconv.FormatInt(size, 10))
		}
		return
	}
	dl := c.flight(upName, up, repo, d)
	size, err := dl.wait(r.Context())
	if err != nil && dl.repo != repo && r.Context().Err() == nil {
		// The download this request joined was asked from another
		// repository, which the upstream may not grant (404, 401): ask
		// for this one (see flightKey).
		dl = c.flight(upName, up, repo, d)
		size, err = dl.wait(r.Context())
	}
	if err != nil {
		c.upstreamError(w, r, upName, "BLOB_UNKNOWN", "blob "+d.String(), err)
		return
	}
	rc, err := dl.open(r.Context(), func() (blobReader, error) {
		f, _, err := c.store.b.openBlob(d)
		return f, err
	})
	if err != nil {
		c.upstreamError(w, r, upName, "BLOB_UNKNOWN", "blob "+d.String(), err)
		return
	}
	defer func() { _ = rc.Close() }()
	if size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(size, 10))
	}
	w.WriteHeader(http.StatusOK)
	n, err := io.Copy(w, rc)
	c.metrics.add(&c.metrics.bytesServed, n)
	if err != nil && r.Context().Err() == nil {
		c.log.Warn("aborting a blob response", "digest", d, "repo", repo, "err", err)
		panic(http.ErrAbortHandler) // the client must not take a partial blob as whole
	}
}

// redirectBlob answers a GET of a stored blob with 307 to a presigned
// URL of its object (Options.Redirect), and reports whether it did.
// Shortcut: the client reads the object straight from the store. Premise:
// the object storedBlob found checked (hashed by this replica, or
// uploaded by it after the check) is not replaced before the client reads
// it; objects are written only by replicas, each after checking the
// bytes, so the only change is a removal, which the client sees as an
// error, and clients check a blob's digest themselves.
// Test: TestCacheS3Redirect.
func (c *Cache) redirectBlob(w http.ResponseWriter, r *http.Request, d v1.Hash) bool {
	p, ok := c.store.b.(interface {
		presign(v1.Hash, time.Duration) (string, error)
	})
	if c.o.Redirect <= 0 || r.Method != http.MethodGet || !ok {
		return false
	}
	u, err := p.presign(d, c.o.Redirect)
	if err != nil {
		c.log.Warn("signing a blob URL; serving the blob instead", "digest", d, "err", err)
		return false
	}
	c.metrics.add(&c.metrics.redirects, 1)
	http.Redirect(w, r, u, http.StatusTemporaryRedirect)
	return true
}

// storedBlob opens stored blob d for serving. Shortcut: a blob this
// process has hashed (downloaded and checked, or checked on its first hit
// since start) is served from its file without hashing it again. Premise:
// while the process runs, nothing but the cache writes its files (the
// lock on DIR keeps other caches out); a size change is still caught by
// openBlob's fstat on every hit. Files found at start are not trusted:
// each is hashed on its first hit, and one whose bytes do not match its
// name is dropped and fetched again, so damage done while the cache was
// stopped (or a write the kernel lost) is never served.
// Tests: TestStoredBlobDamagedWhileStoppedIsFetchedAgain, TestStoredBlobTruncatedWhileRunning.
func (c *Cache) storedBlob(d v1.Hash) (blobReader, bool) {
	f, size, ok := c.store.openBlob(d)
	if !ok || c.store.blobVerified(d) {
		return f, ok
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err == nil && (n != size || hex.EncodeToString(h.Sum(nil)) != d.Hex) {
		err = fmt.Errorf("%w: %d bytes, sha256:%x", errCorrupt, n, h.Sum(nil))
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		_ = f.Close()
		c.log.Warn("stored blob does not match its digest or cannot be read; fetching it again", "digest", d, "size", n, "err", err)
	}
	c.store.blobChecked(d, err == nil, err)
	return f, err == nil
}

// serveTags passes a tag list through from the upstream, rewriting the
// next-page link, and keeps a copy of each page: when the upstream cannot
// be reached the copy is served (stale), so that tag filters still work.
func (c *Cache) serveTags(w http.ResponseWriter, r *http.Request, up Upstream, upName, repo string) {
	q := url.Values{}
	for _, k := range []string{"n", "last"} {
		if v := r.URL.Query().Get(k); v != "" {
			q.Set(k, v)
		}
	}
	how := "miss"
	body, next, err := up.Tags(r.Context(), repo, q.Encode())
	if err == nil {
		if perr := c.store.putList(upName, repo, q.Encode(), tagList{Body: body, Next: next, Fetched: c.o.Now()}); perr != nil {
			c.log.Warn("storing a tag list", "err", perr)
		}
	} else {
		c.metrics.add(&c.metrics.upstreamErrors, 1)
		l, ok := c.store.list(upName, repo, q.Encode())
		if !ok || errors.Is(err, ErrNotFound) || r.Context().Err() != nil {
			c.upstreamError(w, r, upName, "NAME_UNKNOWN", "the tag list of "+repo, err)
			return
		}
		c.metrics.add(&c.metrics.stale, 1)
		c.log.Warn("upstream unreachable; serving the stored tag list", "upstream", upName, "repo", repo,
			"fetched", l.Fetched, "err", err)
		body, next, how = l.Body, l.Next, "stale"
	}
	h := w.Header()
	h.Set(CacheHeader, how)
	if next != "" {
		nq, _ := url.ParseQuery(next)
		keep := url.Values{}
		for _, k := range []string{"n", "last"} {
			if v := nq.Get(k); v != "" {
				keep.Set(k, v)
			}
		}
		if ns := r.URL.Query().Get("ns"); ns != "" {
			keep.Set("ns", ns)
		}
		h.Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, keep.Encode()))
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// upstreamError answers a failed upstream request. The client is told
// what failed by the upstream's configured name and a short reason; the
// error itself (the upstream's host, URL, status, hint) goes to the log
// only, since clients of the cache need not know where its upstreams are.
func (c *Cache) upstreamError(w http.ResponseWriter, r *http.Request, upName, code, subject string, err error) {
	switch {
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// the client left
	case errors.Is(err, ErrNotFound):
		serve.WriteError(w, r, http.StatusNotFound, code, fmt.Sprintf("%s: not found in upstream %q", subject, upName), nil)
	case errors.Is(err, ErrDigestMismatch):
		c.log.Warn("upstream request failed", "upstream", upName, "path", r.URL.Path, "err", err)
		serve.WriteError(w, r, http.StatusBadGateway, "UNAVAILABLE",
			fmt.Sprintf("%s: upstream %q sent bytes that do not match their digest; nothing was kept", subject, upName), nil)
	default:
		c.log.Warn("upstream request failed", "upstream", upName, "path", r.URL.Path, "err", err)
		serve.WriteError(w, r, http.StatusBadGateway, "UNAVAILABLE",
			fmt.Sprintf("%s: upstream %q: %s; the cache's log has the details", subject, upName, publicReason(err)), nil)
	}
}

// publicReason is what a client may be told about err: the reason an
// upstream error carries, or a generic one.
func publicReason(err error) string {
	var pe interface{ PublicReason() string }
	switch {
	case errors.As(err, &pe) && pe.PublicReason() != "":
		return pe.PublicReason()
	case errors.Is(err, errClosing):
		return "the cache is shutting down"
	case errors.Is(err, errStalled):
		return "the upstream stopped sending"
	case errors.Is(err, ErrUnreachable):
		return "the upstream could not be reached"
	}
	return "the request failed"
}

type countWriter struct {
	http.ResponseWriter
	n int64
}

func (w *countWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}
