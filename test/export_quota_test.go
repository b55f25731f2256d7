package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// quotaProxy forwards to target and, like Docker Hub, reports a pull quota
// on manifest responses that every manifest GET uses up (HEADs are free).
func quotaProxy(t *testing.T, target *harness.Registry, quota int64) (string, *atomic.Int64) {
	t.Helper()
	u, _ := url.Parse(target.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	var left atomic.Int64
	left.Store(quota)
	var gets atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") {
			n := left.Load()
			if r.Method == http.MethodGet {
				if n <= 0 {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusTooManyRequests)
					fmt.Fprint(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}`)
					return
				}
				n = left.Add(-1)
				gets.Add(1)
			}
			w.Header().Set("ratelimit-limit", fmt.Sprintf("%d;w=21600", quota))
			w.Header().Set("ratelimit-remaining", fmt.Sprintf("%d;w=21600", n))
		}
		rp.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), &gets
}

// TestExportMinQuota: with --min-quota, export stops cleanly before the
// remaining pull quota drops below the floor, keeps its cache, writes no
// bundle, and a later run with more quota completes from the cache.
func TestExportMinQuota(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, reg, "", harness.SmallSet())
	host, gets := quotaProxy(t, reg, 6)
	dir := t.TempDir()
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+host+"\n    mappings:\n      - from: spaceone/console\n        tags: ['regex: 1\\.1[01]\\..*']\n")
	out := filepath.Join(dir, "b.tar")
	cache := filepath.Join(dir, "cache")
	stdout, stderr, code := harness.Run(t, bin, "export", "-q", "--jobs", "1", "--json", "-f", mapping, "-o", out, "--cache", cache, "--min-quota", "3")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "--min-quota") || !strings.Contains(stderr, "pull") {
		t.Errorf("stderr does not explain the stop:\n%s", stderr)
	}
	if g := gets.Load(); g > 3 {
		t.Errorf("%d manifest GETs made; the floor of 3 out of 6 allows at most 3", g)
	}
	var sum struct {
		ManifestGets   int64 `json:"manifestGets"`
		QuotaRemaining *int  `json:"quotaRemaining"`
	}
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("summary: %v\n%s", err, stdout)
	}
	if sum.QuotaRemaining == nil || *sum.QuotaRemaining < 3 {
		t.Errorf("summary quota remaining = %v, want ≥ 3", sum.QuotaRemaining)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("a stopped export wrote a bundle")
	}
	cached, _ := os.ReadDir(filepath.Join(cache, "blobs", "sha256"))
	if len(cached) == 0 {
		t.Error("the cache was not kept")
	}

	// A fresh quota window: the rerun completes, re-using what was cached.
	host2, gets2 := quotaProxy(t, reg, 100)
	mapping2 := writeFile(t, filepath.Join(dir, "m2.yaml"), strings.Replace(string(mustRead(t, mapping)), host, host2, 1))
	stdout, stderr, code = harness.Run(t, bin, "export", "-q", "--jobs", "1", "--json", "-f", mapping2, "-o", out, "--cache", cache, "--min-quota", "3")
	if code != 0 {
		t.Fatalf("rerun exit %d\n%s\n%s", code, stdout, stderr)
	}
	if g := gets2.Load(); g+gets.Load() != 5 {
		t.Errorf("manifest GETs: %d then %d; the 5 distinct manifests should be fetched once in all", gets.Load(), g)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
