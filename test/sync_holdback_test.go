package test

import (
	"crypto/tls"
	"errors"
	"io"
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

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferry-airgap/ferry/test/harness"
)

// uploadPut is one blob-upload PUT a putWatch forwarded: the body length
// it announced and how many bytes arrived before the body ended.
type uploadPut struct {
	path          string
	contentLength int64
	received      int64
	complete      bool // the body reached its end (EOF) with every announced byte
}

// putWatch is a TLS reverse proxy in front of a registry that records how
// much of each blob-upload PUT body arrived. It keeps the client's Host, so
// the registry's upload Locations point back at it.
type putWatch struct {
	mu   sync.Mutex
	puts []uploadPut
}

func startPutWatch(t *testing.T, target *harness.Registry) (host string, w *putWatch) {
	t.Helper()
	tu, err := url.Parse(target.URL)
	if err != nil {
		t.Fatal(err)
	}
	w = &putWatch{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(tu)
			pr.Out.Host = pr.In.Host
		},
		Transport: target.Transport(),
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || harness.Kind(r.URL.Path) != harness.KindUpload {
			rp.ServeHTTP(rw, r)
			return
		}
		cb := &countBody{rc: r.Body}
		r.Body = cb
		rp.ServeHTTP(rw, r)
		w.mu.Lock()
		w.puts = append(w.puts, uploadPut{path: r.URL.RequestURI(), contentLength: r.ContentLength, received: cb.n.Load(),
			complete: cb.eof.Load() && cb.n.Load() == r.ContentLength})
		w.mu.Unlock()
	}))
	srv.TLS = target.CA.TLSConfig()
	srv.TLS.Certificates = []tls.Certificate{target.CA.IssueTLS(t)}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "https://"), w
}

func (w *putWatch) list() []uploadPut {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]uploadPut(nil), w.puts...)
}

// countBody counts what the proxy's transport read of a request body. The
// transport may read on its own goroutine (HTTP/2) past the handler's
// return, hence atomics.
type countBody struct {
	rc  io.ReadCloser
	n   atomic.Int64
	eof atomic.Bool
}

func (c *countBody) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.n.Add(int64(n))
	if errors.Is(err, io.EOF) {
		c.eof.Store(true)
	}
	return n, err
}

func (c *countBody) Close() error { return c.rc.Close() }

// The hold-back's premise for ferry sync: the source's reader fails on the
// Read that would complete a blob, so the upload it feeds ends short and
// the target commits nothing. A source that serves wrong bytes of the
// right size (every time) breaks it: sync fails naming the blob, no
// upload PUT of that blob ever reached the target complete, the target
// lacks the blob and its tag, and the image that does not need it is
// copied.
func TestSyncWrongBytesNeverCompleteUpload(t *testing.T) {
	bin := harness.BuildFerry(t)
	src, front, counter, faults, large, console := faultSource(t)
	bad := large.Layers[0]
	faults.Add(harness.Fault{Method: http.MethodGet, Kind: harness.KindBlob, Match: strings.TrimPrefix(bad, "sha256:"), Mode: harness.FaultCorrupt, Offset: 5})
	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, CA: src.CA, Users: map[string]string{robot: robotPW}})
	watchHost, watch := startPutWatch(t, dst)
	m := faultMapping(t, t.TempDir(), front.Host, watchHost+"/mirror")

	stdout, stderr, code := harness.RunWith(t, harness.RunOptions{Env: impEnv(t, "FERRY_PASSWORD="+impAPW)}, bin,
		"sync", "--json", "--username", impAlice, "-f", m, "--ca-cert", src.CAFile, "--jobs", "1")
	t.Logf("source requests: %s", counter)
	if code != 1 {
		t.Fatalf("sync: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout+stderr, bad) {
		t.Errorf("the failure does not name blob %s\nstdout:\n%s\nstderr:\n%s", bad, stdout, stderr)
	}
	if hits := faults.Hits()[0]; hits < 1 {
		t.Fatalf("the corrupting fault hit %d GETs: the test did not test what it says", hits)
	}
	var badPuts int
	for _, p := range watch.list() {
		if !strings.Contains(p.path, strings.TrimPrefix(bad, "sha256:")) {
			continue
		}
		badPuts++
		if p.complete || p.received >= p.contentLength {
			t.Errorf("the target received a complete upload of the wrong bytes: %d of %d bytes (%s)", p.received, p.contentLength, p.path)
		}
	}
	if badPuts == 0 {
		t.Fatalf("no upload PUT of %s reached the target (puts: %+v): the test did not test what it says", bad, watch.list())
	}
	if _, err := remote.Head(dst.Ref(t, "mirror/large/blob:latest"), dst.RemoteOptions(robot)...); err == nil {
		t.Errorf("the tag of the image with the wrong layer exists in the target")
	}
	stored := func(d string) bool {
		hex := strings.TrimPrefix(d, "sha256:")
		_, err := os.Stat(filepath.Join(dst.Dir, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data"))
		return err == nil
	}
	if !stored(console.Layers[0]) {
		t.Fatalf("a copied layer is not where the test looks for blobs in %s", dst.Dir)
	}
	if stored(bad) {
		t.Errorf("the target's storage holds blob %s", bad)
	}
	if got := targetDigest(t, dst, "mirror/"+console.Ref()); got != console.Digest {
		t.Errorf("%s: %s in the target, want %s (an image without the bad blob is copied)", console.Ref(), got, console.Digest)
	}
}
