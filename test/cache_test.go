package test

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-airgap/ferry/test/harness"
)

// cached is a running `ferry cache`.
type cached struct{ *server }

// startCache runs `ferry cache --addr 127.0.0.1:0 ARGS` with an empty
// docker config and waits for its "serving on" line.
func startCache(t testing.TB, bin string, args ...string) *cached {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"cache", "--addr", "127.0.0.1:0"}, args...)...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"), "REGISTRY_AUTH_FILE="+filepath.Join(home, "auth.json"))
	return &cached{startServer(t, "cache", cmd)}
}

// metric reads one sample from /metrics.
func (c *cached) metric(t *testing.T, series string) int64 {
	t.Helper()
	resp, err := http.Get("http://" + c.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /metrics", series)
	return 0
}

// buildCrane builds crane from the module cache (go-containerregistry is a
// dependency) into the test's temporary directory; the build cache makes
// every build after the first take about a second.
func buildCrane(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "crane")
	cmd := exec.Command("go", "build", "-o", p, "github.com/google/go-containerregistry/cmd/crane")
	cmd.Dir = harness.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building crane: %v\n%s", err, out)
	}
	return p
}

// pullSecret writes {"auths": {host: {"auth": base64(user:password)}}}.
func pullSecret(t *testing.T, host, user, password string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"auths": map[string]any{
		host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}}})
	p := filepath.Join(t.TempDir(), "pull-secret.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func cacheRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func digestOf(b []byte) string { return "sha256:" + sha256Hex(b) }

// cacheUpstream starts a TLS registry with htpasswd behind a counting
// proxy, seeded with fixtures.
func cacheUpstream(t *testing.T, set harness.FixtureSet) (*harness.Registry, *harness.Counter, []harness.Fixture) {
	t.Helper()
	reg := harness.StartRegistry(t, harness.RegistryOptions{Users: map[string]string{"puller": "s3cret-pw"}, TLS: true})
	fixtures := harness.Seed(t, reg, "puller", set)
	proxy, counter := harness.CountingProxy(t, reg)
	return proxy, counter, fixtures
}

func findFixture(t *testing.T, fs []harness.Fixture, ref string) harness.Fixture {
	t.Helper()
	for _, f := range fs {
		if f.Ref() == ref {
			return f
		}
	}
	t.Fatalf("no fixture %s", ref)
	return harness.Fixture{}
}

func TestCachePullThroughWithCraneSkopeoAndContainerd(t *testing.T) {
	bin := harness.BuildFerry(t)
	crane := buildCrane(t)
	up, counter, fixtures := cacheUpstream(t, harness.SmallSet())
	secret := pullSecret(t, up.Host, "puller", "s3cret-pw")
	c := startCache(t, bin, "--dir", t.TempDir(), "--max-size", "1GiB", "--pull-secret", secret,
		"--ca-cert", up.CAFile, "--upstream", "src.test=https://"+up.Host, "--upstream", "docker.io=https://"+up.Host, "--json")

	// crane, through an alias of the pull-secret's registry (a name with a
	// port cannot lead a repository path).
	console := findFixture(t, fixtures, "spaceone/console:1.12.0")
	if got := strings.TrimSpace(cacheRun(t, crane, "digest", "--insecure", c.addr+"/src.test/"+console.Ref())); got != console.Digest {
		t.Errorf("crane digest = %s, want %s", got, console.Digest)
	}
	counter.Reset()
	layout := t.TempDir()
	cacheRun(t, crane, "pull", "--insecure", "--format", "oci", c.addr+"/src.test/"+console.Ref(), layout)
	if n := counter.Count("GET", harness.KindBlob); n == 0 {
		t.Fatalf("first pull made no upstream blob GET (%s)", counter)
	}
	for _, l := range console.Layers {
		if _, err := os.Stat(filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(l, "sha256:"))); err != nil {
			t.Errorf("layer %s missing from crane's pull: %v", l, err)
		}
	}
	counter.Reset()
	cacheRun(t, crane, "pull", "--insecure", "--format", "oci", c.addr+"/src.test/"+console.Ref(), t.TempDir())
	if n := counter.Count("GET", harness.KindBlob); n != 0 {
		t.Errorf("second pull of the same image: %d upstream blob GETs, want 0 (%s)", n, counter)
	}

	// skopeo (an OCI image: skopeo 1.9 keeps OCI bytes as they are).
	busybox := findFixture(t, fixtures, "library/busybox:1.36")
	dir := filepath.Join(t.TempDir(), "busybox")
	cacheRun(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+c.addr+"/src.test/"+busybox.Ref(), "dir:"+dir)
	m, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil || digestOf(m) != busybox.Digest {
		t.Errorf("skopeo copy: manifest %s, %v; want %s", digestOf(m), err, busybox.Digest)
	}

	// containerd: /v2/REPO/...?ns=docker.io with containerd's Accept headers.
	redis := findFixture(t, fixtures, "library/redis:7.2.4")
	containerdPull(t, "http://"+c.addr, "library/redis", "7.2.4", "docker.io", redis.Digest)

	if code := c.stop(t); code != 0 {
		t.Errorf("exit code after SIGTERM %d, want 0\n%s", code, c.stderr.String())
	}
	out := c.stdout.String()
	if !strings.Contains(out, `"event":"listening"`) || !strings.Contains(out, `"event":"stopped"`) {
		t.Errorf("--json output lacks the listening or stopped line:\n%s", out)
	}
}

// containerdPull fetches ref's index, its first child, the child's config
// and layers as containerd does, checking each digest.
func containerdPull(t *testing.T, base, repo, tag, ns, want string) {
	t.Helper()
	accept := "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*"
	get := func(kind, ref string, wantDigest string) []byte {
		req, _ := http.NewRequest("GET", base+"/v2/"+repo+"/"+kind+"/"+ref+"?ns="+url.QueryEscape(ns), nil)
		req.Header.Set("Accept", accept)
		req.Header.Set("User-Agent", "containerd/v1.7.0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("containerd GET %s %s: %d %v %s", kind, ref, resp.StatusCode, err, b)
		}
		if wantDigest != "" && digestOf(b) != wantDigest {
			t.Fatalf("containerd GET %s %s: digest %s, want %s", kind, ref, digestOf(b), wantDigest)
		}
		return b
	}
	var index struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	if err := json.Unmarshal(get("manifests", tag, want), &index); err != nil || len(index.Manifests) == 0 {
		t.Fatalf("index of %s:%s: %v", repo, tag, err)
	}
	var image struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	d := index.Manifests[0].Digest
	if err := json.Unmarshal(get("manifests", d, d), &image); err != nil {
		t.Fatal(err)
	}
	get("blobs", image.Config.Digest, image.Config.Digest)
	for _, l := range image.Layers {
		get("blobs", l.Digest, l.Digest)
	}
}

func TestCacheConcurrentPullsShareOneDownload(t *testing.T) {
	bin := harness.BuildFerry(t)
	up, counter, fixtures := cacheUpstream(t, harness.LargeLayerSet(48<<20))
	c := startCache(t, bin, "--dir", t.TempDir(), "--max-size", "1GiB",
		"--pull-secret", pullSecret(t, up.Host, "puller", "s3cret-pw"), "--ca-cert", up.CAFile)
	layer := fixtures[0].Layers[0]
	counter.Reset()
	var wg sync.WaitGroup
	var good atomic.Int32
	for range 8 {
		wg.Go(func() {
			resp, err := http.Get("http://" + c.addr + "/v2/" + up.Host + "/large/blob/blobs/" + layer)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			if _, err := io.Copy(h, resp.Body); err != nil {
				t.Error(err)
				return
			}
			if "sha256:"+hex.EncodeToString(h.Sum(nil)) == layer {
				good.Add(1)
			}
		})
	}
	wg.Wait()
	if good.Load() != 8 {
		t.Errorf("%d of 8 clients got the blob whole", good.Load())
	}
	if n := counter.Count("GET", harness.KindBlob); n != 1 {
		t.Errorf("8 concurrent pulls of one blob: %d upstream GETs, want 1 (%s)", n, counter)
	}
}

// switchProxy forwards to target until it is switched off; then every
// request fails as an unreachable host does (connection closed).
func switchProxy(t *testing.T, target *harness.Registry) (*httptest.Server, *atomic.Bool) {
	t.Helper()
	tu, _ := url.Parse(target.URL)
	var down atomic.Bool
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(tu); pr.Out.Host = tu.Host }, Transport: target.Transport()}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			panic(http.ErrAbortHandler)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &down
}

func TestCacheServesStoredTagsWhenUpstreamDown(t *testing.T) {
	bin := harness.BuildFerry(t)
	crane := buildCrane(t)
	up, _, fixtures := cacheUpstream(t, harness.SmallSet())
	sw, down := switchProxy(t, up)
	host := strings.TrimPrefix(sw.URL, "http://")
	c := startCache(t, bin, "--dir", t.TempDir(), "--max-size", "1GiB", "--manifest-ttl", "1s",
		"--pull-secret", pullSecret(t, host, "puller", "s3cret-pw"), "--upstream", "src.test=http://"+host)
	busybox := findFixture(t, fixtures, "library/busybox:1.36")
	ref := c.addr + "/src.test/" + busybox.Ref()
	cacheRun(t, crane, "pull", "--insecure", "--format", "oci", ref, t.TempDir())
	exportThroughCache(t, bin, c, host, filepath.Join(t.TempDir(), "before.tar"))

	down.Store(true)
	time.Sleep(1100 * time.Millisecond) // past --manifest-ttl: the tag must be checked upstream
	if got := strings.TrimSpace(cacheRun(t, crane, "digest", "--insecure", ref)); got != busybox.Digest {
		t.Errorf("upstream down: digest %s, want %s", got, busybox.Digest)
	}
	cacheRun(t, crane, "pull", "--insecure", "--format", "oci", ref, t.TempDir())
	if !strings.Contains(c.stderr.String(), "upstream unreachable; serving the stored manifest") {
		t.Errorf("no log line says the tag was served stale:\n%s", c.stderr.String())
	}
	if n := c.metric(t, `ferry_cache_requests_total{result="stale"}`); n == 0 {
		t.Error("stale requests not counted")
	}
	// An export with a tag filter still works through the cache.
	during := filepath.Join(t.TempDir(), "during.tar")
	exportThroughCache(t, bin, c, host, during)
	bundleHas(t, bin, during, fixtures, "spaceone/console:1.12.0", "spaceone/console:1.11.5", "library/redis:7.2.4")
	// A tag never pulled is an error that names the upstream problem.
	out, err := exec.Command(crane, "digest", "--insecure", c.addr+"/src.test/library/alpine:3.19").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "502") {
		t.Errorf("never-pulled tag, upstream down: %v %s, want a 502", err, out)
	}
}

func TestCacheEvictsLeastRecentlyPulled(t *testing.T) {
	bin := harness.BuildFerry(t)
	crane := buildCrane(t)
	set := harness.FixtureSet{Name: "evict"}
	for _, r := range []string{"evict/a", "evict/b", "evict/c"} {
		set.Specs = append(set.Specs, harness.FixtureSpec{Repo: r, Tag: "v1", Kind: harness.OCIImage, LargeLayer: 400 << 10})
	}
	up, counter, _ := cacheUpstream(t, set)
	const max = 1000 << 10 // two images fit, three do not
	c := startCache(t, bin, "--dir", t.TempDir(), "--max-size", strconv.Itoa(max), "--threshold", "0",
		"--clean-every", "200ms", "--pull-secret", pullSecret(t, up.Host, "puller", "s3cret-pw"), "--ca-cert", up.CAFile,
		"--upstream", "src.test=https://"+up.Host)
	pull := func(repo string) int {
		counter.Reset()
		cacheRun(t, crane, "pull", "--insecure", "--format", "oci", c.addr+"/src.test/"+repo+":v1", t.TempDir())
		return counter.Count("GET", harness.KindBlob)
	}
	pull("evict/a")
	pull("evict/b")
	pull("evict/c")
	deadline := time.Now().Add(30 * time.Second)
	for c.metric(t, "ferry_cache_store_bytes") > max {
		if time.Now().After(deadline) {
			t.Fatalf("store still %d bytes, over %d", c.metric(t, "ferry_cache_store_bytes"), max)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := c.metric(t, `ferry_cache_evictions_total{kind="blob"}`); n == 0 {
		t.Fatal("no blob evicted")
	}
	if n := pull("evict/c"); n != 0 {
		t.Errorf("most recent image c: %d upstream blob GETs, want 0 (kept)", n)
	}
	if n := pull("evict/b"); n != 0 {
		t.Errorf("image b: %d upstream blob GETs, want 0 (kept)", n)
	}
	if n := pull("evict/a"); n == 0 {
		t.Error("least recently pulled image a was not evicted")
	}
}

func TestCacheCredentialsReachOnlyTheirRegistry(t *testing.T) {
	bin := harness.BuildFerry(t)
	up, _, fixtures := cacheUpstream(t, harness.SmallSet())
	var sawAuth atomic.Int32
	var requests atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.Header.Get("Authorization") != "" {
			sawAuth.Add(1)
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="other"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(other.Close)
	c := startCache(t, bin, "--dir", t.TempDir(), "--max-size", "1GiB", "--ca-cert", up.CAFile,
		"--pull-secret", pullSecret(t, up.Host, "puller", "s3cret-pw"),
		"--upstream", "src.test=https://"+up.Host, "--upstream", "other.test=http://"+strings.TrimPrefix(other.URL, "http://"))
	busybox := findFixture(t, fixtures, "library/busybox:1.36")
	for name, want := range map[string]int{"src.test": 200, "other.test": 502} {
		resp, err := http.Get("http://" + c.addr + "/v2/" + name + "/library/busybox/manifests/1.36")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: status %d, want %d: %s", name, resp.StatusCode, want, b)
		}
		if want == 200 && digestOf(b) != busybox.Digest {
			t.Errorf("%s: digest %s, want %s", name, digestOf(b), busybox.Digest)
		}
	}
	if requests.Load() == 0 || sawAuth.Load() != 0 {
		t.Errorf("other registry: %d requests, %d with credentials; want some, none with credentials", requests.Load(), sawAuth.Load())
	}
}

func TestCacheBadFlags(t *testing.T) {
	bin := harness.BuildFerry(t)
	for _, args := range [][]string{
		{"--max-size", "10GiB"},
		{"--dir", t.TempDir(), "--max-size", "ten"},
		{"--dir", t.TempDir(), "--max-size", "1G", "--upstream", "nourl"},
		{"--dir", t.TempDir(), "--max-size", "1G", "--upstream", "x=ftp://host"},
		{"--dir", t.TempDir(), "--max-size", "1G", "--threshold", "-5"},
	} {
		_, stderr, code := harness.Run(t, bin, append([]string{"cache"}, args...)...)
		if code != 2 || !strings.Contains(stderr, "error:") {
			t.Errorf("ferry cache %v: exit %d, want 2\n%s", args, code, stderr)
		}
	}
}

// TestCacheFeedsExport: `ferry export --mirror SOURCE=CACHE/NAME` reads
// through the cache (tag lists included); a second export of the same set
// makes no upstream blob GET.
// exportThroughCache exports spaceone/console (a semver filter: a tag
// list) and library/redis:7.2.4 from srcHost, read through the cache's
// src.test upstream.
func exportThroughCache(t *testing.T, bin string, c *cached, srcHost, out string) {
	t.Helper()
	mapping := filepath.Join(t.TempDir(), "m.yaml")
	y := "tasks:\n  - name: through-cache\n    source:\n      registry: " + srcHost + "\n    mappings:\n" +
		"      - from: spaceone/console\n        tags: ['semver: >=1.11.0']\n      - from: library/redis\n        tags: [7.2.4]\n"
	if err := os.WriteFile(mapping, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: ferryEnv(t)}, bin, "export", "-q", "-f", mapping,
		"-o", out, "--mirror", srcHost+"="+c.addr+"/src.test")
	if code != 0 {
		t.Fatalf("export through the cache: exit %d\n%s\n%s\ncache:\n%s", code, stdout, stderr, c.stderr.String())
	}
}

// bundleHas fails t unless the bundle holds each fixture's digest.
func bundleHas(t *testing.T, bin, bundle string, fixtures []harness.Fixture, refs ...string) {
	t.Helper()
	stdout, _, _ := harness.Run(t, bin, "inspect", "--json", bundle)
	for _, ref := range refs {
		if f := findFixture(t, fixtures, ref); !strings.Contains(stdout, f.Digest) {
			t.Errorf("bundle %s lacks %s (%s)", filepath.Base(bundle), ref, f.Digest)
		}
	}
}

func TestCacheFeedsExport(t *testing.T) {
	bin := harness.BuildFerry(t)
	up, counter, fixtures := cacheUpstream(t, harness.SmallSet())
	c := startCache(t, bin, "--dir", t.TempDir(), "--max-size", "1GiB", "--ca-cert", up.CAFile,
		"--pull-secret", pullSecret(t, up.Host, "puller", "s3cret-pw"), "--upstream", "src.test=https://"+up.Host)
	dir := t.TempDir()
	export := func(out string) { exportThroughCache(t, bin, c, up.Host, out) }
	counter.Reset()
	export(filepath.Join(dir, "one.tar"))
	if counter.Count("GET", harness.KindBlob) == 0 || counter.Count("GET", harness.KindTags) == 0 {
		t.Fatalf("first export: upstream saw %s, want blob GETs and a tag list", counter)
	}
	bundleHas(t, bin, filepath.Join(dir, "one.tar"), fixtures, "spaceone/console:1.12.0", "spaceone/console:1.11.5", "library/redis:7.2.4")
	counter.Reset()
	export(filepath.Join(dir, "two.tar"))
	if n := counter.Count("GET", harness.KindBlob); n != 0 {
		t.Errorf("second export through the cache: %d upstream blob GETs, want 0 (%s)", n, counter)
	}
}

// TestCacheServesTLSWithBasicAuth: --tls-cert/--tls-key and --htpasswd,
// as ferry serve has them; skopeo pulls with credentials over HTTPS.
func TestCacheServesTLSWithBasicAuth(t *testing.T) {
	bin := harness.BuildFerry(t)
	up, _, fixtures := cacheUpstream(t, harness.SmallSet())
	cert, key := up.CA.Issue(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("cache-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("ops:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startCache(t, bin, "--dir", t.TempDir(), "--max-size", "1GiB", "--ca-cert", up.CAFile,
		"--pull-secret", pullSecret(t, up.Host, "puller", "s3cret-pw"), "--upstream", "src.test=https://"+up.Host,
		"--tls-cert", cert, "--tls-key", key, "--htpasswd", htpasswd, "--json-log")
	busybox := findFixture(t, fixtures, "library/busybox:1.36")
	ref := "docker://" + c.addr + "/src.test/" + busybox.Ref()
	certDir := t.TempDir()
	if err := os.Symlink(up.CAFile, filepath.Join(certDir, "ca.crt")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("skopeo", "inspect", "--raw", "--cert-dir", certDir, ref).CombinedOutput(); err == nil {
		t.Fatalf("skopeo without credentials got the manifest:\n%s", out)
	}
	raw := cacheRun(t, "skopeo", "inspect", "--raw", "--cert-dir", certDir, "--creds", "ops:cache-pw", ref)
	if digestOf([]byte(raw)) != busybox.Digest {
		t.Errorf("over HTTPS with basic auth: digest %s, want %s", digestOf([]byte(raw)), busybox.Digest)
	}
	// The access log line is written once the handler returns, which may
	// be just after skopeo has read the body: wait for it a little.
	logged := func() bool {
		out := c.stderr.String()
		return strings.Contains(out, `"msg":"request"`) && strings.Contains(out, `"user":"ops"`)
	}
	for deadline := time.Now().Add(5 * time.Second); !logged() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !logged() {
		t.Errorf("no JSON access-log line with the user:\n%s", c.stderr.String())
	}
}
