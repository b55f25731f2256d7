package push_test

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"

	"github.com/ferry-airgap/ferry/push"
)

// TestHarborProxyCacheHiddenFromAPI breaks the premise of the up-front
// proxy-cache check (that Harbor's project list shows registry_id): this
// Harbor hides the project from the list, and its registry answers every
// upload start as real Harbor v2.15 does for a proxy-cache project. The
// import still ends in one proxy-cache refusal, nothing written.
func TestHarborProxyCacheHiddenFromAPI(t *testing.T) {
	path, _ := testBundle(t)
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	var mu sync.Mutex
	var writes []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2.0/systeminfo", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"harbor_version":"v2.15.2-fake"}`)
	})
	mux.HandleFunc("GET /api/v2.0/users/current", func(w http.ResponseWriter, r *http.Request) {
		harborErr(w, http.StatusForbidden, "FORBIDDEN", "robot")
	})
	mux.HandleFunc("HEAD /api/v2.0/projects", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /api/v2.0/projects", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `[]`) })
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			mu.Lock()
			writes = append(writes, r.Method+" "+r.URL.Path)
			mu.Unlock()
			proj := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/v2/"), "/", 2)[0]
			harborErr(w, http.StatusForbidden, "DENIED", "denied: can not push artifact to a proxy project: "+proj)
			return
		}
		reg.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	sum, err := run(t, path, host+"/cache", asRobot("pw"))
	var refused *push.RefusalError
	if !errors.Is(err, push.ErrFailed) || !errors.As(err, &refused) || refused.Kind != push.RefusedProxyCache || refused.Project != "cache" {
		t.Fatalf("err = %v, want one proxy-cache refusal of project cache", err)
	}
	if sum.Failed != len(sum.Images) || len(sum.Refusals) != 1 || len(sum.Refusals[0].Images) != sum.Failed {
		t.Fatalf("%d of %d failed, refusals %+v", sum.Failed, len(sum.Images), sum.Refusals)
	}
	for _, f := range sum.Failures {
		if f.Refusal != push.RefusedProxyCache {
			t.Errorf("failure %s is not marked as the refusal: %+v", f.Image, f)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(writes) != 1 || !strings.HasPrefix(writes[0], "POST ") {
		t.Errorf("writes tried: %v, want the one upload start of the push check", writes)
	}
}
