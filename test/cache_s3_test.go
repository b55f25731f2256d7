package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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
	"syscall"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/internal/objstore"
	"github.com/ferry-airgap/ferry/test/harness"
)

// s3Replica runs one `ferry cache` replica on bucket (prefix "cache")
// of the test binary's SeaweedFS, reached at endpoint, with its own --dir.
func s3Replica(t testing.TB, bin string, sw *harness.Seaweed, endpoint, bucket string, args ...string) *cached {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"cache", "--addr", "127.0.0.1:0", "--dir", t.TempDir(),
		"--store", "s3://" + bucket + "/cache", "--s3-endpoint", endpoint}, args...)...)
	home := t.TempDir()
	cmd.Env = append(append(os.Environ(), "HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"),
		"REGISTRY_AUTH_FILE="+filepath.Join(home, "auth.json")), sw.Env()...)
	return &cached{startServer(t, "cache", cmd)}
}

// getBlob GETs a blob through a cache and reports whether it came whole
// and digest-correct.
func getBlob(t *testing.T, addr, path, digest string) bool {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Log(err)
		return false
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil || resp.StatusCode != 200 {
		return false
	}
	return "sha256:"+hex.EncodeToString(h.Sum(nil)) == digest
}

// bucketObjects lists the cache's objects: key (under the prefix) → size,
// and checks that every blob and manifest under its final key holds bytes
// that match the key's digest (no partial or foreign object).
func bucketObjects(t *testing.T, sw *harness.Seaweed, bucket string) map[string]int64 {
	t.Helper()
	loc, _ := objstore.ParseLocation("s3://" + bucket + "/cache")
	st, err := objstore.Open(loc, objstore.Options{Endpoint: sw.Endpoint, Getenv: envOf(sw)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	out := map[string]int64{}
	err = st.List(ctx, "", func(i objstore.Info) error {
		out[i.Key] = i.Size
		hexd, final := finalKey(i.Key)
		if !final {
			return nil
		}
		got, err := objectDigest(ctx, st, i.Key)
		if errors.Is(err, objstore.ErrNotExist) { // evicted since listed
			delete(out, i.Key)
			return nil
		}
		if err != nil {
			return err
		}
		if got != "sha256:"+hexd {
			t.Errorf("object %s (%d bytes) holds bytes of %s", i.Key, i.Size, got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func finalKey(k string) (hexd string, ok bool) {
	for _, p := range []string{"blobs/sha256/", "manifests/sha256/"} {
		if rest, found := strings.CutPrefix(k, p); found && !strings.Contains(rest, ".") {
			return rest, true
		}
	}
	return "", false
}

func envOf(sw *harness.Seaweed) func(string) string {
	m := map[string]string{}
	for _, kv := range sw.Env() {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

// storedBytes sums the blobs and manifests under their final keys.
func storedBytes(objs map[string]int64) int64 {
	var n int64
	for k, size := range objs {
		if _, ok := finalKey(k); ok {
			n += size
		}
	}
	return n
}

// TestCacheS3TwoReplicasShareOneStore: a blob one replica fetched is
// served by the other with no upstream GET; 8 concurrent pulls of one
// blob across both make at most one upstream GET per replica and keep one
// object.
func TestCacheS3TwoReplicasShareOneStore(t *testing.T) {
	sw := harness.StartSeaweed(t)
	bucket := sw.Bucket(t)
	bin := harness.BuildFerry(t)
	crane := buildCrane(t)
	up, counter, fixtures := cacheUpstream(t, harness.SmallSet())
	secret := pullSecret(t, up.Host, "puller", "s3cret-pw")
	common := []string{"--max-size", "1GiB", "--pull-secret", secret, "--ca-cert", up.CAFile, "--upstream", "src.test=https://" + up.Host}
	a := s3Replica(t, bin, sw, sw.Endpoint, bucket, common...)
	b := s3Replica(t, bin, sw, sw.Endpoint, bucket, common...)

	console := findFixture(t, fixtures, "spaceone/console:1.12.0")
	counter.Reset()
	cacheRun(t, crane, "pull", "--insecure", "--format", "oci", a.addr+"/src.test/"+console.Ref(), t.TempDir())
	if n := counter.Count("GET", harness.KindBlob); n == 0 {
		t.Fatalf("first pull through replica a made no upstream blob GET (%s)", counter)
	}
	counter.Reset()
	layout := t.TempDir()
	cacheRun(t, crane, "pull", "--insecure", "--format", "oci", b.addr+"/src.test/"+console.Ref(), layout)
	if n := counter.Count("GET", harness.KindBlob); n != 0 {
		t.Errorf("pull through replica b of what a fetched: %d upstream blob GETs, want 0 (%s)", n, counter)
	}
	if got := strings.TrimSpace(cacheRun(t, crane, "digest", "--insecure", b.addr+"/src.test/"+console.Ref())); got != console.Digest {
		t.Errorf("replica b: digest %s, want %s", got, console.Digest)
	}
	for _, l := range console.Layers {
		if _, err := os.Stat(filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(l, "sha256:"))); err != nil {
			t.Errorf("layer %s missing from the pull through b: %v", l, err)
		}
	}
	// Range requests are served from the object.
	if status, n := getRange(t, "http://"+b.addr+"/v2/src.test/"+console.Repo+"/blobs/"+console.Layers[0]); status != http.StatusPartialContent || n != 4 {
		t.Errorf("Range bytes=1-4: %d, %d bytes; want 206, 4 bytes", status, n)
	}
	bucketObjects(t, sw, bucket)
}

func TestCacheS3ConcurrentPullsAcrossReplicas(t *testing.T) {
	sw := harness.StartSeaweed(t)
	bucket := sw.Bucket(t)
	bin := harness.BuildFerry(t)
	up, counter, fixtures := cacheUpstream(t, harness.LargeLayerSet(24<<20))
	common := []string{"--max-size", "1GiB", "--pull-secret", pullSecret(t, up.Host, "puller", "s3cret-pw"), "--ca-cert", up.CAFile}
	replicas := []*cached{s3Replica(t, bin, sw, sw.Endpoint, bucket, common...), s3Replica(t, bin, sw, sw.Endpoint, bucket, common...)}
	layer := fixtures[0].Layers[0]
	counter.Reset()
	var wg sync.WaitGroup
	var good atomic.Int32
	for i := range 8 {
		wg.Go(func() {
			if getBlob(t, replicas[i%2].addr, "/v2/"+up.Host+"/large/blob/blobs/"+layer, layer) {
				good.Add(1)
			}
		})
	}
	wg.Wait()
	if good.Load() != 8 {
		t.Errorf("%d of 8 clients got the blob whole", good.Load())
	}
	if n := counter.Count("GET", harness.KindBlob); n < 1 || n > 2 {
		t.Errorf("8 concurrent pulls across 2 replicas: %d upstream GETs, want 1 or 2 (%s)", n, counter)
	}
	objs := bucketObjects(t, sw, bucket)
	var blobs int
	for k, size := range objs {
		if strings.HasPrefix(k, "blobs/") {
			blobs++
			if k != "blobs/sha256/"+strings.TrimPrefix(layer, "sha256:") || size != 24<<20 {
				t.Errorf("unexpected object %s (%d bytes)", k, size)
			}
		}
	}
	if blobs != 1 {
		t.Errorf("%d blob objects, want 1: %v", blobs, objs)
	}
}

// slowPutProxy forwards to SeaweedFS; a PUT of a blob's final key is
// reported on halfway once half its body has gone through.
func slowPutProxy(t *testing.T, endpoint string) (*httptest.Server, chan struct{}) {
	t.Helper()
	target, _ := url.Parse(endpoint)
	halfway := make(chan struct{})
	var once sync.Once
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host // the request is signed for this host
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/sha256/") && r.ContentLength > 0 {
			r.Body = &halfwayReader{r: r.Body, left: r.ContentLength / 2, hit: func() { once.Do(func() { close(halfway) }) }}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, halfway
}

type halfwayReader struct {
	r    io.ReadCloser
	left int64
	hit  func()
}

func (h *halfwayReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if h.left -= int64(n); h.left <= 0 {
		h.hit()
		time.Sleep(10 * time.Millisecond) // let the kill land mid-body
	}
	return n, err
}

func (h *halfwayReader) Close() error { return h.r.Close() }

// TestCacheS3ReplicaKilledMidUpload: a replica killed (-9) while it puts a
// blob leaves no object under the blob's key, or a whole one; the other
// replica serves the blob whole.
func TestCacheS3ReplicaKilledMidUpload(t *testing.T) {
	sw := harness.StartSeaweed(t)
	bucket := sw.Bucket(t)
	bin := harness.BuildFerry(t)
	up, _, fixtures := cacheUpstream(t, harness.LargeLayerSet(24<<20))
	common := []string{"--max-size", "1GiB", "--pull-secret", pullSecret(t, up.Host, "puller", "s3cret-pw"), "--ca-cert", up.CAFile}
	proxy, halfway := slowPutProxy(t, sw.Endpoint)
	a := s3Replica(t, bin, sw, proxy.URL, bucket, common...)
	layer := fixtures[0].Layers[0]
	path := "/v2/" + up.Host + "/large/blob/blobs/" + layer
	go func() {
		resp, err := http.Get("http://" + a.addr + path)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	select {
	case <-halfway:
	case <-time.After(2 * time.Minute):
		t.Fatal("the replica never put the blob")
	}
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	objs := bucketObjects(t, sw, bucket) // errors on a partial object
	for k := range objs {
		if strings.HasPrefix(k, "blobs/") {
			t.Logf("object %s present after the kill (whole: checked)", k)
		}
	}
	b := s3Replica(t, bin, sw, sw.Endpoint, bucket, common...)
	if !getBlob(t, b.addr, path, layer) {
		t.Error("replica b did not serve the blob whole after a was killed mid-upload")
	}
	objs = bucketObjects(t, sw, bucket)
	if objs["blobs/sha256/"+strings.TrimPrefix(layer, "sha256:")] != 24<<20 {
		t.Errorf("after b's pull the blob is not stored whole: %v", objs)
	}
}

// TestCacheS3EvictionAcrossReplicas: two replicas clean one store down to
// --max-size, least recently used first, where "used" counts pulls through
// either replica (access batches merged by whichever replica holds the
// cleaner's lease).
func TestCacheS3EvictionAcrossReplicas(t *testing.T) {
	sw := harness.StartSeaweed(t)
	bucket := sw.Bucket(t)
	bin := harness.BuildFerry(t)
	crane := buildCrane(t)
	set := harness.FixtureSet{Name: "evict"}
	for _, r := range []string{"evict/a", "evict/b", "evict/c"} {
		set.Specs = append(set.Specs, harness.FixtureSpec{Repo: r, Tag: "v1", Kind: harness.OCIImage, LargeLayer: 400 << 10})
	}
	up, counter, fixtures := cacheUpstream(t, set)
	const max = 1000 << 10 // two images fit, three do not
	common := []string{"--max-size", strconv.Itoa(max), "--threshold", "0", "--clean-every", "200ms", "--s3-access-flush", "100ms",
		"--pull-secret", pullSecret(t, up.Host, "puller", "s3cret-pw"), "--ca-cert", up.CAFile, "--upstream", "src.test=https://" + up.Host}
	a := s3Replica(t, bin, sw, sw.Endpoint, bucket, common...)
	b := s3Replica(t, bin, sw, sw.Endpoint, bucket, common...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replica a:\n%s\nreplica b:\n%s", a.stderr.String(), b.stderr.String())
		}
	})
	pull := func(c *cached, repo string) int {
		counter.Reset()
		cacheRun(t, crane, "pull", "--insecure", "--format", "oci", c.addr+"/src.test/"+repo+":v1", t.TempDir())
		return counter.Count("GET", harness.KindBlob)
	}
	pull(a, "evict/a")
	pull(b, "evict/b")
	// a used again, through b: b's access batch must say so before c
	// pushes the store over the bound.
	imgA := findFixture(t, fixtures, "evict/a:v1")
	keysA := []string{"manifests/sha256/" + strings.TrimPrefix(imgA.Digest, "sha256:"), "blobs/sha256/" + configOf(t, a, "evict/a")}
	for _, l := range imgA.Layers {
		keysA = append(keysA, "blobs/sha256/"+strings.TrimPrefix(l, "sha256:"))
	}
	before := time.Now()
	if n := pull(b, "evict/a"); n != 0 {
		t.Fatalf("image a through replica b: %d upstream blob GETs, want 0", n)
	}
	waitFor(t, "replica b's access batch naming all of image a", func() bool {
		at := accessTimes(t, sw, bucket)
		for _, k := range keysA {
			if at[k].Before(before) {
				return false
			}
		}
		return true
	})
	pull(a, "evict/c")
	waitFor(t, "the store down to --max-size", func() bool { return storedBytes(bucketObjects(t, sw, bucket)) <= max })
	if n := pull(b, "evict/c"); n != 0 {
		t.Errorf("most recent image c: %d upstream blob GETs, want 0 (kept)", n)
	}
	if n := pull(a, "evict/a"); n != 0 {
		t.Errorf("image a, used again through b: %d upstream blob GETs, want 0 (kept)", n)
	}
	if n := pull(a, "evict/b"); n == 0 {
		t.Error("least recently used image b was not evicted")
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// configOf returns the hex digest of the config of repo:v1, read through c.
func configOf(t *testing.T, c *cached, repo string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+c.addr+"/v2/src.test/"+repo+"/manifests/v1", nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m struct{ Config struct{ Digest string } }
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || m.Config.Digest == "" {
		t.Fatalf("manifest of %s: %v", repo, err)
	}
	return strings.TrimPrefix(m.Config.Digest, "sha256:")
}

// accessTimes merges the access batches and merged log: object key → last use.
func accessTimes(t *testing.T, sw *harness.Seaweed, bucket string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	for _, line := range strings.Split(accessLogs(t, sw, bucket), "\n") {
		k, ns, _ := strings.Cut(line, " ")
		if n, err := strconv.ParseInt(ns, 10, 64); err == nil && time.Unix(0, n).After(out[k]) {
			out[k] = time.Unix(0, n)
		}
	}
	return out
}

// accessLogs returns the access batches and merged log, concatenated.
func accessLogs(t *testing.T, sw *harness.Seaweed, bucket string) string {
	t.Helper()
	loc, _ := objstore.ParseLocation("s3://" + bucket + "/cache")
	st, err := objstore.Open(loc, objstore.Options{Endpoint: sw.Endpoint, Getenv: envOf(sw)})
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	ctx := context.Background()
	err = st.List(ctx, "access/", func(i objstore.Info) error {
		b, _, err := st.Get(ctx, i.Key, 64<<20)
		if errors.Is(err, objstore.ErrNotExist) { // merged and removed meanwhile
			return nil
		}
		all.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return all.String()
}

// TestCacheS3BadFlags: object storage flags that cannot work are bad usage
// (exit 2), found before anything starts.
func TestCacheS3BadFlags(t *testing.T) {
	bin := harness.BuildFerry(t)
	for _, args := range [][]string{
		{"--s3-endpoint", "http://127.0.0.1:9000"}, // no --store
		{"--s3-redirect"},                          // no --store
		{"--store", "bucket/prefix"},
		{"--store", "s3://"},
		{"--store", "s3://bucket/p", "--s3-endpoint", "http://10.1.2.3:9000"}, // credentials in the clear
		{"--store", "s3://bucket/p", "--s3-endpoint", "ftp://127.0.0.1"},
		{"--store", "s3://bucket/p", "--s3-access-flush", "0s"},
	} {
		full := append([]string{"cache", "--dir", t.TempDir(), "--max-size", "1G", "--upstream", "x=http://127.0.0.1:1"}, args...)
		_, stderr, code := harness.Run(t, bin, full...)
		if code != 2 || !strings.Contains(stderr, "error:") {
			t.Errorf("ferry %v: exit %d, want 2\n%s", full, code, stderr)
		}
	}
}

// getRange GETs bytes 1-4 of url and returns the status and the bytes
// that came.
func getRange(t *testing.T, url string) (int, int) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Range", "bytes=1-4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	part, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, len(part)
}

// TestCacheS3Redirect: with --s3-redirect a replica answers a GET of a
// stored blob with 307 to a presigned URL of its object (a HEAD, and the
// first GET that fetches upstream, are answered by the replica); the URL
// reads the blob without credentials, with Range, and crane pulls through
// the replica, following the redirects, with the source digest and no
// upstream blob GET.
func TestCacheS3Redirect(t *testing.T) {
	sw := harness.StartSeaweed(t)
	bucket := sw.Bucket(t)
	bin := harness.BuildFerry(t)
	crane := buildCrane(t)
	up, counter, fixtures := cacheUpstream(t, harness.SmallSet())
	secret := pullSecret(t, up.Host, "puller", "s3cret-pw")
	a := s3Replica(t, bin, sw, sw.Endpoint, bucket, "--max-size", "1GiB", "--pull-secret", secret, "--ca-cert", up.CAFile,
		"--upstream", "src.test=https://"+up.Host, "--s3-redirect")
	console := findFixture(t, fixtures, "spaceone/console:1.12.0")
	blob := "http://" + a.addr + "/v2/src.test/" + console.Repo + "/blobs/" + console.Layers[0]
	if !getBlob(t, a.addr, strings.TrimPrefix(blob, "http://"+a.addr), console.Layers[0]) {
		t.Fatal("first GET (a miss) did not give the blob")
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(blob)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, sw.Endpoint+"/"+bucket+"/cache/blobs/sha256/") || !strings.Contains(loc, "X-Amz-Signature=") {
		t.Fatalf("GET of a stored blob: %d, Location %q; want 307 to a presigned URL on %s", resp.StatusCode, loc, sw.Endpoint)
	}
	if strings.Contains(loc, sw.SecretKey) {
		t.Error("the presigned URL carries the secret key")
	}
	req, _ := http.NewRequest("HEAD", blob, nil)
	if resp, err := noFollow.Do(req); err != nil || resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != console.Layers[0] {
		t.Errorf("HEAD of a stored blob: %v %v, want 200 from the replica", resp, err)
	}
	if status, n := getRange(t, loc); status != http.StatusPartialContent || n != 4 {
		t.Errorf("Range on the presigned URL: %d, %d bytes; want 206, 4 bytes", status, n)
	}
	cacheRun(t, crane, "pull", "--insecure", "--format", "oci", a.addr+"/src.test/"+console.Ref(), t.TempDir())
	counter.Reset()
	layout := t.TempDir()
	cacheRun(t, crane, "pull", "--insecure", "--format", "oci", a.addr+"/src.test/"+console.Ref(), layout)
	if n := counter.Count("GET", harness.KindBlob); n != 0 {
		t.Errorf("second pull: %d upstream blob GETs, want 0", n)
	}
	if got := ociLayoutDigest(t, layout); got != console.Digest {
		t.Errorf("pull through redirects: %s, want %s", got, console.Digest)
	}
	checkLayoutBlobs(t, layout)
	metrics := doHTTP(t, "GET", "http://"+a.addr+"/metrics").body
	if !strings.Contains(metrics, "ferry_cache_redirects_total") || strings.Contains(metrics, "ferry_cache_redirects_total 0\n") {
		t.Errorf("metrics count no redirect:\n%s", metrics)
	}
}
