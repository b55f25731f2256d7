package registry

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Host is ferry's connection to one registry with one credential. The
// Client keeps one per (host, credential): its /v2/ ping happens once, and
// a Bearer registry's token exchange happens once per set of scopes, not
// once per repository. Scopes declared with Want before the first token is
// needed ride in that token; a token covers at most about 2 KiB of scope
// text (it travels in a request header), so very long lists take a few.
// Tokens are renewed shortly before they expire, on Renew (after the
// credential's rights changed), and once on a 401 that says the token
// lacks rights (see renewable and renewRefused). Safe for concurrent use.
type Host struct {
	c    *Client
	reg  name.Registry
	name string // host[:port] as requests address it
	auth authn.Authenticator
	user string // "" anonymous, "<token>" for identity tokens

	pingMu  sync.Mutex
	ch      *pinged // nil until a ping succeeded
	pinging *flight[*pinged]

	mu      sync.Mutex
	want    []string // declared scopes that no token covers yet
	shards  []*shard
	repos   map[string]*Repo
	checked bool // Check passed for a Basic or open registry
}

// pinged is what GET /v2/ told about a registry.
type pinged struct {
	scheme string // "https" or "http"
	auth   authChallenge
}

// flight is one call in progress that concurrent callers wait for.
type flight[T any] struct {
	done chan struct{}
	val  T
	err  error
}

// shard is one token and the scopes it was asked for.
type shard struct {
	scopes scopeSet // guarded by Host.mu; grows only (see grow)

	mu       sync.Mutex
	token    string
	expires  time.Time
	gen      int // bumped per token obtained
	version  int // bumped when the scopes grow or Renew is called (Host.mu and mu held)
	fetching *flight[string]
	// refusedGen is the generation of the last token obtained because its
	// predecessor was refused with a 401; worked is the highest generation
	// a registry accepted (any answer but 401). A refused token that came
	// from a refusal and never worked is not renewed again: the token
	// service gives no more than it gave a moment ago.
	refusedGen int
	worked     atomic.Int64
}

// accepted records that a token of generation gen got an answer other
// than 401.
func (sh *shard) accepted(gen int) {
	for {
		old := sh.worked.Load()
		if int64(gen) <= old || sh.worked.CompareAndSwap(old, int64(gen)) {
			return
		}
	}
}

// Host returns the connection to host with auth (nil = anonymous), made
// once per host and credential. Docker Hub's names are one host.
func (c *Client) Host(host string, auth authn.Authenticator) (*Host, error) {
	if auth == nil {
		auth = authn.Anonymous
	}
	reg, err := name.NewRegistry(host, c.NameOptions(host)...)
	if err != nil {
		return nil, fmt.Errorf("%w: registry name %q: %w", ErrConfig, host, err)
	}
	key, user, err := credentialKey(auth)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", host, err)
	}
	k := canonicalHost(reg.RegistryStr()) + "\x00" + key
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.conns[k]; ok {
		return h, nil
	}
	h := &Host{c: c, reg: reg, name: reg.RegistryStr(), auth: auth, user: user, repos: map[string]*Repo{}}
	c.conns[k] = h
	return h, nil
}

// credentialKey identifies a credential without keeping its secret in
// clear: a hash of what it sends.
func credentialKey(auth authn.Authenticator) (key, user string, err error) {
	if auth == authn.Anonymous {
		return "anonymous", "", nil
	}
	cfg, err := auth.Authorization()
	if err != nil {
		return "", "", err
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{cfg.Username, cfg.Password, cfg.Auth, cfg.IdentityToken, cfg.RegistryToken}, "\x00")))
	user = cfg.Username
	if user == "" && (cfg.IdentityToken != "" || cfg.RegistryToken != "") {
		user = "<token>"
	}
	return hex.EncodeToString(sum[:]), user, nil
}

// Name returns host[:port] as requests address it (index.docker.io for
// Docker Hub).
func (h *Host) Name() string { return h.name }

// User returns the credential's user name: "" when anonymous.
func (h *Host) User() string { return h.user }

// Who names the credential for messages: "alice" (quoted) or anonymous.
func (h *Host) Who() string {
	if h.user == "" {
		return "anonymous"
	}
	return fmt.Sprintf("%q", h.user)
}

// Auth returns the credential.
func (h *Host) Auth() authn.Authenticator { return h.auth }

// Want declares scopes (see Scope) that the next token should cover, so
// that a run which knows its repositories up front asks for one token for
// all of them instead of one per repository.
func (h *Host) Want(scopes ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range scopes {
		if !slices.Contains(h.want, s) && !h.coveredLocked([]string{s}) {
			h.want = append(h.want, s)
		}
	}
}

// Scheme returns "https" or "http": how the registry answered its ping.
func (h *Host) Scheme(ctx context.Context) (string, error) {
	p, err := h.ping(ctx)
	if err != nil {
		return "", err
	}
	return p.scheme, nil
}

// Check verifies the credential before any blob moves: against a Bearer
// registry by the token exchange for scope ("" = none) and the scopes
// declared so far (that token serves the requests that follow), else with
// one GET /v2/ that carries the credential. Rejected credentials give an
// *AuthError (errors.Is ErrUnauthorized). A token service that hands out
// anonymous tokens for bad credentials (Harbor) is not caught here.
func (h *Host) Check(ctx context.Context, scope string) error {
	p, err := h.ping(ctx)
	if err != nil {
		return err
	}
	if p.auth.scheme == "bearer" {
		var scopes []string
		if scope != "" {
			scopes = []string{scope}
		}
		_, _, err := h.token(ctx, h.shardFor(scopes), -1)
		return err
	}
	h.mu.Lock()
	done := h.checked
	h.mu.Unlock()
	if done || (p.auth.scheme == "" && h.auth == authn.Anonymous) {
		return nil
	}
	if err := h.checkBasic(ctx, p); err != nil {
		return err
	}
	h.mu.Lock()
	h.checked = true
	h.mu.Unlock()
	return nil
}

// checkBasic sends GET /v2/ with the credential.
func (h *Host) checkBasic(ctx context.Context, p *pinged) error {
	u := url.URL{Scheme: p.scheme, Host: h.name, Path: "/v2/"}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	if err := h.setBasic(req); err != nil {
		return err
	}
	resp, err := h.c.rt.RoundTrip(req)
	if err != nil {
		return authFailure(h.name, h.user, &url.Error{Op: "Get", URL: u.String(), Err: err})
	}
	defer func() { _ = resp.Body.Close() }()
	switch resp.StatusCode {
	case http.StatusOK:
		discard(resp)
		return nil
	case http.StatusUnauthorized:
		return &AuthError{Registry: h.name, User: h.user, Status: resp.StatusCode, Detail: errorDetail(resp)}
	default:
		return Explain(transport.CheckError(resp, http.StatusOK))
	}
}

// setBasic adds the credential to a request for a Basic (or open)
// registry, as go-containerregistry does.
func (h *Host) setBasic(req *http.Request) error {
	if h.auth == authn.Anonymous {
		return nil
	}
	cfg, err := authn.Authorization(req.Context(), h.auth)
	if err != nil {
		return fmt.Errorf("credentials for %s: %w", h.name, err)
	}
	switch {
	case cfg.RegistryToken != "":
		req.Header.Set("Authorization", "Bearer "+cfg.RegistryToken)
	case cfg.Username != "" && cfg.Password != "":
		req.SetBasicAuth(cfg.Username, cfg.Password)
	case cfg.Auth != "":
		req.Header.Set("Authorization", "Basic "+cfg.Auth)
	}
	return nil
}

// ping sends GET /v2/ once per Host (concurrent callers share the answer;
// a failure is not remembered, so a later call tries again). https first;
// a loopback registry that answers plain http is spoken to in http, as
// docker does; --plain-http means http only.
func (h *Host) ping(ctx context.Context) (*pinged, error) {
	h.pingMu.Lock()
	if h.ch != nil {
		p := h.ch
		h.pingMu.Unlock()
		return p, nil
	}
	if f := h.pinging; f != nil {
		h.pingMu.Unlock()
		p, err := wait(ctx, f)
		if err != nil && ctx.Err() == nil && isCancel(err) {
			return h.ping(ctx) // the caller that pinged gave up; try again
		}
		return p, err
	}
	f := &flight[*pinged]{done: make(chan struct{})}
	h.pinging = f
	h.pingMu.Unlock()

	f.val, f.err = h.pingOnce(ctx)
	h.pingMu.Lock()
	if f.err == nil {
		h.ch = f.val
	}
	h.pinging = nil
	h.pingMu.Unlock()
	close(f.done)
	return f.val, f.err
}

func isCancel(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func wait[T any](ctx context.Context, f *flight[T]) (T, error) {
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

func (h *Host) pingOnce(ctx context.Context) (*pinged, error) {
	schemes := []string{"https"}
	switch {
	case h.c.opts.PlainHTTP || h.c.hostConfig(h.name).PlainHTTP:
		schemes = []string{"http"}
	case isLoopback(canonicalHost(h.name)):
		schemes = append(schemes, "http")
	}
	var first error
	for i, scheme := range schemes {
		p, err := h.pingScheme(ctx, scheme)
		if err == nil {
			return p, nil
		}
		if first == nil {
			first = err
		}
		// Only a plain-http server answering the TLS handshake is worth the
		// http attempt; any other https failure is the one to report.
		if i == 0 && !speaksPlainHTTP(err) {
			return nil, err
		}
	}
	return nil, first
}

func (h *Host) pingScheme(ctx context.Context, scheme string) (*pinged, error) {
	u := scheme + "://" + h.name + "/v2/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: h.c.rt}).Do(req)
	if err != nil {
		return nil, Explain(err)
	}
	defer discard(resp)
	got := cmp.Or(resp.Request, req).URL.Scheme
	switch resp.StatusCode {
	case http.StatusOK:
		return &pinged{scheme: got, auth: authChallenge{params: map[string]string{}}}, nil
	case http.StatusUnauthorized:
		return &pinged{scheme: got, auth: pickChallenge(challenges(resp))}, nil
	}
	return nil, Explain(transport.CheckError(resp, http.StatusOK, http.StatusUnauthorized))
}

// speaksPlainHTTP reports whether an https attempt failed the way a plain
// http server makes it fail: a non-TLS answer to the handshake, or the
// connection dropped at it.
func speaksPlainHTTP(err error) bool {
	var rhe tls.RecordHeaderError
	return errors.As(err, &rhe) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") ||
		errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// coveredLocked reports whether one shard covers all of scopes. h.mu held.
func (h *Host) coveredLocked(scopes []string) bool {
	for _, sh := range h.shards {
		if coversAll(sh.scopes, scopes) {
			return true
		}
	}
	return false
}

func coversAll(ss scopeSet, scopes []string) bool {
	for _, s := range scopes {
		if !ss.covers(s) {
			return false
		}
	}
	return true
}

// shardFor returns the shard whose token covers every one of scopes. When
// none does, a shard that covers some of them and has room takes the rest
// (its token is renewed on next use: a mount's source joins the token of
// the repositories it is mounted into); else a new shard holds scopes plus
// as many declared scopes as fit.
func (h *Host) shardFor(scopes []string) *shard {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, sh := range h.shards {
		if coversAll(sh.scopes, scopes) {
			return sh
		}
	}
	for _, sh := range h.shards {
		if grow(sh, scopes) {
			return sh
		}
	}
	sh := &shard{scopes: scopeSet{}}
	for _, s := range scopes {
		sh.scopes.add(s)
	}
	total := sh.scopes.size()
	rest := h.want[:0]
	for _, s := range h.want {
		switch {
		case sh.scopes.covers(s):
		case total+len(s)+1 <= maxShardScopes:
			sh.scopes.add(s)
			total += len(s) + 1
		default:
			rest = append(rest, s)
		}
	}
	h.want = rest
	h.shards = append(h.shards, sh)
	return sh
}

// grow adds the scopes sh lacks to sh when it covers at least one of them
// and has room, and makes its token stale. h.mu held.
func grow(sh *shard, scopes []string) bool {
	var missing []string
	extra := 0
	for _, s := range scopes {
		if !sh.scopes.covers(s) {
			missing = append(missing, s)
			extra += len(s) + 1
		}
	}
	if len(missing) == len(scopes) || sh.scopes.size()+extra > maxShardScopes {
		return false
	}
	for _, s := range missing {
		sh.scopes.add(s)
	}
	sh.mu.Lock()
	sh.version++
	sh.expires = time.Time{}
	sh.mu.Unlock()
	return true
}

// token returns the shard's token, exchanging credentials for one when it
// has none, when it is about to expire, or when stale is the generation
// of the token a request was refused with. Concurrent callers share one
// exchange. It returns the token and its generation.
func (h *Host) token(ctx context.Context, sh *shard, stale int) (string, int, error) {
	for {
		sh.mu.Lock()
		if sh.token != "" && sh.gen != stale && time.Now().Before(sh.expires) {
			tok, gen := sh.token, sh.gen
			sh.mu.Unlock()
			return tok, gen, nil
		}
		if f := sh.fetching; f != nil {
			sh.mu.Unlock()
			if _, err := wait(ctx, f); err != nil {
				if ctx.Err() == nil && isCancel(err) {
					continue // the caller that asked gave up; ask again
				}
				return "", 0, err
			}
			stale = -1 // a fresh token is there now
			continue
		}
		f := &flight[string]{done: make(chan struct{})}
		sh.fetching = f
		refused := stale >= 0 && stale == sh.gen && sh.token != ""
		sh.mu.Unlock()

		h.mu.Lock()
		scopes, version := sh.scopes.list(), sh.version
		h.mu.Unlock()
		tok, ttl, err := h.exchange(ctx, scopes)
		sh.mu.Lock()
		if err == nil {
			sh.token, sh.gen = tok, sh.gen+1
			sh.expires = time.Now().Add(ttl - min(ttl/10, 30*time.Second))
			if sh.version != version {
				sh.expires = time.Time{} // grown or Renew meanwhile: renew on next use
			}
			if refused {
				sh.refusedGen = sh.gen
			}
		}
		gen := sh.gen
		sh.fetching = nil
		sh.mu.Unlock()
		f.val, f.err = tok, err
		close(f.done)
		return tok, gen, err
	}
}

// Renew makes every token of the host stale: the next request of each
// handle asks the token service again. Call it when what the credential
// may do has changed: Harbor grants a token rights only on projects that
// exist when it issues the token, so after creating projects the tokens
// issued before carry no rights on them. A token being fetched while
// Renew runs is stale too. Registries without tokens are not affected.
func (h *Host) Renew() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, sh := range h.shards {
		sh.mu.Lock()
		sh.version++
		sh.expires = time.Time{}
		sh.mu.Unlock()
	}
}

// renewRefused returns a new token for sh after the registry refused the
// token of generation gen with a 401, and whether it differs from the
// refused one. Requests refused with the same token share one renewal
// (token's flight). No renewal storms: a token that was itself obtained
// after a refusal and has not been accepted once is refused for good
// (renewed = false), so a credential that lacks a right costs one token
// exchange, not one per request. A token that worked and is refused
// later (expired early, revoked) is renewed again.
func (h *Host) renewRefused(ctx context.Context, sh *shard, gen int) (tok string, renewed bool, err error) {
	sh.mu.Lock()
	final := gen == sh.refusedGen && sh.worked.Load() < int64(gen)
	sh.mu.Unlock()
	if final {
		return "", false, nil
	}
	tok, got, err := h.token(ctx, sh, gen)
	if err != nil {
		return "", false, err
	}
	return tok, got != gen, nil
}

// exchange asks the registry's token service for one token covering scopes.
func (h *Host) exchange(ctx context.Context, scopes []string) (string, time.Duration, error) {
	p, err := h.ping(ctx)
	if err != nil {
		return "", 0, err
	}
	cfg, err := authn.Authorization(ctx, h.auth)
	if err != nil {
		return "", 0, fmt.Errorf("credentials for %s: %w", h.name, err)
	}
	if cfg.RegistryToken != "" {
		return cfg.RegistryToken, 24 * time.Hour, nil
	}
	pr := &transport.Challenge{Scheme: "bearer", Parameters: p.auth.params, Insecure: p.scheme == "http"}
	tok, err := transport.Exchange(ctx, h.reg, h.auth, h.c.rt, scopes, pr)
	if err != nil {
		return "", 0, authFailure(h.name, h.user, err)
	}
	ttl := time.Duration(tok.ExpiresIn) * time.Second
	if ttl <= 0 {
		ttl = 60 * time.Second // the token specification's default
	}
	return cmp.Or(tok.Token, tok.AccessToken), ttl, nil
}

// Drain reads what is left of a response body (at most 64 KiB, so the
// connection can be reused) and closes it.
func Drain(resp *http.Response) { discard(resp) }
