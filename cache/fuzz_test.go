package cache

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/names"
)

// checkingUpstream fails the fuzz run if a request reaches it with a
// repository or reference the cache should have refused.
type checkingUpstream struct {
	*fakeUpstream
	t **testing.T // the current fuzz input's
}

func (c checkingUpstream) check(repo, ref string) {
	if !names.ValidRepository(repo) {
		(*c.t).Errorf("upstream asked for repository %q", repo)
	}
	if _, err := v1.NewHash(ref); err != nil && !names.ValidTag(ref) && ref != "" {
		(*c.t).Errorf("upstream asked for reference %q", ref)
	}
}

func (c checkingUpstream) Manifest(ctx context.Context, repo, ref string, head bool) (*Manifest, error) {
	c.check(repo, ref)
	return c.fakeUpstream.Manifest(ctx, repo, ref, head)
}

func (c checkingUpstream) Blob(ctx context.Context, repo string, d v1.Hash, head bool) (io.ReadCloser, int64, error) {
	c.check(repo, d.String())
	return c.fakeUpstream.Blob(ctx, repo, d, head)
}

func (c checkingUpstream) Tags(ctx context.Context, repo, query string) ([]byte, string, error) {
	c.check(repo, "")
	return c.fakeUpstream.Tags(ctx, repo, query)
}

// FuzzRequestPath sends arbitrary paths and queries to the cache: it must
// answer without a 500, and pass only valid names upstream.
func FuzzRequestPath(f *testing.F) {
	for _, s := range []string{"/v2/src.test/team/app/manifests/v1", "/v2/team/app/blobs/sha256:00?ns=src.test",
		"/v2/src.test/../x/manifests/v1", "/v2/src.test/a/tags/list?n=1&last=a", "/v2/", "/metrics"} {
		f.Add(s)
	}
	up := newFake()
	up.image("team/app", "v1", 10)
	var cur *testing.T
	c, err := New(Options{Dir: f.TempDir(), MaxSize: 1 << 30, Upstreams: map[string]Upstream{"src.test": checkingUpstream{up, &cur}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(c.Close)
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		cur = t
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL = u
		w := httptest.NewRecorder()
		c.ServeHTTP(w, req)
		if w.Code >= 500 && w.Code != http.StatusBadGateway {
			t.Errorf("GET %q: status %d", target, w.Code)
		}
	})
}
