package cache

// This file is the only one in the package that knows how ferry talks to
// registries: it implements Upstream on top of internal/registry. The rest
// of the cache sees only the Upstream interface.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/ferry-airgap/ferry/internal/names"
	"github.com/ferry-airgap/ferry/internal/registry"
)

// manifestAccept is what the cache asks an upstream for: every manifest
// and index type, so that one stored copy serves every client.
var manifestAccept = strings.Join([]string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

// RegistryUpstream reads one upstream registry through ferry's registry
// client: its TLS settings, retries and credential chain, and one
// authenticated handle per repository on one connection per registry (one
// ping, one token per scope set, renewed by the handle). Safe for
// concurrent use.
type RegistryUpstream struct {
	client *registry.Client
	kc     *registry.Keychain
	host   string
	hub    bool // Docker Hub: a one-segment repository is library/NAME

	once sync.Once
	conn *registry.Host
	err  error
}

// NewRegistryUpstream returns the upstream at rawURL ("https://quay.io",
// "http://127.0.0.1:5000", or a bare host, which means https).
// Credentials come from kc for the URL's host.
func NewRegistryUpstream(client *registry.Client, kc *registry.Keychain, rawURL string) (*RegistryUpstream, error) {
	scheme, host := "https", rawURL
	if s, rest, ok := strings.Cut(rawURL, "://"); ok {
		scheme, host = strings.ToLower(s), rest
	}
	host = strings.TrimSuffix(host, "/")
	if scheme != "https" && scheme != "http" {
		return nil, fmt.Errorf("%w: upstream %q: scheme must be http or https", ErrConfig, rawURL)
	}
	if host == "" || strings.ContainsAny(host, "/?#@ ") || !names.ValidHost(host) {
		return nil, fmt.Errorf("%w: upstream %q: want a host[:port], optionally with http:// or https://", ErrConfig, rawURL)
	}
	if scheme == "http" && !isLoopback(host) {
		return nil, fmt.Errorf("%w: upstream %q: plain http is allowed to loopback addresses only (127.0.0.1, ::1, localhost); give the upstream as https://%s", ErrConfig, rawURL, host)
	}
	hub := names.IsDockerHub(host)
	if hub {
		host = names.DockerHubAPI // the API host; credentials are looked up as docker.io
	}
	if scheme == "http" {
		client.Configure(host, registry.HostConfig{PlainHTTP: true})
	}
	return &RegistryUpstream{client: client, kc: kc, host: host, hub: hub}, nil
}

// isLoopback reports whether host[:port] is a loopback address or
// localhost: the only hosts the cache speaks plain http to.
func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// String names the upstream (its host), for logs and errors.
func (u *RegistryUpstream) String() string { return u.host }

// connection returns the one connection to the upstream, with the
// keychain's credential for it. A failure to resolve credentials is kept;
// network failures surface per request (the handle retries them).
func (u *RegistryUpstream) connection() (*registry.Host, error) {
	u.once.Do(func() {
		auth, err := u.kc.Resolve(u.host)
		if err != nil {
			u.err = fmt.Errorf("credentials for %s: %w", u.host, err)
			return
		}
		u.conn, u.err = u.client.Host(u.host, auth)
	})
	return u.conn, u.err
}

func (u *RegistryUpstream) do(ctx context.Context, method, repo, path string, hdr http.Header) (*http.Response, error) {
	if u.hub && !strings.Contains(repo, "/") {
		repo = "library/" + repo
	}
	conn, err := u.connection()
	if err != nil {
		return nil, err
	}
	r, err := conn.Repo(ctx, repo)
	if err != nil {
		return nil, classify(fmt.Errorf("connecting to %s for %s: %w", u.host, repo, err))
	}
	req, err := http.NewRequestWithContext(ctx, method, r.URL(path), nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	what := fmt.Sprintf("%s %s%s from %s", method, repo, path, u.host)
	resp, err := r.Do(req)
	if err != nil {
		return nil, classify(fmt.Errorf("%s: %w", what, registry.Explain(err)))
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		_ = resp.Body.Close()
		return nil, classify(fmt.Errorf("%s: %w", what, registry.Explain(err)))
	}
	return resp, nil
}

// Manifest implements Upstream.
func (u *RegistryUpstream) Manifest(ctx context.Context, repo, ref string, head bool) (*Manifest, error) {
	method := http.MethodGet
	if head {
		method = http.MethodHead
	}
	resp, err := u.do(ctx, method, repo, "/manifests/"+ref, http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	m := &Manifest{MediaType: resp.Header.Get("Content-Type")}
	if d, err := v1.NewHash(resp.Header.Get("Docker-Content-Digest")); err == nil {
		m.Digest = d
	}
	if head {
		return m, nil // without Docker-Content-Digest the cache fetches the manifest to compare
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading manifest %s:%s from %s: %v", ErrUnreachable, repo, ref, u.host, err)
	}
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("manifest %s:%s from %s is larger than %d bytes", repo, ref, u.host, MaxManifestSize)
	}
	m.Body = b
	return m, nil
}

// Blob implements Upstream.
func (u *RegistryUpstream) Blob(ctx context.Context, repo string, d v1.Hash, head bool) (io.ReadCloser, int64, error) {
	method := http.MethodGet
	if head {
		method = http.MethodHead
	}
	resp, err := u.do(ctx, method, repo, "/blobs/"+d.String(), nil)
	if err != nil {
		return nil, 0, err
	}
	size := int64(-1)
	if n, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); err == nil {
		size = n
	}
	if head {
		_ = resp.Body.Close()
		return nil, size, nil
	}
	return resp.Body, size, nil
}

// maxTagList bounds a tag list page read from an upstream.
const maxTagList = 16 << 20

// Tags implements Upstream.
func (u *RegistryUpstream) Tags(ctx context.Context, repo, query string) ([]byte, string, error) {
	path := "/tags/list"
	if query != "" {
		path += "?" + query
	}
	resp, err := u.do(ctx, http.MethodGet, repo, path, nil)
	if err != nil {
		return nil, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxTagList+1))
	if err != nil {
		return nil, "", fmt.Errorf("%w: reading the tags of %s from %s: %v", ErrUnreachable, repo, u.host, err)
	}
	if len(b) > maxTagList {
		return nil, "", fmt.Errorf("tag list of %s from %s is larger than %d bytes", repo, u.host, maxTagList)
	}
	next := ""
	if l := resp.Header.Get("Link"); strings.Contains(l, `rel="next"`) {
		if s, e := strings.Index(l, "<"), strings.Index(l, ">"); s >= 0 && e > s {
			if nu, err := url.Parse(l[s+1 : e]); err == nil {
				next = nu.RawQuery
			}
		}
	}
	return b, next, nil
}

// classify adds the cache's sentinels to an explained registry error, and
// the reason a client of the cache may see: the error itself names the
// upstream's host and URL, which stay in the cache's log.
func classify(err error) error {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return &upstreamError{kind: ErrNotFound, err: err, public: "not found"}
	case errors.Is(err, registry.ErrPlainHTTPRefused), errors.Is(err, registry.ErrTLS) && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		// registry's own hint names --plain-http, which `ferry cache`
		// does not have: say what the cache's configuration allows.
		return &upstreamError{kind: ErrUnreachable, public: "the upstream answers plain http, not https", cause: err,
			err: fmt.Errorf("%s: the upstream answers plain http, not https; give its URL as http://HOST:PORT if it is on a loopback address (the cache speaks plain http to loopback addresses only), else give it TLS", firstClause(err))}
	case errors.Is(err, registry.ErrTLS):
		return &upstreamError{kind: ErrUnreachable, err: err, public: "TLS with the upstream failed"}
	case errors.Is(err, registry.ErrRateLimited):
		return &upstreamError{kind: ErrUnreachable, err: err, public: "the upstream is rate limiting the cache (429)"}
	case errors.Is(err, registry.ErrUnavailable):
		return &upstreamError{kind: ErrUnreachable, err: err, public: "the upstream could not be reached or kept failing"}
	case errors.Is(err, registry.ErrUnauthorized):
		return &upstreamError{err: err, public: "the upstream refused the cache's credentials"}
	case errors.Is(err, registry.ErrDenied):
		return &upstreamError{err: err, public: "the upstream denied access"}
	}
	return err
}

// firstClause is the part of an explained registry error before its hint.
func firstClause(err error) string {
	s, _, _ := strings.Cut(err.Error(), "; hint:")
	return s
}

// upstreamError is an upstream failure: kind is a sentinel of this package
// (or nil), public what a client may be told, cause the error err
// rephrases (if any).
type upstreamError struct {
	kind, err, cause error
	public           string
}

func (e *upstreamError) Error() string { return e.err.Error() }

func (e *upstreamError) Unwrap() []error {
	var out []error
	for _, x := range []error{e.kind, e.err, e.cause} {
		if x != nil {
			out = append(out, x)
		}
	}
	return out
}

// PublicReason is what a client of the cache may be told.
func (e *upstreamError) PublicReason() string { return e.public }
