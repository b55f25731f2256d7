package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

// crashObject is one thing a client pulls: a manifest (by tag or digest)
// or a blob, and the digest its body must have.
type crashObject struct {
	repo, kind, ref string // kind: "manifests" or "blobs"
	want            string
}

func (o crashObject) path() string { return "/v2/src.test/" + o.repo + "/" + o.kind + "/" + o.ref }

var manifestAccept = strings.Join([]string{"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json"}, ", ")

// crashObjects walks every fixture on the registry itself: each tag, and
// every manifest, config and layer below it.
func crashObjects(t *testing.T, reg *harness.Registry, fixtures []harness.Fixture) []crashObject {
	t.Helper()
	seen := map[string]bool{}
	var out []crashObject
	var walk func(repo, digest string)
	walk = func(repo, digest string) {
		if seen[repo+"@"+digest] {
			return
		}
		seen[repo+"@"+digest] = true
		out = append(out, crashObject{repo, "manifests", digest, digest})
		req, _ := http.NewRequest("GET", reg.URL+"/v2/"+repo+"/manifests/"+digest, nil)
		req.Header.Set("Accept", manifestAccept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m struct {
			Config    *struct{ Digest string } `json:"config"`
			Layers    []struct{ Digest string }
			Manifests []struct{ Digest string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatalf("%s@%s: %v", repo, digest, err)
		}
		if m.Config != nil {
			m.Layers = append(m.Layers, *m.Config)
		}
		for _, l := range m.Layers {
			if !seen[repo+"@"+l.Digest] {
				seen[repo+"@"+l.Digest] = true
				out = append(out, crashObject{repo, "blobs", l.Digest, l.Digest})
			}
		}
		for _, c := range m.Manifests {
			walk(repo, c.Digest)
		}
	}
	for _, f := range fixtures {
		out = append(out, crashObject{f.Repo, "manifests", f.Tag, f.Digest})
		walk(f.Repo, f.Digest)
	}
	return out
}

// crashPull GETs o through the cache. A body that arrives whole (no read
// error, status 200) must have o's digest: that is the check that nothing
// partial or wrong is ever served, before a kill as after it. It reports
// whether o was served whole.
func crashPull(t *testing.T, client *http.Client, base string, o crashObject) bool {
	return crashPullCount(t, client, base, o, nil)
}

// crashCounts counts the answers clients got around kills.
type crashCounts struct{ whole, cut atomic.Int64 }

func crashPullCount(t *testing.T, client *http.Client, base string, o crashObject, n *crashCounts) bool {
	req, _ := http.NewRequest("GET", base+o.path(), nil)
	req.Header.Set("Accept", manifestAccept)
	resp, err := client.Do(req)
	if err != nil {
		return false // killed: no answer
	}
	defer resp.Body.Close()
	h := sha256.New()
	_, err = io.Copy(h, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		if err != nil && n != nil {
			n.cut.Add(1)
		}
		return false // cut by the kill (the client sees the error) or refused
	}
	if n != nil {
		n.whole.Add(1)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != o.want {
		t.Errorf("%s served whole with digest %s, want %s", o.path(), got, o.want)
	}
	if dcd := resp.Header.Get("Docker-Content-Digest"); dcd != "" && dcd != o.want {
		t.Errorf("%s: Docker-Content-Digest %s, want %s", o.path(), dcd, o.want)
	}
	return true
}

// pullUntilKilled runs workers goroutines pulling objs (each its own
// shuffled order, over and over) until the cache stops answering.
func pullUntilKilled(t *testing.T, rng *rand.Rand, base string, objs []crashObject, workers int, n *crashCounts) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range workers {
		order := rng.Perm(len(objs))
		wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			for {
				for _, i := range order {
					req, _ := http.NewRequest("GET", base+"/v2/", nil)
					if resp, err := client.Do(req); err != nil {
						return // the cache is gone
					} else {
						_ = resp.Body.Close()
					}
					crashPullCount(t, client, base, objs[i], n)
				}
			}
		})
	}
	return &wg
}

// verifyStore checks every file the store holds as a blob or manifest
// against its name: nothing partial was kept.
func verifyStore(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, sub := range []string{"blobs", "manifests"} {
		des, _ := os.ReadDir(filepath.Join(dir, sub, "sha256"))
		for _, de := range des {
			if strings.HasSuffix(de.Name(), ".json") || strings.Contains(de.Name(), ".tmp") || strings.HasPrefix(de.Name(), ".") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, sub, "sha256", de.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if sha256Hex(b) != de.Name() {
				t.Errorf("store %s/sha256/%s holds bytes with digest %s", sub, de.Name(), sha256Hex(b))
			}
			n++
		}
	}
	return n
}

// crashSlowProxy forwards to target and sends blob bodies larger than 1 MiB
// in 64 KiB steps with a pause between them, so that kills land in the
// middle of downloads, not only between requests.
func crashSlowProxy(t *testing.T, target *harness.Registry) string {
	t.Helper()
	tu, _ := url.Parse(target.URL)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(tu); pr.Out.Host = tu.Host },
		ModifyResponse: func(resp *http.Response) error {
			if harness.Kind(resp.Request.URL.Path) == harness.KindBlob && resp.ContentLength > 1<<20 {
				resp.Body = &crashSlowBody{rc: resp.Body}
			}
			return nil
		},
		ErrorLog: log.New(io.Discard, "", 0), // the cache's kills cut requests
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

type crashSlowBody struct{ rc io.ReadCloser }

func (b *crashSlowBody) Read(p []byte) (int, error) {
	time.Sleep(3 * time.Millisecond)
	return b.rc.Read(p[:min(len(p), 64<<10)])
}

func (b *crashSlowBody) Close() error { return b.rc.Close() }

// TestCacheCrashAndRerun: `ferry cache` over a real registry, 6 clients
// pulling manifests and blobs in parallel, killed with SIGKILL at a random
// moment (seeded), twice per run, then restarted on the same --dir: every
// body served whole, before a kill or after, matches its digest; the
// store holds only verified files; after the last restart everything is
// served whole.
func TestCacheCrashAndRerun(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fixtures := harness.Seed(t, reg, "", harness.SmallSet())
	fixtures = append(fixtures, harness.Seed(t, reg, "", harness.LargeLayerSet(6<<20))...)
	objs := crashObjects(t, reg, fixtures)
	upstream := crashSlowProxy(t, reg)
	const runs, workers = 20, 6
	seed := uint64(22)
	if s := os.Getenv("FERRY_CRASH_SEED"); s != "" {
		_, _ = fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (FERRY_CRASH_SEED=N picks other kill points)", seed)
	rng := rand.New(rand.NewPCG(seed, 22))
	var stored atomic.Int64
	var counts crashCounts
	for run := range runs {
		dir := t.TempDir()
		args := []string{"--dir", dir, "--max-size", "1GiB", "--upstream", "src.test=http://" + upstream}
		for kill := range 2 {
			c := startCache(t, bin, args...)
			wg := pullUntilKilled(t, rng, "http://"+c.addr, objs, workers, &counts)
			time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond) // a random point, not a timing check
			_ = c.cmd.Process.Kill()
			<-c.done
			wg.Wait()
			if t.Failed() {
				t.Fatalf("run %d, kill %d (seed %d): served a body that does not match its digest", run, kill, seed)
			}
			verifyStore(t, dir)
		}
		c := startCache(t, bin, args...)
		client := &http.Client{}
		for _, o := range objs {
			if !crashPull(t, client, "http://"+c.addr, o) {
				t.Errorf("run %d (seed %d): after restart, %s not served whole\n%s", run, seed, o.path(), c.stderr.String())
			}
		}
		stored.Add(int64(verifyStore(t, dir)))
		_ = c.cmd.Process.Kill()
		<-c.done
		if t.Failed() {
			t.Fatalf("run %d (seed %d) failed", run, seed)
		}
	}
	t.Logf("before kills: %d bodies served whole (checked), %d cut by a kill; %d stored files checked",
		counts.whole.Load(), counts.cut.Load(), stored.Load())
	if counts.whole.Load() == 0 || stored.Load() == 0 {
		t.Error("no body was served before a kill, or the store never held anything: the test checked nothing")
	}
}
