package harness

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Request kinds the Counter tells apart.
const (
	KindPing      = "ping"      // /v2/
	KindManifest  = "manifest"  // /v2/NAME/manifests/REF
	KindBlob      = "blob"      // /v2/NAME/blobs/DIGEST
	KindUpload    = "upload"    // /v2/NAME/blobs/uploads/...
	KindTags      = "tags"      // /v2/NAME/tags/list
	KindCatalog   = "catalog"   // /v2/_catalog
	KindReferrers = "referrers" // /v2/NAME/referrers/DIGEST
	KindToken     = "token"     // TokenPath
	KindOther     = "other"
)

// Kind classifies a request path.
func Kind(path string) string {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	switch {
	case path == TokenPath:
		return KindToken
	case path == "/v2/" || path == "/v2":
		return KindPing
	case path == "/v2/_catalog":
		return KindCatalog
	case !strings.HasPrefix(path, "/v2/"):
		return KindOther
	case strings.HasSuffix(path, "/tags/list"):
		return KindTags
	case strings.Contains(path, "/blobs/uploads"):
		return KindUpload
	case strings.Contains(path, "/manifests/"):
		return KindManifest
	case strings.Contains(path, "/blobs/"):
		return KindBlob
	case strings.Contains(path, "/referrers/"):
		return KindReferrers
	}
	return KindOther
}

// Counter counts requests by method and kind. It is safe for concurrent use.
type Counter struct {
	mu   sync.Mutex
	reqs []Request
	gen  int // Reset count
}

// add records r and returns a function that sets its status later.
func (c *Counter) add(r Request) func(status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, r)
	i, gen := len(c.reqs)-1, c.gen
	return func(status int) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.gen == gen { // not Reset since
			c.reqs[i].Status = status
		}
	}
}

// Requests returns every request counted since the last Reset.
func (c *Counter) Requests() []Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Request(nil), c.reqs...)
}

// Count returns how many requests had this method ("" = any) and kind
// ("" = any).
func (c *Counter) Count(method, kind string) int {
	n := 0
	for _, r := range c.Requests() {
		if (method == "" || r.Method == method) && (kind == "" || Kind(r.Path) == kind) {
			n++
		}
	}
	return n
}

// Total returns the number of requests.
func (c *Counter) Total() int { return c.Count("", "") }

// Snapshot returns counts keyed "METHOD kind", e.g. "GET manifest".
func (c *Counter) Snapshot() map[string]int {
	m := map[string]int{}
	for _, r := range c.Requests() {
		m[r.Method+" "+Kind(r.Path)]++
	}
	return m
}

// String lists the counts in a stable order, for logs.
func (c *Counter) String() string {
	m := c.Snapshot()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

// Reset forgets all counted requests.
func (c *Counter) Reset() {
	c.mu.Lock()
	c.reqs = nil
	c.gen++
	c.mu.Unlock()
}

// recorder records requests served by a handler.
type recorder struct{ Counter }

func (rec *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Counted on arrival, so a client that has read its response sees
		// the request counted; the status is filled in when it is known.
		done := rec.add(Request{Method: r.Method, Path: r.URL.RequestURI()})
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		done(sw.status)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// newForwarder proxies to target, served at frontURL. Absolute URLs of the
// target in Location and WWW-Authenticate headers are rewritten to the
// front, so uploads and token requests come back through it. extra handlers
// answer their exact paths themselves.
func newForwarder(target *Registry, frontURL string, rec *recorder, extra map[string]http.Handler) http.Handler {
	tu, err := url.Parse(target.URL)
	if err != nil {
		panic(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(tu)
			pr.Out.Header.Del("X-Forwarded-For")
		},
		Transport:     target.Transport(),
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			for _, h := range []string{"Location", "Www-Authenticate"} {
				if v := resp.Header.Get(h); v != "" {
					resp.Header.Set(h, strings.ReplaceAll(v, target.URL, frontURL))
				}
			}
			return nil
		},
	}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if x, ok := extra[r.URL.Path]; ok {
			x.ServeHTTP(w, r)
			return
		}
		rp.ServeHTTP(w, r)
	})
	if rec != nil {
		h = rec.wrap(h)
	}
	return h
}

// CountingProxy starts a reverse proxy on 127.0.0.1 in front of target and
// returns it as a Registry (same users and CA; HTTPS when target is HTTPS)
// with a Counter of every request it forwarded, token requests included.
func CountingProxy(t testing.TB, target *Registry) (*Registry, *Counter) {
	t.Helper()
	rec := &recorder{}
	srv, setHandler := startLateServer(t, target.CA, target.TLS(), false)
	setHandler(newForwarder(target, srv.URL, rec, nil))
	return proxyRegistry(srv, target, rec), &rec.Counter
}

// startLateServer starts a server on 127.0.0.1 (HTTPS with a certificate
// of ca when useTLS) whose handler is given after it listens, since a
// forwarder needs the server's own URL: call setHandler before any
// request. The handler is read through an atomic pointer, so the race
// detector sees no unsynchronised write. quiet drops the server's error
// log; the server is closed at cleanup.
func startLateServer(t testing.TB, ca *CA, useTLS, quiet bool) (srv *httptest.Server, setHandler func(http.Handler)) {
	t.Helper()
	var h atomic.Pointer[http.Handler]
	srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*h.Load()).ServeHTTP(w, r)
	}))
	if quiet {
		srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	}
	if useTLS {
		srv.TLS = ca.TLSConfig()
		srv.TLS.Certificates = []tls.Certificate{ca.IssueTLS(t)}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, func(handler http.Handler) { h.Store(&handler) }
}

// proxyRegistry describes the proxy srv in front of target as a Registry:
// target's users, CA and storage; the requests rec counted.
func proxyRegistry(srv *httptest.Server, target *Registry, rec *recorder) *Registry {
	return &Registry{
		URL:           srv.URL,
		Host:          strings.TrimPrefix(strings.TrimPrefix(srv.URL, "https://"), "http://"),
		CAFile:        target.CAFile,
		CA:            target.CA,
		Users:         target.Users,
		Dir:           target.Dir,
		Requests:      rec.Requests,
		TokenRequests: target.TokenRequests,
	}
}
