package push

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ferry-airgap/ferry/internal/registry"
)

// TestListTagsFollowsLinks: a paginated tag list is read to its end
// through the Link headers, and a repository that does not exist has no
// tags.
func TestListTagsFollowsLinks(t *testing.T) {
	pages := [][]string{{"1.0", "1.1"}, {"2.0"}, {"latest"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			return
		case r.URL.Path == "/v2/none/tags/list":
			http.Error(w, `{"errors":[{"code":"NAME_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		var n int
		fmt.Sscan(r.URL.Query().Get("page"), &n)
		if n+1 < len(pages) {
			w.Header().Set("Link", fmt.Sprintf(`</v2/x/tags/list?page=%d>; rel="next"`, n+1))
		}
		fmt.Fprintf(w, `{"name":"x","tags":["%s"]}`, strings.Join(pages[n], `","`))
	}))
	defer srv.Close()
	c := testRepoClient(t, srv, "x")
	tags, err := c.listTags(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for tag := range tags {
		got = append(got, tag)
	}
	slices.Sort(got)
	if strings.Join(got, " ") != "1.0 1.1 2.0 latest" {
		t.Errorf("tags %v, want every page's", got)
	}
	none, err := testRepoClient(t, srv, "none").listTags(context.Background())
	if err != nil || len(none) != 0 {
		t.Errorf("missing repository: %v, %v; want no tags, no error", none, err)
	}
}

func testRepoClient(t *testing.T, srv *httptest.Server, repo string) *repoClient {
	t.Helper()
	c, err := registry.New(registry.Options{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	ref, err := name.NewRepository(host+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Repo(context.Background(), ref, authn.Anonymous)
	if err != nil {
		t.Fatal(err)
	}
	return &repoClient{host: host, repo: repo, base: srv.URL, hc: r, retry: c}
}
