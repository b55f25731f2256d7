package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/oci"
)

// APIVersionHeader is set on every response, as distribution does; clients
// probe /v2/ for it.
const (
	APIVersionHeader = "Docker-Distribution-API-Version"
	APIVersion       = "registry/2.0"
	DigestHeader     = "Docker-Content-Digest"
)

// maxIndexDepth bounds nested indexes (an index of indexes of ...).
const maxIndexDepth = 4

type options struct {
	prefix      string
	sourceNames bool
	logger      *slog.Logger
	auth        *Htpasswd
	realm       string
}

// Option configures New.
type Option func(*options)

// WithPrefix serves every name under prefix (a repository path such as
// "mirror" or "airgap/2026"). Default: none.
func WithPrefix(prefix string) Option { return func(o *options) { o.prefix = prefix } }

// WithSourceNames also serves each image under its source name, with the
// registry host as first segment (docker.io/library/redis). Default: off.
func WithSourceNames(on bool) Option { return func(o *options) { o.sourceNames = on } }

// WithLogger receives warnings (images whose blobs no bundle holds) and
// errors (damaged bundles). Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithBasicAuth requires HTTP basic auth against h on every request,
// /v2/ included, with realm in the WWW-Authenticate challenge
// (default realm "ferry").
func WithBasicAuth(h *Htpasswd, realm string) Option {
	return func(o *options) { o.auth, o.realm = h, realm }
}

// Registry is a read-only registry over bundles. It is an http.Handler.
type Registry struct {
	readers []*bundle.Reader
	o       options
	repos   map[string]*repo
	names   []string            // sorted repository names, for the catalog
	docs    map[v1.Hash]docInfo // every manifest served, learnt once in New
}

// docInfo is what serving a manifest needs without reading it: where it
// is, its media type as settled when New read it, and its size.
type docInfo struct {
	rd   *bundle.Reader
	mt   types.MediaType
	size int
}

// repo is one served repository name.
type repo struct {
	tags      map[string]v1.Hash
	tagList   []string         // sorted
	manifests map[v1.Hash]bool // servable under /manifests/ and /referrers/
	blobs     map[v1.Hash]bool // servable under /blobs/ (manifests included)
	missing   map[v1.Hash]bool // referenced, but in none of the bundles
}

// closure is everything one image reaches.
type closure struct {
	manifests []v1.Hash
	blobs     []v1.Hash
	missing   []v1.Hash
}

// ErrNoImages: none of the bundles holds an image that can be served.
var ErrNoImages = errors.New("no image to serve")

// New indexes the images of readers (in order: for the same name and tag a
// later bundle wins) and reads every manifest once, verifying its digest, to
// learn which digests each name may serve. A damaged manifest is an error
// wrapping bundle.ErrCorrupt. An image whose manifest no bundle holds (a
// delta bundle served without its base) is left out with a warning.
func New(readers []*bundle.Reader, opts ...Option) (*Registry, error) {
	o := options{logger: slog.New(slog.DiscardHandler), realm: "ferry"}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.realm == "" {
		o.realm = "ferry"
	}
	prefix, err := cleanPrefix(o.prefix)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOptions, err)
	}
	o.prefix = prefix
	if len(readers) == 0 {
		return nil, fmt.Errorf("%w: no bundle given", ErrNoImages)
	}
	s := &Registry{readers: readers, o: o, repos: map[string]*repo{}, docs: map[v1.Hash]docInfo{}}
	closures := map[v1.Hash]*closure{}
	for _, rd := range readers {
		for _, im := range rd.Record().Images {
			h, err := bundle.ParseDigest(im.Digest)
			if err != nil {
				return nil, fmt.Errorf("bundle %s: image %s: %w", rd.Path(), im.Source, err)
			}
			c, ok := closures[h]
			if !ok {
				if s.holder(h) == nil {
					o.logger.Warn("image left out: no bundle holds its manifest (a delta bundle served without its base?)",
						"target", im.Target, "tags", strings.Join(im.Tags, ","), "digest", h.String(), "bundle", rd.Path())
					continue
				}
				c = &closure{}
				if err := s.walk(h, types.MediaType(im.MediaType), c, map[v1.Hash]bool{}, 0); err != nil {
					return nil, fmt.Errorf("image %s (%s:%s): %w", im.Source, im.Target, strings.Join(im.Tags, ","), err)
				}
				if len(c.missing) > 0 {
					o.logger.Warn("image served, but some of its blobs are in none of the bundles (a delta bundle served without its base?); pulls will fail with BLOB_UNKNOWN",
						"target", im.Target, "digest", h.String(), "missing", len(c.missing), "first", c.missing[0].String())
				}
				closures[h] = c
			}
			names := []string{joinPath(prefix, im.Target)}
			if o.sourceNames {
				sn, err := SourceName(im.Source)
				if err != nil {
					return nil, fmt.Errorf("bundle %s: image %s: %w", rd.Path(), im.Target, err)
				}
				names = append(names, joinPath(prefix, sn))
			}
			for _, n := range names {
				s.add(n, im.Tags, h, c)
			}
		}
	}
	if len(s.repos) == 0 {
		return nil, ErrNoImages
	}
	for n, rp := range s.repos {
		s.names = append(s.names, n)
		for t := range rp.tags {
			rp.tagList = append(rp.tagList, t)
		}
		sort.Strings(rp.tagList)
	}
	sort.Strings(s.names)
	return s, nil
}

func (s *Registry) add(name string, tags []string, h v1.Hash, c *closure) {
	rp := s.repos[name]
	if rp == nil {
		rp = &repo{tags: map[string]v1.Hash{}, manifests: map[v1.Hash]bool{}, blobs: map[v1.Hash]bool{}, missing: map[v1.Hash]bool{}}
		s.repos[name] = rp
	}
	for _, t := range tags {
		if old, ok := rp.tags[t]; ok && old != h {
			s.o.logger.Warn("tag given twice; the later bundle wins", "name", name, "tag", t, "was", old.String(), "now", h.String())
		}
		rp.tags[t] = h
	}
	for _, m := range c.manifests {
		rp.manifests[m] = true
		rp.blobs[m] = true
	}
	for _, b := range c.blobs {
		rp.blobs[b] = true
	}
	for _, b := range c.missing {
		rp.missing[b] = true
	}
}

// holder returns the first bundle holding h, or nil.
func (s *Registry) holder(h v1.Hash) *bundle.Reader {
	for _, rd := range s.readers {
		if rd.Has(h) {
			return rd
		}
	}
	return nil
}

// manifest reads and verifies manifest h, with its media type (declared,
// else the one hinted, else guessed from its shape).
func (s *Registry) manifest(h v1.Hash, hint types.MediaType) ([]byte, types.MediaType, error) {
	rd := s.holder(h)
	if rd == nil {
		return nil, "", fmt.Errorf("manifest %s: %w", h, bundle.ErrBlobNotFound)
	}
	data, mt, err := rd.Manifest(h)
	if err != nil {
		return nil, "", fmt.Errorf("bundle %s: %w", rd.Path(), err)
	}
	if mt == "" {
		mt = hint
	}
	if mt == "" {
		if mt, err = oci.MediaTypeOf(data); err != nil {
			return nil, "", fmt.Errorf("bundle %s: %w: manifest %s: %v", rd.Path(), bundle.ErrCorrupt, h, err)
		}
	}
	return data, mt, nil
}

// walk collects what manifest h reaches, across all bundles.
func (s *Registry) walk(h v1.Hash, hint types.MediaType, c *closure, seen map[v1.Hash]bool, depth int) error {
	if seen[h] {
		return nil
	}
	seen[h] = true
	if depth > maxIndexDepth {
		return fmt.Errorf("%w: indexes nested more than %d deep at %s", bundle.ErrCorrupt, maxIndexDepth, h)
	}
	if s.holder(h) == nil {
		c.missing = append(c.missing, h)
		return nil
	}
	data, mt, err := s.manifest(h, hint)
	if err != nil {
		return err
	}
	if _, known := s.docs[h]; !known {
		s.docs[h] = docInfo{rd: s.holder(h), mt: mt, size: len(data)}
	}
	c.manifests = append(c.manifests, h)
	refs, err := oci.Refs(mt, data)
	if err != nil {
		return fmt.Errorf("%w: manifest %s: %v", bundle.ErrCorrupt, h, err)
	}
	for _, d := range refs {
		if d.Digest.Algorithm != "sha256" {
			c.missing = append(c.missing, d.Digest)
			continue
		}
		if oci.KindOf(d.MediaType) != oci.KindUnknown {
			if err := s.walk(d.Digest, d.MediaType, c, seen, depth+1); err != nil {
				return err
			}
			continue
		}
		if seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		if s.holder(d.Digest) == nil {
			c.missing = append(c.missing, d.Digest)
			continue
		}
		c.blobs = append(c.blobs, d.Digest)
	}
	return nil
}

// Names returns every repository name served, sorted.
func (s *Registry) Names() []string { return append([]string(nil), s.names...) }

// Tags returns the tags served for name, sorted.
func (s *Registry) Tags(name string) []string {
	if rp := s.repos[name]; rp != nil {
		return append([]string(nil), rp.tagList...)
	}
	return nil
}

// ServeHTTP implements the pull side of the OCI distribution API.
func (s *Registry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(APIVersionHeader, APIVersion)
	if s.o.auth != nil {
		user, pass, ok := r.BasicAuth()
		if !ok || !s.o.auth.Check(user, pass) {
			w.Header().Set("WWW-Authenticate", `Basic realm=`+strconv.Quote(s.o.realm))
			WriteError(w, r, http.StatusUnauthorized, CodeUnauthorized, "authentication required", nil)
			return
		}
	}
	p := r.URL.Path
	if p != "/v2" && !strings.HasPrefix(p, "/v2/") {
		WriteError(w, r, http.StatusNotFound, CodeNotFound, "not a registry API path", nil)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		WriteError(w, r, http.StatusMethodNotAllowed, CodeUnsupported,
			"this registry is read-only: it serves a bundle file (ferry serve); push to a registry with ferry import", nil)
		return
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(p, "/v2"), "/")
	if rest == "" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "3")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, "{}\n")
		}
		return
	}
	if rest == "_catalog" {
		s.serveList(w, r, "/v2/_catalog", "repositories", s.names, nil)
		return
	}
	segs := strings.Split(rest, "/")
	n := len(segs)
	if n < 3 {
		WriteError(w, r, http.StatusNotFound, CodeNotFound, "no such endpoint", nil)
		return
	}
	name, kind, ref := strings.Join(segs[:n-2], "/"), segs[n-2], segs[n-1]
	isTags := kind == "tags" && ref == "list"
	if !isTags && kind != "manifests" && kind != "blobs" && kind != "referrers" {
		WriteError(w, r, http.StatusNotFound, CodeNotFound, "no such endpoint", nil)
		return
	}
	rp := s.repos[name]
	if rp == nil {
		WriteError(w, r, http.StatusNotFound, CodeNameUnknown, "repository name not known to registry", map[string]string{"name": name})
		return
	}
	switch kind {
	case "tags":
		s.serveList(w, r, "/v2/"+name+"/tags/list", "tags", rp.tagList, map[string]any{"name": name})
	case "manifests":
		s.serveManifest(w, r, name, rp, ref)
	case "blobs":
		s.serveBlob(w, r, name, rp, ref)
	case "referrers":
		s.serveReferrers(w, r, rp, ref)
	}
}

// parseDigest parses a digest from a URL; ok is false after an error
// response (400 DIGEST_INVALID for a malformed one, 404 code for a digest
// this registry cannot hold, such as sha512).
func parseDigest(w http.ResponseWriter, r *http.Request, ref, code string) (v1.Hash, bool) {
	h, err := bundle.ParseDigest(ref)
	switch {
	case err == nil:
		return h, true
	case errors.Is(err, bundle.ErrUnsupported):
		WriteError(w, r, http.StatusNotFound, code, "unknown to registry: only sha256 digests are stored", map[string]string{"digest": ref})
	default:
		WriteError(w, r, http.StatusBadRequest, CodeDigestInvalid, "provided digest is not a valid sha256 digest", map[string]string{"digest": ref})
	}
	return v1.Hash{}, false
}

func (s *Registry) serveManifest(w http.ResponseWriter, r *http.Request, name string, rp *repo, ref string) {
	var h v1.Hash
	if strings.Contains(ref, ":") {
		var ok bool
		if h, ok = parseDigest(w, r, ref, CodeManifestUnknown); !ok {
			return
		}
		if !rp.manifests[h] {
			WriteError(w, r, http.StatusNotFound, CodeManifestUnknown, "manifest unknown to registry", map[string]string{"name": name, "digest": ref})
			return
		}
	} else {
		var ok bool
		if h, ok = rp.tags[ref]; !ok {
			WriteError(w, r, http.StatusNotFound, CodeManifestUnknown, "manifest unknown to registry", map[string]string{"name": name, "tag": ref})
			return
		}
	}
	// HEAD and a matching If-None-Match are answered from what New learnt;
	// only a GET reads the manifest, verified against its digest.
	doc := s.docs[h]
	etag := `"` + h.String() + `"`
	hd := w.Header()
	hd.Set("Content-Type", string(doc.mt))
	hd.Set(DigestHeader, h.String())
	hd.Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hd.Set("Content-Length", strconv.Itoa(doc.size))
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	data, _, err := doc.rd.Manifest(h)
	if err != nil {
		s.o.logger.Error("reading manifest", "name", name, "reference", ref, "bundle", doc.rd.Path(), "error", err)
		hd.Del("Content-Length")
		WriteError(w, r, http.StatusInternalServerError, CodeUnknown, "the bundle could not be read: "+err.Error()+" (compare the bundle with its .sha256 file, run ferry verify)", nil)
		return
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

func (s *Registry) serveBlob(w http.ResponseWriter, r *http.Request, name string, rp *repo, ref string) {
	h, ok := parseDigest(w, r, ref, CodeBlobUnknown)
	if !ok {
		return
	}
	rd := s.holder(h)
	var sec *io.SectionReader
	if rp.blobs[h] && rd != nil {
		sec, _ = rd.Section(h) // cannot fail: rd holds h
	}
	if sec == nil {
		WriteError(w, r, http.StatusNotFound, CodeBlobUnknown, "blob unknown to registry", map[string]string{"name": name, "digest": ref})
		return
	}
	etag := `"` + h.String() + `"`
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set(DigestHeader, h.String())
	hd.Set("ETag", etag)
	hd.Set("Accept-Ranges", "bytes")
	hd.Set("Cache-Control", "max-age=31536000")
	if r.Header.Get("Range") != "" && r.Method == http.MethodGet {
		// A part of the blob cannot be checked against its digest: the raw
		// bytes of the section, as the client asked.
		http.ServeContent(w, r, "", time.Time{}, sec)
		return
	}
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hd.Set("Content-Length", strconv.FormatInt(sec.Size(), 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusOK)
	if err := copyVerified(w, bundle.NewVerifier(sec, h, sec.Size())); err != nil {
		s.o.logger.Error("blob response aborted: the bundle's bytes do not match their digest (compare the bundle with its .sha256 file, run ferry verify)",
			"digest", h.String(), "bundle", rd.Path(), "error", err)
		// Abort the connection: the client sees a truncated body, never
		// the complete wrong bytes.
		panic(http.ErrAbortHandler)
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// copyVerified copies a verifying reader to w, never writing the bytes of a
// read that returned an error (the verifier reports a mismatch on the read
// that completes the blob, so the last chunk is withheld).
func copyVerified(w io.Writer, r io.Reader) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := r.Read(buf)
		if err != nil && err != io.EOF {
			return err
		}
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil // the client went away; nothing to report
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

// emptyIndex answers the referrers API for a manifest nothing refers to.
const emptyIndex = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}` + "\n"

// referrersOf returns the referrers list of h: the manifests of the
// referrers tag schema's sha256-<hex> index when the bundle carries one
// (export --with-referrers writes it), filtered by artifactType.
func (s *Registry) referrersOf(rp *repo, h v1.Hash, artifactType string) []byte {
	d, ok := rp.tags[oci.DigestTag(h)]
	if !ok {
		return []byte(emptyIndex)
	}
	data, _, err := s.manifest(d, "")
	if err != nil {
		return []byte(emptyIndex)
	}
	var idx v1.IndexManifest
	if json.Unmarshal(data, &idx) != nil {
		return []byte(emptyIndex)
	}
	out := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}}
	for _, m := range idx.Manifests {
		if artifactType == "" || m.ArtifactType == artifactType {
			out.Manifests = append(out.Manifests, m)
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return []byte(emptyIndex)
	}
	return append(b, '\n')
}

func (s *Registry) serveReferrers(w http.ResponseWriter, r *http.Request, rp *repo, ref string) {
	h, ok := parseDigest(w, r, ref, CodeManifestUnknown)
	if !ok {
		return
	}
	if !rp.manifests[h] {
		WriteError(w, r, http.StatusNotFound, CodeManifestUnknown, "manifest unknown to registry", map[string]string{"digest": ref})
		return
	}
	body := s.referrersOf(rp, h, r.URL.Query().Get("artifactType"))
	hd := w.Header()
	hd.Set("Content-Type", string(types.OCIImageIndex))
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	if r.URL.Query().Has("artifactType") {
		hd.Set("OCI-Filters-Applied", "artifactType")
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// serveList answers the tags list and the catalog: entries after ?last=,
// at most ?n= of them, with a Link header to the next page when more remain.
func (s *Registry) serveList(w http.ResponseWriter, r *http.Request, path, key string, all []string, extra map[string]any) {
	q := r.URL.Query()
	last := q.Get("last")
	limit := -1
	if v := q.Get("n"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			WriteError(w, r, http.StatusBadRequest, CodePaginationNumber, "invalid number of results requested", map[string]string{"n": v})
			return
		}
		limit = n
	}
	start := 0
	if last != "" {
		start = sort.Search(len(all), func(i int) bool { return all[i] > last })
	}
	page := all[start:]
	if limit >= 0 && limit < len(page) {
		page = page[:limit]
		if limit > 0 {
			next := url.Values{"n": {strconv.Itoa(limit)}, "last": {page[len(page)-1]}}
			w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, next.Encode()))
		}
	}
	body := map[string]any{key: append([]string{}, page...)}
	for k, v := range extra {
		body[k] = v
	}
	writeJSON(w, r, body)
}

func writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		WriteError(w, r, http.StatusInternalServerError, CodeUnknown, err.Error(), nil)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(b)
	}
}
