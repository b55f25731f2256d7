package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-airgap/ferry/bundle"
)

// fixture is two bundles served as one.
type fixture struct {
	one, two             *bundle.Reader
	a, b, c, a2          v1.Image
	idx                  v1.ImageIndex
	srv                  *httptest.Server
	reg                  *Registry
	aDigest, a2Digest    string
	bDigest, idxDigest   string
	layerA               v1.Hash // app a's own layer
	layerC               v1.Hash // only in bundle two
	layerABytes, layerC2 []byte
}

func newFixture(t *testing.T, opts ...Option) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{}
	f.a = testImage(t, false, "shared base", "app a: the quick brown fox jumps over the lazy dog")
	f.b = testImage(t, true, "shared base", "app b")
	f.c = testImage(t, false, "shared base", "app c, second bundle")
	f.a2 = testImage(t, false, "shared base", "app a, version 8")
	f.idx = testIndex(t, "multi")
	f.one = writeBundle(t, dir, "one.tar",
		testEntry{source: "docker.io/library/redis:7.2", target: "proj/redis", tags: []string{"7.2", "7.2.4", "latest"}, img: f.a},
		testEntry{source: "quay.io/org/app:1.0", target: "proj/app", tags: []string{"1.0"}, img: f.b},
		testEntry{source: "registry.k8s.io/pause:3.9", target: "proj/pause", tags: []string{"3.9"}, idx: f.idx},
	)
	f.two = writeBundle(t, dir, "two.tar",
		testEntry{source: "ghcr.io/x/c:2", target: "proj/c", tags: []string{"2"}, img: f.c},
		testEntry{source: "docker.io/library/redis:8.0", target: "proj/redis", tags: []string{"8.0", "latest"}, img: f.a2},
	)
	reg, err := New([]*bundle.Reader{f.one, f.two}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	f.reg = reg
	f.srv = httptest.NewServer(reg)
	t.Cleanup(f.srv.Close)
	digest := func(d v1.Hash, _ error) string { return d.String() }
	f.aDigest, f.a2Digest, f.bDigest, f.idxDigest = digest(f.a.Digest()), digest(f.a2.Digest()), digest(f.b.Digest()), digest(f.idx.Digest())
	la, _ := f.a.Layers()
	f.layerA, _ = la[1].Digest()
	f.layerABytes = layerBytes(t, la[1])
	lc, _ := f.c.Layers()
	f.layerC, _ = lc[1].Digest()
	f.layerC2 = layerBytes(t, lc[1])
	return f
}

func layerBytes(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// do sends a request; header is "Name: value" pairs.
func do(t *testing.T, srv *httptest.Server, method, path string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, body
}

func wantStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, want, body)
	}
	if got := resp.Header.Get(APIVersionHeader); got != APIVersion {
		t.Errorf("%s header = %q, want %q", APIVersionHeader, got, APIVersion)
	}
}

// wantError checks an OCI error response: status, JSON content type and
// the code in the body (HEAD: no body).
func wantError(t *testing.T, srv *httptest.Server, method, path string, status int, code string) *http.Response {
	t.Helper()
	resp, body := do(t, srv, method, path)
	wantStatus(t, resp, body, status)
	if method == http.MethodHead {
		if len(body) != 0 {
			t.Errorf("HEAD %s: body %q, want none", path, body)
		}
		return resp
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("%s %s: error body %s (%v)", method, path, body, err)
	}
	if e.Errors[0].Code != code || e.Errors[0].Message == "" {
		t.Errorf("%s %s: error %+v, want code %s with a message", method, path, e.Errors[0], code)
	}
	return resp
}

func TestServeBase(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/v2/", "/v2"} {
		resp, body := do(t, f.srv, "GET", p)
		wantStatus(t, resp, body, 200)
		if string(body) != "{}\n" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %q %q", p, resp.Header.Get("Content-Type"), body)
		}
	}
	resp, body := do(t, f.srv, "HEAD", "/v2/")
	wantStatus(t, resp, body, 200)
	wantError(t, f.srv, "GET", "/other", 404, CodeNotFound)
	wantError(t, f.srv, "GET", "/v2/proj/redis/nonsense/x", 404, CodeNotFound)
}

func TestServeManifests(t *testing.T) {
	f := newFixture(t)
	rawA, _ := f.a.RawManifest()
	rawB, _ := f.b.RawManifest()
	rawIdx, _ := f.idx.RawManifest()
	im, _ := f.idx.IndexManifest()
	child := im.Manifests[1].Digest.String()
	cases := []struct {
		path, digest, mt string
		raw              []byte
	}{
		{"/v2/proj/redis/manifests/7.2", f.aDigest, string(types.OCIManifestSchema1), rawA},
		{"/v2/proj/redis/manifests/" + f.aDigest, f.aDigest, string(types.OCIManifestSchema1), rawA},
		{"/v2/proj/app/manifests/1.0", f.bDigest, string(types.DockerManifestSchema2), rawB},
		{"/v2/proj/pause/manifests/3.9", f.idxDigest, string(types.OCIImageIndex), rawIdx},
		// A child of an index, by digest, under the index's name.
		{"/v2/proj/pause/manifests/" + child, child, string(types.OCIManifestSchema1), nil},
	}
	for _, c := range cases {
		resp, body := do(t, f.srv, "GET", c.path)
		wantStatus(t, resp, body, 200)
		if got := resp.Header.Get("Content-Type"); got != c.mt {
			t.Errorf("GET %s: Content-Type %q, want %q", c.path, got, c.mt)
		}
		if got := resp.Header.Get(DigestHeader); got != c.digest {
			t.Errorf("GET %s: %s %q, want %q", c.path, DigestHeader, got, c.digest)
		}
		if got := resp.Header.Get("Content-Length"); got != strconv.Itoa(len(body)) {
			t.Errorf("GET %s: Content-Length %q for %d bytes", c.path, got, len(body))
		}
		if c.raw != nil && !bytes.Equal(body, c.raw) {
			t.Errorf("GET %s: body differs from the manifest", c.path)
		}
		if "sha256:"+sha256Hex(body) != c.digest {
			t.Errorf("GET %s: body hashes to sha256:%s, want %s", c.path, sha256Hex(body), c.digest)
		}
		head, hbody := do(t, f.srv, "HEAD", c.path)
		wantStatus(t, head, hbody, 200)
		if len(hbody) != 0 || head.Header.Get("Content-Length") != strconv.Itoa(len(body)) ||
			head.Header.Get(DigestHeader) != c.digest || head.Header.Get("Content-Type") != c.mt {
			t.Errorf("HEAD %s: body %d bytes, headers %v", c.path, len(hbody), head.Header)
		}
		// A conditional GET with the ETag gets 304.
		cond, _ := do(t, f.srv, "GET", c.path, "If-None-Match: "+resp.Header.Get("ETag"))
		if cond.StatusCode != 304 {
			t.Errorf("GET %s If-None-Match: status %d, want 304", c.path, cond.StatusCode)
		}
	}
	// Later bundle wins for a tag both carry; each keeps its own tags.
	for tag, want := range map[string]string{"latest": f.a2Digest, "8.0": f.a2Digest, "7.2.4": f.aDigest} {
		resp, _ := do(t, f.srv, "HEAD", "/v2/proj/redis/manifests/"+tag)
		if got := resp.Header.Get(DigestHeader); got != want {
			t.Errorf("proj/redis:%s = %s, want %s", tag, got, want)
		}
	}

	wantError(t, f.srv, "GET", "/v2/proj/redis/manifests/9.9", 404, CodeManifestUnknown)
	wantError(t, f.srv, "HEAD", "/v2/proj/redis/manifests/9.9", 404, "")
	// A manifest the bundle holds, but under another name.
	wantError(t, f.srv, "GET", "/v2/proj/redis/manifests/"+f.bDigest, 404, CodeManifestUnknown)
	wantError(t, f.srv, "GET", "/v2/proj/redis/manifests/sha256:"+strings.Repeat("0", 64), 404, CodeManifestUnknown)
	wantError(t, f.srv, "GET", "/v2/proj/redis/manifests/sha256:xyz", 400, CodeDigestInvalid)
	wantError(t, f.srv, "GET", "/v2/proj/redis/manifests/sha512:"+strings.Repeat("0", 128), 404, CodeManifestUnknown)
	wantError(t, f.srv, "GET", "/v2/proj/nope/manifests/latest", 404, CodeNameUnknown)
	wantError(t, f.srv, "GET", "/v2/redis/manifests/latest", 404, CodeNameUnknown)
}

func TestServeBlobs(t *testing.T) {
	f := newFixture(t)
	path := "/v2/proj/redis/blobs/" + f.layerA.String()
	resp, body := do(t, f.srv, "GET", path)
	wantStatus(t, resp, body, 200)
	if !bytes.Equal(body, f.layerABytes) {
		t.Fatalf("GET %s: %d bytes differ from the layer's %d", path, len(body), len(f.layerABytes))
	}
	for k, want := range map[string]string{
		"Content-Type": "application/octet-stream", DigestHeader: f.layerA.String(),
		"Content-Length": strconv.Itoa(len(f.layerABytes)), "Accept-Ranges": "bytes",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("GET blob: %s = %q, want %q", k, got, want)
		}
	}
	head, hbody := do(t, f.srv, "HEAD", path)
	wantStatus(t, head, hbody, 200)
	if len(hbody) != 0 || head.Header.Get("Content-Length") != strconv.Itoa(len(f.layerABytes)) || head.Header.Get(DigestHeader) != f.layerA.String() {
		t.Errorf("HEAD blob: %d body bytes, headers %v", len(hbody), head.Header)
	}

	// Range: 206 with exactly those bytes.
	for _, rg := range []struct {
		header     string
		start, end int // inclusive
	}{{"bytes=2-9", 2, 9}, {"bytes=10-", 10, len(f.layerABytes) - 1}, {"bytes=-5", len(f.layerABytes) - 5, len(f.layerABytes) - 1}} {
		resp, body := do(t, f.srv, "GET", path, "Range: "+rg.header)
		wantStatus(t, resp, body, 206)
		if !bytes.Equal(body, f.layerABytes[rg.start:rg.end+1]) {
			t.Errorf("Range %s: got %d bytes, want bytes %d-%d", rg.header, len(body), rg.start, rg.end)
		}
		wantCR := fmt.Sprintf("bytes %d-%d/%d", rg.start, rg.end, len(f.layerABytes))
		if got := resp.Header.Get("Content-Range"); got != wantCR {
			t.Errorf("Range %s: Content-Range %q, want %q", rg.header, got, wantCR)
		}
		if got := resp.Header.Get("Content-Length"); got != strconv.Itoa(rg.end-rg.start+1) {
			t.Errorf("Range %s: Content-Length %q", rg.header, got)
		}
	}
	resp, body = do(t, f.srv, "GET", path, "Range: bytes=100000-")
	wantStatus(t, resp, body, 416)
	if got := resp.Header.Get("Content-Range"); got != fmt.Sprintf("bytes */%d", len(f.layerABytes)) {
		t.Errorf("416: Content-Range %q", got)
	}

	// A manifest is a blob too; a blob of bundle two, served beside bundle one.
	resp, body = do(t, f.srv, "GET", "/v2/proj/redis/blobs/"+f.aDigest)
	wantStatus(t, resp, body, 200)
	resp, body = do(t, f.srv, "GET", "/v2/proj/c/blobs/"+f.layerC.String())
	wantStatus(t, resp, body, 200)
	if !bytes.Equal(body, f.layerC2) {
		t.Error("blob of the second bundle differs")
	}

	wantError(t, f.srv, "GET", "/v2/proj/redis/blobs/sha256:"+strings.Repeat("a", 64), 404, CodeBlobUnknown)
	wantError(t, f.srv, "HEAD", "/v2/proj/redis/blobs/sha256:"+strings.Repeat("a", 64), 404, "")
	// In the bundle, but not part of any image under this name.
	wantError(t, f.srv, "GET", "/v2/proj/redis/blobs/"+f.layerC.String(), 404, CodeBlobUnknown)
	wantError(t, f.srv, "GET", "/v2/proj/redis/blobs/sha256:ZZZ", 400, CodeDigestInvalid)
	wantError(t, f.srv, "GET", "/v2/proj/nope/blobs/"+f.layerA.String(), 404, CodeNameUnknown)
}

func TestServeCorruptBlobAborts(t *testing.T) {
	f := newFixture(t)
	// Damage one byte of app a's layer inside bundle one.
	sec, err := f.one.Section(f.layerA)
	if err != nil {
		t.Fatal(err)
	}
	_, off, _ := sec.Outer()
	file, err := os.OpenFile(f.one.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := file.WriteAt([]byte{f.layerABytes[0] ^ 0xff}, off); err != nil {
		t.Fatal(err)
	}
	if err := file.Close(); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	reg, err := New([]*bundle.Reader{f.one}, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	// The blob is smaller than one copy buffer: the abort comes before the
	// headers leave, and the client sees the connection close.
	resp, err := srv.Client().Get(srv.URL + "/v2/proj/redis/blobs/" + f.layerA.String())
	if err == nil {
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil || len(body) >= len(f.layerABytes) {
			t.Fatalf("full GET of a damaged blob: status %d, read %d of %d bytes without error", resp.StatusCode, len(body), len(f.layerABytes))
		}
	} else if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("full GET of a damaged blob: %v, want the connection closed", err)
	}
	if !logs.waitFor("do not match their digest") {
		t.Errorf("no error logged: %s", logs.String())
	}
	// A Range request gets the raw bytes, damaged byte included.
	resp2, body2 := do(t, srv, "GET", "/v2/proj/redis/blobs/"+f.layerA.String(), "Range: bytes=0-3")
	wantStatus(t, resp2, body2, 206)
	if body2[0] != f.layerABytes[0]^0xff {
		t.Error("Range did not return the raw section")
	}
}

func TestServeTagsList(t *testing.T) {
	f := newFixture(t)
	type tagsBody struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	get := func(q string) (tagsBody, string) {
		t.Helper()
		resp, body := do(t, f.srv, "GET", "/v2/proj/redis/tags/list"+q)
		wantStatus(t, resp, body, 200)
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("tags list Content-Type %q", ct)
		}
		var tb tagsBody
		if err := json.Unmarshal(body, &tb); err != nil {
			t.Fatal(err)
		}
		if tb.Name != "proj/redis" || tb.Tags == nil {
			t.Errorf("tags list %s: %s", q, body)
		}
		return tb, resp.Header.Get("Link")
	}
	all := []string{"7.2", "7.2.4", "8.0", "latest"}
	cases := []struct {
		q    string
		tags []string
		link string
	}{
		{"", all, ""},
		{"?n=2", all[:2], `</v2/proj/redis/tags/list?last=7.2.4&n=2>; rel="next"`},
		{"?n=2&last=7.2.4", all[2:], ""},
		{"?n=1&last=7.2.4", all[2:3], `</v2/proj/redis/tags/list?last=8.0&n=1>; rel="next"`},
		{"?last=7.2", all[1:], ""},
		{"?last=7.3", all[2:], ""}, // not a tag: those sorting after it
		{"?n=10", all, ""},
		{"?n=4", all, ""},
		{"?n=0", []string{}, ""},
		{"?last=zzz", []string{}, ""},
	}
	for _, c := range cases {
		tb, link := get(c.q)
		if strings.Join(tb.Tags, ",") != strings.Join(c.tags, ",") || link != c.link {
			t.Errorf("tags%s = %v, Link %q; want %v, Link %q", c.q, tb.Tags, link, c.tags, c.link)
		}
	}
	// Following Link headers visits every tag once.
	var seen []string
	next := "/v2/proj/redis/tags/list?n=1"
	for next != "" {
		resp, body := do(t, f.srv, "GET", next)
		wantStatus(t, resp, body, 200)
		var tb tagsBody
		_ = json.Unmarshal(body, &tb)
		seen = append(seen, tb.Tags...)
		next = ""
		if l := resp.Header.Get("Link"); l != "" {
			next = l[1:strings.Index(l, ">")]
		}
	}
	if strings.Join(seen, ",") != strings.Join(all, ",") {
		t.Errorf("paging with n=1 saw %v", seen)
	}
	wantError(t, f.srv, "GET", "/v2/proj/redis/tags/list?n=-1", 400, CodePaginationNumber)
	wantError(t, f.srv, "GET", "/v2/proj/redis/tags/list?n=x", 400, CodePaginationNumber)
	wantError(t, f.srv, "GET", "/v2/proj/nope/tags/list", 404, CodeNameUnknown)
}

func TestServeCatalog(t *testing.T) {
	f := newFixture(t)
	get := func(q string) ([]string, string) {
		t.Helper()
		resp, body := do(t, f.srv, "GET", "/v2/_catalog"+q)
		wantStatus(t, resp, body, 200)
		var cb struct {
			Repositories []string `json:"repositories"`
		}
		if err := json.Unmarshal(body, &cb); err != nil || cb.Repositories == nil {
			t.Fatalf("catalog: %s %v", body, err)
		}
		return cb.Repositories, resp.Header.Get("Link")
	}
	all := []string{"proj/app", "proj/c", "proj/pause", "proj/redis"}
	cases := []struct {
		q    string
		want []string
		link string
	}{
		{"", all, ""},
		{"?n=3", all[:3], `</v2/_catalog?last=proj%2Fpause&n=3>; rel="next"`},
		{"?n=3&last=proj%2Fpause", all[3:], ""},
		{"?last=proj/app", all[1:], ""},
		{"?n=0", []string{}, ""},
	}
	for _, c := range cases {
		got, link := get(c.q)
		if strings.Join(got, ",") != strings.Join(c.want, ",") || link != c.link {
			t.Errorf("catalog%s = %v, Link %q; want %v, Link %q", c.q, got, link, c.want, c.link)
		}
	}
}

func TestServeReferrers(t *testing.T) {
	f := newFixture(t)
	resp, body := do(t, f.srv, "GET", "/v2/proj/redis/referrers/"+f.aDigest)
	wantStatus(t, resp, body, 200)
	if ct := resp.Header.Get("Content-Type"); ct != string(types.OCIImageIndex) {
		t.Errorf("referrers Content-Type %q", ct)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(body, &idx); err != nil || idx.SchemaVersion != 2 || idx.MediaType != types.OCIImageIndex || idx.Manifests == nil || len(idx.Manifests) != 0 {
		t.Errorf("referrers body %s (%v)", body, err)
	}
	resp, _ = do(t, f.srv, "GET", "/v2/proj/redis/referrers/"+f.aDigest+"?artifactType=application/x")
	if resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Error("artifactType filter not reported")
	}
	wantError(t, f.srv, "GET", "/v2/proj/redis/referrers/"+f.bDigest, 404, CodeManifestUnknown)
	wantError(t, f.srv, "GET", "/v2/proj/redis/referrers/latest", 400, CodeDigestInvalid)
	wantError(t, f.srv, "GET", "/v2/proj/nope/referrers/"+f.aDigest, 404, CodeNameUnknown)
}

func TestServeReadOnly(t *testing.T) {
	f := newFixture(t)
	for _, m := range []string{"PUT", "POST", "PATCH", "DELETE"} {
		for _, p := range []string{
			"/v2/proj/redis/manifests/latest", "/v2/proj/redis/manifests/" + f.aDigest,
			"/v2/proj/redis/blobs/uploads/", "/v2/proj/redis/blobs/uploads/some-uuid",
			"/v2/proj/redis/blobs/" + f.layerA.String(), "/v2/new/repo/blobs/uploads/?mount=" + f.layerA.String() + "&from=proj/redis",
		} {
			resp := wantError(t, f.srv, m, p, 405, CodeUnsupported)
			if resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: Allow %q", m, p, resp.Header.Get("Allow"))
			}
		}
	}
	// Nothing changed.
	resp, _ := do(t, f.srv, "HEAD", "/v2/proj/redis/manifests/latest")
	if resp.StatusCode != 200 || resp.Header.Get(DigestHeader) != f.a2Digest {
		t.Error("read-only registry changed")
	}
}

func TestServeNames(t *testing.T) {
	f := newFixture(t, WithPrefix("/mirror/"), WithSourceNames(true))
	want := []string{
		"mirror/docker.io/library/redis", "mirror/ghcr.io/x/c", "mirror/proj/app", "mirror/proj/c",
		"mirror/proj/pause", "mirror/proj/redis", "mirror/quay.io/org/app", "mirror/registry.k8s.io/pause",
	}
	if got := f.reg.Names(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("names = %v\nwant %v", got, want)
	}
	for _, p := range []string{"/v2/mirror/docker.io/library/redis/manifests/7.2", "/v2/mirror/proj/redis/manifests/7.2"} {
		resp, body := do(t, f.srv, "GET", p)
		wantStatus(t, resp, body, 200)
		if resp.Header.Get(DigestHeader) != f.aDigest {
			t.Errorf("%s: %s", p, resp.Header.Get(DigestHeader))
		}
	}
	resp, body := do(t, f.srv, "GET", "/v2/mirror/docker.io/library/redis/blobs/"+f.layerA.String())
	wantStatus(t, resp, body, 200)
	wantError(t, f.srv, "GET", "/v2/proj/redis/manifests/7.2", 404, CodeNameUnknown)
	if _, err := New([]*bundle.Reader{f.one}, WithPrefix("Bad Prefix")); err == nil {
		t.Error("an invalid prefix was accepted")
	}
}

func TestServeSourceName(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io/library/redis:7.2":                                     "docker.io/library/redis",
		"registry.hub.docker.com/redis:7":                                 "docker.io/library/redis",
		"index.docker.io/bitnami/nginx@sha256:" + strings.Repeat("0", 64): "docker.io/bitnami/nginx",
		"Quay.IO/org/app:1.0":                                             "quay.io/org/app",
		"127.0.0.1:5000/spaceone/console:1.11.0":                          "127.0.0.1_5000/spaceone/console",
		"localhost:5000/a/b":                                              "localhost_5000/a/b",
	} {
		got, err := SourceName(in)
		if err != nil || got != want {
			t.Errorf("SourceName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := SourceName("redis"); err == nil {
		t.Error("a source without a host was accepted")
	}
}

func TestServeBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHtpasswd(strings.NewReader("# users\nalice:" + strings.Replace(string(hash), "$2a$", "$2y$", 1) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, WithBasicAuth(h, "ferry test"))
	get := func(path, user, pass string) *http.Response {
		req, _ := http.NewRequest("GET", f.srv.URL+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for _, c := range []struct{ user, pass string }{{"", ""}, {"alice", "wrong"}, {"bob", "s3cret"}} {
		for _, p := range []string{"/v2/", "/v2/proj/redis/manifests/latest"} {
			resp := get(p, c.user, c.pass)
			if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Basic realm="ferry test"` {
				t.Errorf("GET %s as %q/%q: %d %q, want 401 with a Basic challenge", p, c.user, c.pass, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		}
	}
	wantError(t, f.srv, "GET", "/v2/", 401, CodeUnauthorized)
	for i := 0; i < 2; i++ { // the second time from the cache
		if resp := get("/v2/proj/redis/manifests/latest", "alice", "s3cret"); resp.StatusCode != 200 {
			t.Errorf("alice: %d", resp.StatusCode)
		}
	}
	// Writes are still refused once authenticated.
	req, _ := http.NewRequest("DELETE", f.srv.URL+"/v2/proj/redis/manifests/latest", nil)
	req.SetBasicAuth("alice", "s3cret")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("DELETE as alice: %d", resp.StatusCode)
	}

	for _, bad := range []string{"alice:{SHA}abc\n", "alice:$apr1$x$y\n", "nocolon\n", "", "alice:$2y$10$short\n"} {
		if _, err := ParseHtpasswd(strings.NewReader(bad)); !errors.Is(err, ErrHtpasswd) {
			t.Errorf("ParseHtpasswd(%q) = %v, want ErrHtpasswd", bad, err)
		}
	}
}

func TestServeMissingManifestLeftOut(t *testing.T) {
	f := newFixture(t)
	// Bundle two alone serves its images; no error for bundle one's absence.
	reg, err := New([]*bundle.Reader{f.two})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(reg.Names(), " "); got != "proj/c proj/redis" {
		t.Errorf("names %q", got)
	}
	if _, err := New(nil); !errors.Is(err, ErrNoImages) {
		t.Errorf("New(nil) = %v", err)
	}
}

func TestServeAccessLog(t *testing.T) {
	f := newFixture(t)
	var buf syncBuffer
	srv := httptest.NewServer(AccessLog(f.reg, slog.New(slog.NewJSONHandler(&buf, nil))))
	defer srv.Close()
	do(t, srv, "GET", "/v2/proj/redis/blobs/"+f.layerA.String())
	buf.waitFor(`"status":200`)
	do(t, srv, "GET", "/v2/proj/redis/manifests/nope")
	buf.waitFor(`"status":404`)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log lines: %q", lines)
	}
	var e struct {
		Method   string `json:"method"`
		Path     string `json:"path"`
		Status   int    `json:"status"`
		Bytes    int64  `json:"bytes"`
		Duration int64  `json:"duration"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &e); err != nil {
		t.Fatal(err)
	}
	if e.Method != "GET" || e.Path != "/v2/proj/redis/blobs/"+f.layerA.String() || e.Status != 200 || e.Bytes != int64(len(f.layerABytes)) || e.Duration <= 0 {
		t.Errorf("log line %s", lines[0])
	}
	if !strings.Contains(lines[1], `"status":404`) {
		t.Errorf("log line %s", lines[1])
	}
}

func TestServeCorruptLargeBlobTruncated(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 40<<10) // 640 KiB: several copy buffers
	img := testImage(t, false, string(big))
	rd := writeBundle(t, t.TempDir(), "big.tar", testEntry{source: "quay.io/big/blob:1", target: "big", tags: []string{"1"}, img: img})
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	sec, err := rd.Section(ld)
	if err != nil {
		t.Fatal(err)
	}
	_, off, n := sec.Outer()
	file, err := os.OpenFile(rd.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := file.WriteAt([]byte{'X'}, off+n-1); err != nil { // the last byte
		t.Fatal(err)
	}
	if err := file.Close(); err != nil {
		t.Fatal(err)
	}
	reg, err := New([]*bundle.Reader{rd})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/v2/big/blobs/" + ld.String())
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !errors.Is(err, io.ErrUnexpectedEOF) || int64(len(body)) >= n {
		t.Fatalf("status %d, %d of %d bytes, error %v: want 200 and a body cut short", resp.StatusCode, len(body), n, err)
	}
	// An intact range of the same blob is still served.
	resp2, body2 := do(t, srv, "GET", "/v2/big/blobs/"+ld.String(), "Range: bytes=0-15")
	wantStatus(t, resp2, body2, 206)
}
