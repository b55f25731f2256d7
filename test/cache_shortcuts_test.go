package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

// gatedProxy forwards to target; a blob body larger than 1 MiB stops
// after its first half until gate is closed.
func gatedProxy(t *testing.T, target *harness.Registry, gate <-chan struct{}) string {
	t.Helper()
	tu, _ := url.Parse(target.URL)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(tu); pr.Out.Host = tu.Host },
		ModifyResponse: func(resp *http.Response) error {
			if harness.Kind(resp.Request.URL.Path) == harness.KindBlob && resp.ContentLength > 1<<20 {
				resp.Body = &halfGate{rc: resp.Body, left: resp.ContentLength / 2, gate: gate}
			}
			return nil
		},
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

type halfGate struct {
	rc   io.ReadCloser
	left int64 // bytes before the gate
	gate <-chan struct{}
}

func (h *halfGate) Read(p []byte) (int, error) {
	if h.left == 0 {
		<-h.gate
		h.left = -1
	}
	if h.left > 0 && int64(len(p)) > h.left {
		p = p[:h.left]
	}
	n, err := h.rc.Read(p)
	if h.left > 0 {
		h.left -= int64(n)
	}
	return n, err
}

func (h *halfGate) Close() error { return h.rc.Close() }

// TestCacheSecondProcessOnOneDirRefused: a second `ferry cache` on the
// store of a running one is refused (exit 1: nothing is wrong with its
// flags, the directory is busy) before it touches tmp/, and the first
// one's download in progress completes whole. After a kill -9 the
// directory is free again.
func TestCacheSecondProcessOnOneDirRefused(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fixtures := harness.Seed(t, reg, "", harness.LargeLayerSet(4<<20))
	gate := make(chan struct{})
	host := gatedProxy(t, reg, gate)
	dir := t.TempDir()
	args := []string{"--dir", dir, "--max-size", "1GiB", "--upstream", "src.test=http://" + host}
	c1 := startCache(t, bin, args...)
	layer := fixtures[0].Layers[0]
	resp, err := http.Get("http://" + c1.addr + "/v2/src.test/large/blob/blobs/" + layer)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 64<<10); err != nil { // the download runs, held at half
		t.Fatal(err)
	}

	// (A second cache that is not refused serves until the timeout.)
	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: ferryEnv(t), Timeout: 30 * time.Second}, bin,
		append([]string{"cache", "--addr", "127.0.0.1:0", "--json"}, args...)...)
	pid := strconv.Itoa(c1.cmd.Process.Pid)
	if code != 1 || !strings.Contains(stderr, dir) || !strings.Contains(stderr, "process "+pid) {
		t.Errorf("second cache on %s: exit %d, want 1 naming the dir and process %s\n%s", dir, code, pid, stderr)
	}
	var je struct {
		Error struct {
			Kind     string `json:"kind"`
			ExitCode int    `json:"exitCode"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(lastLine(stdout)), &je); err != nil || je.Error.ExitCode != 1 {
		t.Errorf("--json: %v, %+v in %q", err, je, stdout)
	}
	if des, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(des) != 1 {
		t.Errorf("tmp/ holds %d files during the first cache's download, want 1", len(des))
	}

	close(gate)
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatalf("first cache's download: %v\n%s", err, c1.stderr.String())
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != layer {
		t.Fatalf("first cache served %s, want %s", got, layer)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(layer, "sha256:"))); err != nil || digestOf(b) != layer {
		t.Errorf("stored blob: %v, digest %s; want %s", err, digestOf(b), layer)
	}

	// The lock dies with its process.
	_ = c1.cmd.Process.Kill()
	<-c1.done
	c2 := startCache(t, bin, args...)
	if status, body := getBody(t, "http://"+c2.addr+"/v2/src.test/large/blob/blobs/"+layer); status != 200 || digestOf(body) != layer {
		t.Errorf("after kill -9 and restart: %d, digest %s", status, digestOf(body))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func getBody(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp.StatusCode, b
}

// TestCacheFlagsCheckedBeforeStart: flags that cannot work are exit 2
// before anything starts (no lock, no store); an address already in use
// is a failure (exit 1).
func TestCacheFlagsCheckedBeforeStart(t *testing.T) {
	bin := harness.BuildFerry(t)
	file := filepath.Join(t.TempDir(), "store")
	if err := os.WriteFile(file, []byte("not a dir"), 0o644); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(t.TempDir(), "never-created")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--addr", "127.0.0.1:99999", "--dir", fresh}, "99999"},
		{[]string{"--addr", "127.0.0.1", "--dir", fresh}, "HOST:PORT"},
		{[]string{"--dir", file}, file},
		{[]string{"--dir", fresh, "--upstream", "src=http://10.0.0.5:5000"}, "loopback"},
		{[]string{"--dir", fresh, "--upstream", "src=http://harbor.corp"}, "loopback"},
	} {
		args := append([]string{"cache", "--json", "--max-size", "1GiB"}, tc.args...)
		stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: ferryEnv(t)}, bin, args...)
		if code != 2 || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "serving on") || strings.Contains(stderr, "--plain-http") {
			t.Errorf("ferry %v: exit %d, want 2 naming %q\n%s", args, code, tc.want, stderr)
		}
		if !strings.Contains(stdout, `"kind":"input"`) {
			t.Errorf("ferry %v --json: %s, want an error of kind input", args, stdout)
		}
	}
	if b, _ := os.ReadFile(file); string(b) != "not a dir" {
		t.Error("--dir FILE: the file was changed")
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Errorf("a refused start created its --dir: %v", err)
	}
	c := startCache(t, bin, "--dir", t.TempDir(), "--max-size", "1GiB")
	_, stderr, code := harness.RunWith(t, harness.RunOptions{Env: ferryEnv(t)}, bin, "cache", "--addr", c.addr, "--dir", t.TempDir(), "--max-size", "1GiB")
	if code != 1 || !strings.Contains(stderr, c.addr) {
		t.Errorf("address in use: exit %d, want 1\n%s", code, stderr)
	}
}

// freeClosedPort is a loopback address nothing listens on.
func freeClosedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestCacheErrorsNameUpstreamsNotTheirURLs: clients are told which
// upstream failed by its configured name; the upstream's host and URL
// stay in the cache's log. A repository name over 255 characters is 400
// NAME_INVALID without asking the upstream.
func TestCacheErrorsNameUpstreamsNotTheirURLs(t *testing.T) {
	bin := harness.BuildFerry(t)
	up, counter, _ := cacheUpstream(t, harness.SmallSet())
	closed := freeClosedPort(t)
	c := startCache(t, bin, "--dir", t.TempDir(), "--max-size", "1GiB", "--ca-cert", up.CAFile,
		"--pull-secret", pullSecret(t, up.Host, "puller", "s3cret-pw"),
		"--upstream", "src.test=https://"+up.Host, "--upstream", "down.test=http://"+closed)
	base := "http://" + c.addr + "/v2/"
	missing := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		path, upstream, hidden string
		status                 int
	}{
		{"src.test/library/busybox/blobs/" + missing, "src.test", up.Host, 404},
		{"src.test/library/busybox/manifests/no-such-tag", "src.test", up.Host, 404},
		{"src.test/no/such-repo/tags/list", "src.test", up.Host, 404},
		{"down.test/library/busybox/manifests/1.36", "down.test", closed, 502},
		{"down.test/library/busybox/blobs/" + missing, "down.test", closed, 502},
	} {
		status, body := getBodyAny(t, base+tc.path)
		if status != tc.status || !strings.Contains(string(body), `\"`+tc.upstream+`\"`) || strings.Contains(string(body), tc.hidden) {
			t.Errorf("%s: %d %s; want %d naming %q, not %s", tc.path, status, body, tc.status, tc.upstream, tc.hidden)
		}
	}
	if !strings.Contains(c.stderr.String(), closed) {
		t.Errorf("the log does not name the unreachable upstream's address %s:\n%s", closed, c.stderr.String())
	}

	counter.Reset()
	long := strings.Repeat("x", 200) + "/" + strings.Repeat("y", 56)
	status, body := getBodyAny(t, base+"src.test/"+long+"/manifests/latest")
	if status != 400 || !strings.Contains(string(body), "NAME_INVALID") {
		t.Errorf("%d-character repository: %d %s, want 400 NAME_INVALID", len(long), status, body)
	}
	if n := counter.Total(); n != 0 {
		t.Errorf("the upstream was asked about a hostile name: %s", counter)
	}
}

func getBodyAny(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestCacheTagListPagesBounded: 300 distinct page queries leave a bounded
// number of stored pages, all counted in the store's size.
func TestCacheTagListPagesBounded(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, reg, "", harness.SmallSet())
	dir := t.TempDir()
	c := startCache(t, bin, "--dir", dir, "--max-size", "1GiB", "--upstream", "src.test=http://"+reg.Host)
	for i := range 300 {
		status, body := getBodyAny(t, "http://"+c.addr+"/v2/src.test/spaceone/console/tags/list?n="+strconv.Itoa(i+1))
		if status != 200 || !strings.Contains(string(body), "1.10.3") {
			t.Fatalf("query n=%d: %d %s", i+1, status, body)
		}
	}
	des, err := os.ReadDir(filepath.Join(dir, "tags", "src.test", "spaceone", "console", "_lists"))
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for _, de := range des {
		info, _ := de.Info()
		size += info.Size()
	}
	if len(des) == 0 || len(des) > 128 {
		t.Errorf("300 queries left %d stored pages, want 1..128", len(des))
	}
	if got := c.metric(t, "ferry_cache_store_bytes"); got != size {
		t.Errorf("store size %d, want the %d bytes of its pages", got, size)
	}
}
