package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// tagAnswer is one answer of a tagServer: the content the tag points at
// now, the validators it sends, and where the connection is cut.
type tagAnswer struct {
	body   []byte
	digest string // Docker-Content-Digest; "" = none
	etag   string // ETag; "" = none
	cut    int    // > 0: close the connection after this many body bytes
}

// tagServer serves /v2/x/manifests/latest, the i-th GET with answers[i]
// (the last one repeats). It honours Range, and If-Range as RFC 9110 says:
// a range only while the ETag still matches, else the full content.
type tagServer struct {
	*httptest.Server
	answers []tagAnswer

	mu      sync.Mutex
	gets    int
	ranges  []string
	ifRange []string
}

func newTagServer(t *testing.T, answers ...tagAnswer) *tagServer {
	t.Helper()
	s := &tagServer{answers: answers}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *tagServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	a := s.answers[min(s.gets, len(s.answers)-1)]
	s.gets++
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	s.ifRange = append(s.ifRange, r.Header.Get("If-Range"))
	s.mu.Unlock()
	if a.digest != "" {
		w.Header().Set("Docker-Content-Digest", a.digest)
	}
	if a.etag != "" {
		w.Header().Set("ETag", a.etag)
	}
	body, status := a.body, http.StatusOK
	rg, ir := r.Header.Get("Range"), r.Header.Get("If-Range")
	if rg != "" && (ir == "" || ir == a.etag) {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		if err != nil || n >= len(body) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(body)-1, len(body)))
		body, status = body[n:], http.StatusPartialContent
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if a.cut > 0 && a.cut < len(body) {
		_, _ = w.Write(body[:a.cut])
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	}
	_, _ = w.Write(body)
}

// A manifest fetched by tag is resumed only when the resumed response
// carries the validator of the first (the same Docker-Content-Digest or
// strong ETag); a tag that moves mid-resume, or a resumed response that
// drops the digest header, fails the read instead of splicing the first
// bytes of one manifest onto the rest of another. The same content with
// its validator repeated resumes.
func TestResumeByTagNeedsSameValidator(t *testing.T) {
	a := bytes.Repeat([]byte("A"), 4096)
	b := bytes.Repeat([]byte("B"), 4096)
	const da, db = "sha256:aaaa", "sha256:bbbb"
	cases := []struct {
		name    string
		answers []tagAnswer
		ok      bool   // the read completes with a
		errText string // when !ok, a part of the error
	}{
		{"tag moves, new digest", []tagAnswer{{body: a, digest: da, cut: 100}, {body: b, digest: db}}, false, "content changed"},
		{"tag moves, digest dropped", []tagAnswer{{body: a, digest: da, cut: 100}, {body: b}}, false, "neither the Docker-Content-Digest"},
		{"tag moves, digest dropped, other ETag", []tagAnswer{{body: a, digest: da, etag: `"a"`, cut: 100}, {body: b, etag: `"b"`}}, false, "content changed"},
		{"tag moves, same digest header, other ETag", []tagAnswer{{body: a, digest: da, etag: `"a"`, cut: 100}, {body: b, digest: da, etag: `"b"`}}, false, "content changed"},
		{"ETag only, dropped", []tagAnswer{{body: a, etag: `"a"`, cut: 100}, {body: b, digest: db}}, false, "neither the Docker-Content-Digest"},
		{"same content, same digest", []tagAnswer{{body: a, digest: da, cut: 100}, {body: a, digest: da}}, true, ""},
		{"same content, digest dropped, same ETag", []tagAnswer{{body: a, digest: da, etag: `"a"`, cut: 100}, {body: a, etag: `"a"`}}, true, ""},
		{"same content, ETag only", []tagAnswer{{body: a, etag: `"a"`, cut: 100}, {body: a, etag: `"a"`}}, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newTagServer(t, tc.answers...)
			c, _ := newTestClient(t, Options{})
			resp, err := get(t, c, context.Background(), s.URL+"/v2/x/manifests/latest")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			s.mu.Lock()
			gets, ranges, ifRange := s.gets, s.ranges, s.ifRange
			s.mu.Unlock()
			if gets != 2 || ranges[1] != "bytes=100-" {
				t.Fatalf("%d GETs with ranges %q: the test did not resume", gets, ranges)
			}
			if tc.answers[0].etag != "" && ifRange[1] != tc.answers[0].etag {
				t.Errorf("resumed with If-Range %q, want the first ETag %q", ifRange[1], tc.answers[0].etag)
			}
			if tc.ok {
				if err != nil || !bytes.Equal(got, a) {
					t.Fatalf("read %d bytes (equal %v), err %v; want the content resumed", len(got), bytes.Equal(got, a), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("err = %v, want one containing %q", err, tc.errText)
			}
			if bytes.Contains(got, []byte("B")) {
				t.Errorf("the read spliced the new content onto the old: %d bytes, %d of them B", len(got), bytes.Count(got, []byte("B")))
			}
		})
	}
}
