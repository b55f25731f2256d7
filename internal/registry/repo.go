package registry

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Repo is an authenticated handle on one repository of a Host: every
// request it sends to the registry carries a credential that covers its
// scopes. Hosts keep one Repo per repository and scope set. Safe for
// concurrent use.
type Repo struct {
	h      *Host
	ref    name.Repository
	scopes []string
	sh     *shard // Bearer registries: the token that covers scopes
	hc     *http.Client
	rt     http.RoundTripper // *transport.Wrapper around the same transport
}

// Repo returns the handle for repository path (without host) whose
// requests may do what scopes say (Scope(path, Pull) when none is given).
// The first call pings the registry and, for a Bearer registry, obtains a
// token (together with the scopes declared by Want); it fails, with an
// explained error, when either fails.
func (h *Host) Repo(ctx context.Context, path string, scopes ...string) (*Repo, error) {
	if len(scopes) == 0 {
		scopes = []string{Scope(path, Pull)}
	}
	scopes = slices.Clone(scopes)
	slices.Sort(scopes)
	key := path + "\x00" + strings.Join(scopes, " ")
	h.mu.Lock()
	r, ok := h.repos[key]
	h.mu.Unlock()
	if ok {
		return r, nil
	}
	ref, err := name.NewRepository(h.name+"/"+path, h.c.NameOptions(h.name)...)
	if err != nil {
		return nil, fmt.Errorf("repository %q on %s: %w", path, h.name, err)
	}
	p, err := h.ping(ctx)
	if err != nil {
		return nil, err
	}
	r = &Repo{h: h, ref: ref, scopes: scopes}
	if p.auth.scheme == "bearer" {
		r.sh = h.shardFor(scopes)
		if _, _, err := h.token(ctx, r.sh, -1); err != nil {
			return nil, err
		}
	}
	art := &authTransport{r: r}
	r.hc = &http.Client{Transport: art}
	// A *transport.Wrapper tells go-containerregistry to use the transport
	// as it is: no second ping or token exchange, no retries of its own.
	r.rt, _ = transport.FromToken(h.reg, authn.Anonymous, art, &transport.Challenge{}, nil)
	h.mu.Lock()
	if old, ok := h.repos[key]; ok {
		r = old
	} else {
		h.repos[key] = r
	}
	h.mu.Unlock()
	return r, nil
}

// Repo is Host(ref's registry, auth).Repo(ctx, ref's path, scopes...).
func (c *Client) Repo(ctx context.Context, ref name.Repository, auth authn.Authenticator, scopes ...string) (*Repo, error) {
	h, err := c.Host(ref.RegistryStr(), auth)
	if err != nil {
		return nil, err
	}
	return h.Repo(ctx, ref.RepositoryStr(), scopes...)
}

// Host returns the connection the handle belongs to.
func (r *Repo) Host() *Host { return r.h }

// Name returns the repository's reference (registry and path).
func (r *Repo) Name() name.Repository { return r.ref }

// Path returns the repository path without the registry.
func (r *Repo) Path() string { return r.ref.RepositoryStr() }

// URL returns the API URL for suffix ("/blobs/sha256:...",
// "/manifests/TAG") in this repository.
func (r *Repo) URL(suffix string) string {
	scheme := "https"
	if p := r.h.pingedOrNil(); p != nil {
		scheme = p.scheme
	}
	return scheme + "://" + r.h.name + "/v2/" + r.ref.RepositoryStr() + suffix
}

// Do sends req with the handle's credential (and follows redirects, which
// carry no credential).
func (r *Repo) Do(req *http.Request) (*http.Response, error) { return r.hc.Do(req) }

// RemoteOptions returns go-containerregistry options that send every
// request of remote.Get, Head, List, Referrers... through the handle.
func (r *Repo) RemoteOptions(ctx context.Context) []remote.Option {
	return append(r.h.c.RemoteOptions(ctx, r.h.name, authn.Anonymous), remote.WithTransport(r.rt))
}

func (h *Host) pingedOrNil() *pinged {
	h.pingMu.Lock()
	defer h.pingMu.Unlock()
	return h.ch
}

// authTransport adds the handle's credential to requests for its registry
// (never to a redirect elsewhere, e.g. blob storage), speaks the scheme the
// ping found, and renews a refused token once.
type authTransport struct{ r *Repo }

func (t *authTransport) RoundTrip(in *http.Request) (*http.Response, error) {
	h := t.r.h
	p := h.pingedOrNil()
	if p == nil || canonicalHost(in.URL.Host) != canonicalHost(h.name) {
		return h.c.rt.RoundTrip(in)
	}
	req := in.Clone(in.Context())
	req.URL.Scheme = p.scheme
	if t.r.sh == nil {
		if err := h.setBasic(req); err != nil {
			closeBody(in)
			return nil, err
		}
		return h.c.rt.RoundTrip(req)
	}
	tok, gen, err := h.token(req.Context(), t.r.sh, -1)
	if err != nil {
		closeBody(in)
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := h.c.rt.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.r.sh.accepted(gen)
		return resp, nil
	}
	if !h.renewable(t.r.sh, resp) {
		return resp, nil
	}
	// Expired, revoked, or issued before the rights existed: a new token,
	// and the request once more if its body can be read again. A second
	// 401 is the answer.
	tok, renewed, err := h.renewRefused(req.Context(), t.r.sh, gen)
	if err != nil || !renewed || !replayable(in) {
		return resp, nil
	}
	next := in.Clone(in.Context())
	next.URL.Scheme = p.scheme
	if in.Body != nil && in.Body != http.NoBody {
		body, err := in.GetBody()
		if err != nil {
			return resp, nil
		}
		next.Body = body
	}
	discard(resp)
	next.Header.Set("Authorization", "Bearer "+tok)
	return h.c.rt.RoundTrip(next)
}

// renewable reports whether a 401 to a request with sh's token may be
// cured by a new token:
//   - a Bearer challenge for scopes sh asks for, or for none: yes. A scope
//     beyond the handle's (e.g. "delete" to cancel an upload) is not asked
//     for: the handle's rights are the scopes it was made with;
//   - no Bearer challenge but a Basic one: yes. Harbor answers every
//     request that carried an Authorization header with `Basic
//     realm="harbor"` when the token lacks the rights, without naming the
//     scope; its token service grants rights only on projects that exist
//     when it issues a token, so a token from before a project was
//     created is refused until it is renewed;
//   - no challenge at all: no. Nothing invites a new credential (Harbor's
//     "project X not found" has an empty header).
func (h *Host) renewable(sh *shard, resp *http.Response) bool {
	basic := false
	for _, c := range challenges(resp) {
		if c.scheme == "basic" {
			basic = true
		}
		if c.scheme != "bearer" {
			continue
		}
		scope := c.params["scope"]
		if scope == "" {
			return true
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		return coversAll(sh.scopes, strings.Fields(scope))
	}
	return basic
}
