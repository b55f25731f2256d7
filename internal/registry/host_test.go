package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
)

// fakeBearer is a registry with a token service on its own host: tokens
// spell out the scopes they were asked for, and a repository request needs
// a token that grants its repository (pull to read, push to write).
type fakeBearer struct {
	srv    *httptest.Server
	pings  atomic.Int64
	mu     sync.Mutex
	tokens [][]string // scopes of every token request
}

func newFakeBearer(t *testing.T) *fakeBearer {
	f := &fakeBearer{}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeBearer) challenge(w http.ResponseWriter, scope string) {
	c := fmt.Sprintf(`Bearer realm="%s/token",service="fake"`, f.srv.URL)
	if scope != "" {
		c += fmt.Sprintf(`,scope=%q`, scope)
	}
	w.Header().Set("WWW-Authenticate", c)
	w.WriteHeader(http.StatusUnauthorized)
}

func (f *fakeBearer) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/token":
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		scopes := r.URL.Query()["scope"]
		f.mu.Lock()
		f.tokens = append(f.tokens, scopes)
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"token": base64.RawURLEncoding.EncodeToString([]byte(strings.Join(scopes, " "))), "expires_in": 300})
	case r.URL.Path == "/v2/":
		f.pings.Add(1)
		f.challenge(w, "")
	default:
		rest := strings.TrimPrefix(r.URL.Path, "/v2/")
		i := strings.Index(rest, "/manifests/")
		if j := strings.Index(rest, "/blobs/"); i < 0 || (j >= 0 && j < i) {
			i = j
		}
		repo := rest[:max(i, 0)]
		action := "push"
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			action = "pull"
		}
		if !f.grants(r.Header.Get("Authorization"), repo, action) {
			f.challenge(w, Scope(repo, action))
			return
		}
		if r.Method == http.MethodPut || r.Method == http.MethodPost {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusCreated)
			return
		}
		w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("a", 64))
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
	}
}

func (f *fakeBearer) grants(hdr, repo, action string) bool {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(hdr, "Bearer "))
	if err != nil {
		return false
	}
	for _, s := range strings.Fields(string(b)) {
		res, acts := splitScope(s)
		if res == "repository:"+repo && slices.Contains(acts, action) {
			return true
		}
	}
	return false
}

func (f *fakeBearer) tokenScopes() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.tokens)
}

var alice = &authn.Basic{Username: "alice", Password: "s3cret"}

// head sends HEAD /manifests/x through r and returns the status.
func head(t *testing.T, r *Repo) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodHead, r.URL("/manifests/x"), nil)
	resp, err := r.Do(req)
	if err != nil {
		t.Fatalf("HEAD %s: %v", r.Path(), err)
	}
	Drain(resp)
	return resp.StatusCode
}

// TestHostOnePingOneTokenForManyRepositories: repositories declared up
// front, opened concurrently, cost one ping and one token in all.
func TestHostOnePingOneTokenForManyRepositories(t *testing.T) {
	f := newFakeBearer(t)
	c, _ := newTestClient(t, Options{})
	h, err := c.Host(hostOf(t, f.srv), alice)
	if err != nil {
		t.Fatal(err)
	}
	var repos []string
	for i := range 40 {
		repos = append(repos, fmt.Sprintf("project/app-%02d", i))
		h.Want(Scope(repos[i], Pull))
	}
	if err := h.Check(context.Background(), Scope(repos[0], Pull)); err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	for _, repo := range repos {
		g.Go(func() error {
			r, err := h.Repo(context.Background(), repo, Scope(repo, Pull))
			if err != nil {
				return err
			}
			if code := head(t, r); code != http.StatusOK {
				return fmt.Errorf("%s: HEAD %d", repo, code)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := f.pings.Load(); n != 1 {
		t.Errorf("%d pings, want 1", n)
	}
	if toks := f.tokenScopes(); len(toks) != 1 || len(toks[0]) != len(repos) {
		t.Errorf("token requests %v, want one with %d scopes", toks, len(repos))
	}
	// The same host and credential is the same Host; another credential is not.
	if again, _ := c.Host(hostOf(t, f.srv), &authn.Basic{Username: "alice", Password: "s3cret"}); again != h {
		t.Error("a second Host for the same registry and credential")
	}
	if other, _ := c.Host(hostOf(t, f.srv), authn.Anonymous); other == h {
		t.Error("anonymous access shares the credential's Host")
	}
}

// TestHostMountScopeJoinsTheToken: a handle that also needs pull on another
// repository (a cross-repository mount) grows the token once; later
// handles with the same scopes cost nothing.
func TestHostMountScopeJoinsTheToken(t *testing.T) {
	f := newFakeBearer(t)
	c, _ := newTestClient(t, Options{})
	h, _ := c.Host(hostOf(t, f.srv), alice)
	h.Want(Scope("p/a", PushPull), Scope("p/b", PushPull))
	ctx := context.Background()
	a, err := h.Repo(ctx, "p/a", Scope("p/a", PushPull))
	if err != nil {
		t.Fatal(err)
	}
	if code := head(t, a); code != http.StatusOK {
		t.Fatalf("HEAD p/a: %d", code)
	}
	m, err := h.Repo(ctx, "p/b", Scope("p/b", PushPull), Scope("q/base", Pull))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, strings.Replace(m.URL("/blobs/x"), "/p/b/", "/q/base/", 1), nil)
	resp, err := m.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	Drain(resp)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD in the mount source with the grown token: %d", resp.StatusCode)
	}
	if _, err := h.Repo(ctx, "p/a", Scope("p/a", PushPull), Scope("q/base", Pull)); err != nil {
		t.Fatal(err)
	}
	toks := f.tokenScopes()
	if len(toks) != 2 || !slices.Contains(toks[1], "repository:q/base:pull") || !slices.Contains(toks[1], "repository:p/a:pull,push") {
		t.Errorf("token requests %v, want the first grown by q/base", toks)
	}
	if f.pings.Load() != 1 {
		t.Errorf("%d pings", f.pings.Load())
	}
}

// TestHostSplitsLongScopeLists: a token stays below the header limits, so
// many long repository names take a few tokens, each under the cap.
func TestHostSplitsLongScopeLists(t *testing.T) {
	f := newFakeBearer(t)
	c, _ := newTestClient(t, Options{})
	h, _ := c.Host(hostOf(t, f.srv), alice)
	var repos []string
	for i := range 150 {
		repos = append(repos, fmt.Sprintf("some-project/a-rather-long-component-name-%03d", i))
	}
	for _, r := range repos {
		h.Want(Scope(r, PushPull))
	}
	for _, repo := range repos {
		r, err := h.Repo(context.Background(), repo, Scope(repo, PushPull))
		if err != nil {
			t.Fatal(err)
		}
		if code := head(t, r); code != http.StatusOK {
			t.Fatalf("%s: %d", repo, code)
		}
	}
	toks := f.tokenScopes()
	total := 0
	for _, tk := range toks {
		if n := len(strings.Join(tk, " ")); n > maxShardScopes {
			t.Errorf("a token request carries %d bytes of scopes, cap %d", n, maxShardScopes)
		}
		total += len(tk)
	}
	if len(toks) < 2 || len(toks) > 4 || total != len(repos) {
		t.Errorf("%d token requests for %d scopes (%d in all); want a few, each scope once", len(toks), len(repos), total)
	}
}

// TestHostRemoteOptionsUseTheHandle: go-containerregistry's remote calls
// go through the handle: no ping or token of their own.
func TestHostRemoteOptionsUseTheHandle(t *testing.T) {
	f := newFakeBearer(t)
	c, _ := newTestClient(t, Options{})
	h, _ := c.Host(hostOf(t, f.srv), alice)
	ctx := context.Background()
	r, err := h.Repo(ctx, "p/a")
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.NewTag(h.Name()+"/p/a:v1", c.NameOptions(h.Name())...)
	for range 3 {
		if _, err := remote.Head(ref, r.RemoteOptions(ctx)...); err != nil {
			t.Fatal(err)
		}
	}
	if f.pings.Load() != 1 || len(f.tokenScopes()) != 1 {
		t.Errorf("%d pings, %d tokens; want 1 and 1", f.pings.Load(), len(f.tokenScopes()))
	}
}

// TestHostWrongPassword: the token service refuses, Check and Repo say so
// naming user and registry, and nothing is cached.
func TestHostWrongPassword(t *testing.T) {
	f := newFakeBearer(t)
	c, _ := newTestClient(t, Options{})
	h, _ := c.Host(hostOf(t, f.srv), &authn.Basic{Username: "alice", Password: "wr0ng"})
	for range 2 {
		err := h.Check(context.Background(), Scope("p/a", Pull))
		if !strings.Contains(fmt.Sprint(err), `authentication failed for user "alice"`) || strings.Contains(fmt.Sprint(err), "wr0ng") {
			t.Fatalf("Check: %v", err)
		}
	}
	if _, err := h.Repo(context.Background(), "p/a"); err == nil {
		t.Fatal("Repo with a wrong password succeeded")
	}
}

// TestExpiredTokenResendsTheBody: a token refused mid-upload is renewed and
// the request sent again with its whole body (through GetBody).
func TestExpiredTokenResendsTheBody(t *testing.T) {
	payload := bytes.Repeat([]byte("layer bytes "), 100000)
	var tokens, puts atomic.Int64
	var srvURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/token":
			fmt.Fprintf(w, `{"token":"t%d"}`, tokens.Add(1))
		case r.URL.Path == "/v2/":
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="test"`, srvURL+"/token"))
			w.WriteHeader(http.StatusUnauthorized)
		case r.Method == http.MethodPut:
			n := puts.Add(1)
			body, _ := io.ReadAll(r.Body)
			if n == 1 || r.Header.Get("Authorization") != fmt.Sprintf("Bearer t%d", tokens.Load()) {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="test",scope="repository:x:push,pull",error="invalid_token"`, srvURL+"/token"))
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			if !bytes.Equal(body, payload) {
				http.Error(w, fmt.Sprintf("got %d bytes, want %d", len(body), len(payload)), http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusCreated)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	srvURL = srv.URL
	c, _ := newTestClient(t, Options{})
	r, err := c.Repo(context.Background(), mustRepo(t, c, hostOf(t, srv)+"/x"), alice, Scope("x", PushPull))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, r.URL("/blobs/uploads/u?digest=sha256:x"), bytes.NewReader(payload))
	resp, err := r.Do(req)
	if err != nil {
		t.Fatalf("upload after a token refresh: %v", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload after a token refresh: %s %s", resp.Status, msg)
	}
	if puts.Load() != 2 || tokens.Load() != 2 {
		t.Fatalf("puts %d, tokens %d; want 2 and 2", puts.Load(), tokens.Load())
	}
}

func mustRepo(t *testing.T, c *Client, s string) name.Repository {
	t.Helper()
	host, _, _ := strings.Cut(s, "/")
	r, err := name.NewRepository(s, c.NameOptions(host)...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseChallenges(t *testing.T) {
	got := parseChallenges([]string{
		`Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push", Basic realm="x \"y\""`,
		`Negotiate abc==`,
	})
	if len(got) != 3 {
		t.Fatalf("%d challenges: %+v", len(got), got)
	}
	b := got[0]
	if b.scheme != "bearer" || b.params["realm"] != "https://auth.example/token" || b.params["service"] != "registry.example" || b.params["scope"] != "repository:a/b:pull,push" {
		t.Errorf("bearer: %+v", b)
	}
	if got[1].scheme != "basic" || got[1].params["realm"] != `x "y"` {
		t.Errorf("basic: %+v", got[1])
	}
	if got[2].scheme != "negotiate" || pickChallenge(got).scheme != "bearer" {
		t.Errorf("negotiate: %+v", got[2])
	}
}

func FuzzParseChallenges(f *testing.F) {
	f.Add(`Bearer realm="https://a/token",service="s",scope="repository:x:pull"`)
	f.Add(`Basic realm="x \"y\"", Bearer realm=unquoted`)
	f.Add(`=,=",\`)
	f.Fuzz(func(t *testing.T, h string) {
		for _, c := range parseChallenges([]string{h}) {
			if c.scheme == "" || strings.ToLower(c.scheme) != c.scheme {
				t.Fatalf("scheme %q from %q", c.scheme, h)
			}
			for k := range c.params {
				if k == "" {
					t.Fatalf("empty parameter name from %q", h)
				}
			}
		}
	})
}
