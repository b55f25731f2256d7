package registry

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// lateGrants is a Harbor-like registry: its token service grants a scope
// only while the flag `exists` is set (Harbor grants rights only on
// projects that exist when it issues the token), and a request whose token
// lacks the rights gets 401 with Harbor's challenge, `Basic
// realm="harbor"`, or (challenge set to "") with none at all.
type lateGrants struct {
	srv       *httptest.Server
	exists    atomic.Bool
	tokens    atomic.Int64 // token requests
	refusals  atomic.Int64 // 401s to repository requests
	okays     atomic.Int64 // repository requests served
	challenge string
	revoked   atomic.Int64 // tokens issued before this count are refused
}

func newLateGrants(t *testing.T) *lateGrants {
	f := &lateGrants{challenge: `Basic realm="harbor"`}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *lateGrants) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/service/token":
		n := f.tokens.Add(1)
		grant := "none"
		if f.exists.Load() {
			grant = strings.Join(r.URL.Query()["scope"], " ")
		}
		fmt.Fprintf(w, `{"token":%q,"expires_in":1800}`, fmt.Sprintf("%d|%s", n, grant))
	case r.URL.Path == "/v2/":
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/service/token",service="harbor-registry"`, f.srv.URL))
		w.WriteHeader(http.StatusUnauthorized)
	default:
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		num, grant, _ := strings.Cut(tok, "|")
		var n int64
		_, _ = fmt.Sscan(num, &n)
		if !strings.Contains(grant, "repository:proj/app:") || n <= f.revoked.Load() {
			f.refusals.Add(1)
			if f.challenge != "" {
				w.Header().Set("WWW-Authenticate", f.challenge)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized to access repository: proj/app, action: pull"}]}`)
			return
		}
		f.okays.Add(1)
		w.WriteHeader(http.StatusNotFound)
	}
}

// repo returns a handle on proj/app whose token was issued now.
func (f *lateGrants) repo(t *testing.T) (*Host, *Repo) {
	t.Helper()
	c, _ := newTestClient(t, Options{})
	h, err := c.Host(hostOf(t, f.srv), alice)
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.Repo(context.Background(), "proj/app", Scope("proj/app", PushPull))
	if err != nil {
		t.Fatal(err)
	}
	return h, r
}

// TestRenewAfterGrantOnRefusal: a token issued before its project existed
// is refused with Harbor's Basic challenge; one renewal cures it, and
// concurrent refused requests share that one renewal.
func TestRenewAfterGrantOnRefusal(t *testing.T) {
	f := newLateGrants(t)
	_, r := f.repo(t)
	f.exists.Store(true)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := head(t, r); got != http.StatusNotFound {
				t.Errorf("HEAD after the grant: %d, want 404 (the repository is empty)", got)
			}
		}()
	}
	wg.Wait()
	if n := f.tokens.Load(); n != 2 {
		t.Errorf("%d token requests, want 2 (the first, then one shared renewal)", n)
	}
	if n := f.okays.Load(); n != 16 {
		t.Errorf("%d requests served, want 16", n)
	}
}

// TestRenewExplicit: Host.Renew after the rights changed gets a fresh
// token before the next request, which is then not refused at all.
func TestRenewExplicit(t *testing.T) {
	f := newLateGrants(t)
	h, r := f.repo(t)
	f.exists.Store(true)
	h.Renew()
	for range 3 {
		if got := head(t, r); got != http.StatusNotFound {
			t.Fatalf("HEAD after Renew: %d, want 404", got)
		}
	}
	if n, ref := f.tokens.Load(), f.refusals.Load(); n != 2 || ref != 0 {
		t.Errorf("%d token requests and %d refusals, want 2 and 0", n, ref)
	}
}

// TestRenewRefusedIsFinal: a right that never comes costs one renewal,
// not one per request: the second 401 after a renewal is the answer, and
// the renewed token, never accepted, is not renewed again.
func TestRenewRefusedIsFinal(t *testing.T) {
	f := newLateGrants(t)
	_, r := f.repo(t)
	for i := range 5 {
		if got := head(t, r); got != http.StatusUnauthorized {
			t.Fatalf("HEAD %d without the right: %d, want 401", i, got)
		}
	}
	if n := f.tokens.Load(); n != 2 {
		t.Errorf("%d token requests, want 2 (the first and one renewal)", n)
	}
	if n := f.refusals.Load(); n != 6 {
		t.Errorf("%d refusals, want 6 (the first request twice, then once each)", n)
	}
	// The premise of stopping (the token service grants no more a moment
	// later) broken: the right arrives after all. Refusals stay the honest
	// answer until the caller says the rights changed (Renew, as push
	// does after creating projects) or the token expires; then it works.
	f.exists.Store(true)
	if got := head(t, r); got != http.StatusUnauthorized {
		t.Fatalf("HEAD after the late grant, before Renew: %d, want 401", got)
	}
	r.Host().Renew()
	if got := head(t, r); got != http.StatusNotFound {
		t.Fatalf("HEAD after Renew: %d, want 404", got)
	}
}

// TestRenewWithoutChallengeIsFinal: a 401 that invites no credential (as
// Harbor's "project X not found") asks for no new token.
func TestRenewWithoutChallengeIsFinal(t *testing.T) {
	f := newLateGrants(t)
	f.challenge = ""
	_, r := f.repo(t)
	f.exists.Store(true)
	if got := head(t, r); got != http.StatusUnauthorized {
		t.Fatalf("HEAD: %d, want 401", got)
	}
	if n := f.tokens.Load(); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
}

// TestRenewAgainAfterWorking: a token that worked and is then revoked is
// renewed each time (an expiry or revocation in a long run), unlike a
// renewed token that never worked.
func TestRenewAgainAfterWorking(t *testing.T) {
	f := newLateGrants(t)
	f.exists.Store(true)
	_, r := f.repo(t)
	for i := range 3 {
		f.revoked.Store(f.tokens.Load()) // every token so far is revoked
		if got := head(t, r); got != http.StatusNotFound {
			t.Fatalf("HEAD %d after a revocation: %d, want 404", i, got)
		}
		if got := head(t, r); got != http.StatusNotFound {
			t.Fatalf("HEAD %d with the renewed token: %d, want 404", i, got)
		}
	}
	if n := f.tokens.Load(); n != 4 {
		t.Errorf("%d token requests, want 4 (the first and one per revocation)", n)
	}
}
