package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fault is what the blob server does to one response.
type fault struct {
	cut     int64 // > 0: close the connection after this many body bytes
	reset   bool  // with cut: reset (RST) rather than close
	short   int64 // > 0: a complete response of only this many bytes
	corrupt bool  // flip one byte
	badCR   bool  // answer a Range with a Content-Range that starts elsewhere
	abort   bool  // with cut: abort the handler (HTTP/2: the stream is reset)
	status  int   // answer with this status and no body
}

// blobServer serves one blob at /v2/x/blobs/DIGEST (and /v2/x/manifests/tag
// without a digest header), applying faults[i] to the i-th GET.
type blobServer struct {
	*httptest.Server
	blob   []byte
	digest v1.Hash
	ranges bool // honour Range

	mu     sync.Mutex
	faults []fault
	gets   int
	seen   []string // Range header of each GET
}

func newBlobServer(t *testing.T, size int, ranges bool, faults ...fault) *blobServer {
	t.Helper()
	blob := make([]byte, size)
	for i := range blob {
		blob[i] = byte(i*7 + i/251)
	}
	sum := sha256.Sum256(blob)
	s := &blobServer{blob: blob, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, ranges: ranges, faults: faults}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *blobServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	var f fault
	if s.gets < len(s.faults) {
		f = s.faults[s.gets]
	}
	s.gets++
	s.seen = append(s.seen, r.Header.Get("Range"))
	s.mu.Unlock()

	if f.status != 0 {
		w.WriteHeader(f.status)
		return
	}
	body := append([]byte(nil), s.blob...)
	if f.corrupt {
		body[len(body)/2] ^= 0xff
	}
	if f.short > 0 {
		body = body[:f.short]
	}
	status, start := http.StatusOK, int64(0)
	if rg := r.Header.Get("Range"); rg != "" && s.ranges {
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"), 10, 64)
		if err != nil || n >= int64(len(body)) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		status, start = http.StatusPartialContent, n
		cr := n
		if f.badCR {
			cr = n + 1
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", cr, len(body)-1, len(body)))
	}
	body = body[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if f.cut > 0 && f.cut < int64(len(body)) {
		_, _ = w.Write(body[:f.cut])
		w.(http.Flusher).Flush()
		if f.abort {
			panic(http.ErrAbortHandler)
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		if tc, ok := conn.(*net.TCPConn); ok && f.reset {
			_ = tc.SetLinger(0)
		}
		_ = conn.Close()
		return
	}
	_, _ = w.Write(body)
}

func (s *blobServer) stats() (int, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets, append([]string(nil), s.seen...)
}

// bufSink is a restartable in-memory Sink.
type bufSink struct {
	bytes.Buffer
	resets int
}

func (b *bufSink) Reset() error { b.Buffer.Reset(); b.resets++; return nil }

func (s *blobServer) repo(t *testing.T) name.Repository {
	t.Helper()
	r, err := name.NewRepository(strings.TrimPrefix(s.URL, "http://")+"/x", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func fetchInto(t *testing.T, c *Client, s *blobServer) (*bufSink, error) {
	t.Helper()
	sink := &bufSink{}
	err := c.FetchBlob(context.Background(), c.Transport(), s.repo(t), s.digest, int64(len(s.blob)), sink)
	return sink, err
}

func TestFetchBlobResumesCutBodies(t *testing.T) {
	const size = 1 << 20
	cases := []struct {
		name      string
		ranges    bool
		faults    []fault
		wantRange []string
	}{
		{"close one byte before the end, Range", true, []fault{{cut: size - 1}}, []string{"", fmt.Sprintf("bytes=%d-", size-1)}},
		// A reset loses what was in flight: resumed from wherever the bytes stopped.
		{"reset after 200 KiB, Range", true, []fault{{cut: 200 << 10, reset: true}}, []string{"", "bytes=*"}},
		{"reset after 200 KiB, no Range support", false, []fault{{cut: 200 << 10, reset: true}}, []string{"", "bytes=*"}},
		{"three cuts in a row", true, []fault{{cut: 1000}, {cut: 1000}, {cut: 1000}}, []string{"", "bytes=1000-", "bytes=2000-", "bytes=3000-"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newBlobServer(t, size, tc.ranges, tc.faults...)
			c, rec := newTestClient(t, Options{Retry: RetryPolicy{Attempts: 5, Base: time.Millisecond, MaxWait: time.Second}})
			sink, err := fetchInto(t, c, s)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sink.Bytes(), s.blob) || sink.resets != 0 {
				t.Fatalf("sink holds %d bytes (equal=%v) after %d resets, want the blob with no reset", sink.Len(), bytes.Equal(sink.Bytes(), s.blob), sink.resets)
			}
			gets, seen := s.stats()
			if gets != len(tc.wantRange) || !rangesMatch(seen, tc.wantRange) {
				t.Errorf("GETs with Range %q, want %q", seen, tc.wantRange)
			}
			if waits := rec.get(); len(waits) != len(tc.wantRange)-1 {
				t.Errorf("waits %v, want one backoff per resume", waits)
			}
		})
	}
}

// rangesMatch compares Range headers; "bytes=*" is any bytes=N- with N > 0.
func rangesMatch(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if want[i] == "bytes=*" {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(got[i], "bytes="), "-"), 10, 64)
			if err != nil || n <= 0 {
				return false
			}
		} else if got[i] != want[i] {
			return false
		}
	}
	return true
}

// Over HTTP/2 a cut is a reset stream, reported with an error of
// net/http's own: it resumes too.
func TestFetchBlobResumesResetHTTP2Stream(t *testing.T) {
	s := &blobServer{ranges: true, faults: []fault{{cut: 100 << 10, abort: true}}}
	s.blob = make([]byte, 512<<10)
	for i := range s.blob {
		s.blob[i] = byte(i % 253)
	}
	sum := sha256.Sum256(s.blob)
	s.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.EnableHTTP2 = true
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	ca := writeFile(t, filepath.Join(t.TempDir(), "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}))
	c, _ := newTestClient(t, Options{CACertFiles: []string{ca}})
	repo, err := name.NewRepository(strings.TrimPrefix(s.URL, "https://") + "/x")
	if err != nil {
		t.Fatal(err)
	}
	sink := &bufSink{}
	// name says http for 127.0.0.1; go-containerregistry's transport
	// switches to https after its ping, as this does.
	https := rtFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.URL.Scheme = "https"
		return c.Transport().RoundTrip(r)
	})
	if err := c.FetchBlob(context.Background(), https, repo, s.digest, int64(len(s.blob)), sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.Bytes(), s.blob) {
		t.Fatal("the sink does not hold the blob")
	}
	if gets, seen := s.stats(); gets != 2 || !rangesMatch(seen, []string{"", "bytes=*"}) {
		t.Errorf("GETs with Range %q, want one resume", seen)
	}
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestFetchBlobCutsOutlastTheBudget(t *testing.T) {
	s := newBlobServer(t, 64<<10, true, fault{cut: 100}, fault{cut: 100}, fault{cut: 100})
	c, _ := newTestClient(t, Options{}) // 3 attempts
	sink, err := fetchInto(t, c, s)
	var be *BlobError
	if !errors.As(err, &be) {
		t.Fatalf("err = %v, want a *BlobError", err)
	}
	host := strings.TrimPrefix(s.URL, "http://")
	for _, want := range []string{s.digest.String(), host, "after 300 bytes", "3 attempts", "unexpected EOF"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if gets, _ := s.stats(); gets != 3 {
		t.Errorf("%d GETs, want 3 (the attempt budget)", gets)
	}
	if sink.Len() > 300 {
		t.Errorf("sink holds %d bytes", sink.Len())
	}
}

func TestFetchBlobRefusesAMisplacedRange(t *testing.T) {
	s := newBlobServer(t, 64<<10, true, fault{cut: 100}, fault{badCR: true})
	c, _ := newTestClient(t, Options{})
	_, err := fetchInto(t, c, s)
	if err == nil || !strings.Contains(err.Error(), `asked for bytes from 100, got Content-Range "bytes 101-`) {
		t.Fatalf("err = %v, want the Content-Range refused", err)
	}
}

// A resume refused with 401 (the token expired while the body streamed)
// starts the blob over through the token exchange, once.
func TestFetchBlobRefusedResumeStartsOver(t *testing.T) {
	s := newBlobServer(t, 64<<10, true, fault{cut: 100}, fault{status: http.StatusUnauthorized})
	c, _ := newTestClient(t, Options{})
	sink, err := fetchInto(t, c, s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.Bytes(), s.blob) || sink.resets != 1 {
		t.Errorf("equal=%v resets=%d, want the blob after one reset", bytes.Equal(sink.Bytes(), s.blob), sink.resets)
	}
	if gets, seen := s.stats(); gets != 3 || !rangesMatch(seen, []string{"", "bytes=100-", ""}) {
		t.Errorf("GETs with Range %q, want a cut, a refused resume, a fresh GET", seen)
	}
}

func TestFetchBlobMismatchRetriedOnceFromScratch(t *testing.T) {
	for _, f := range []fault{{corrupt: true}, {short: 1000}} {
		t.Run(fmt.Sprintf("%+v", f), func(t *testing.T) {
			s := newBlobServer(t, 256<<10, true, f)
			c, _ := newTestClient(t, Options{})
			sink, err := fetchInto(t, c, s)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sink.Bytes(), s.blob) || sink.resets != 1 {
				t.Errorf("equal=%v resets=%d, want the blob after one reset", bytes.Equal(sink.Bytes(), s.blob), sink.resets)
			}
			if gets, seen := s.stats(); gets != 2 || seen[1] != "" {
				t.Errorf("GETs %d with Range %q, want a second GET from scratch", gets, seen)
			}
		})
	}
}

func TestFetchBlobPersistentMismatchFails(t *testing.T) {
	s := newBlobServer(t, 256<<10, true, fault{corrupt: true}, fault{corrupt: true}, fault{corrupt: true})
	c, _ := newTestClient(t, Options{Retry: RetryPolicy{Attempts: 5, Base: time.Millisecond, MaxWait: time.Second}})
	sink, err := fetchInto(t, c, s)
	if !errors.Is(err, ErrBlobMismatch) {
		t.Fatalf("err = %v, want ErrBlobMismatch", err)
	}
	host := strings.TrimPrefix(s.URL, "http://")
	want := fmt.Sprintf("blob %s from %s: after %d bytes: content does not match its digest: content is sha256:", s.digest, host, 256<<10)
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error\n%q\nwant prefix\n%q", err, want)
	}
	if gets, _ := s.stats(); gets != 2 {
		t.Errorf("%d GETs, want 2 (once more from scratch)", gets)
	}
	if sink.resets != 1 {
		t.Errorf("%d resets, want 1", sink.resets)
	}
}

func TestFetchBlobNeverWritesPastTheSize(t *testing.T) {
	s := newBlobServer(t, 4096, true)
	c, _ := newTestClient(t, Options{})
	sink := &bufSink{}
	err := c.FetchBlob(context.Background(), c.Transport(), s.repo(t), s.digest, 4000, sink)
	if !errors.Is(err, ErrBlobMismatch) || !strings.Contains(err.Error(), "more than the 4000 bytes") {
		t.Fatalf("err = %v, want too long", err)
	}
	if sink.Len() > 4000 {
		t.Errorf("sink holds %d bytes, more than the size", sink.Len())
	}
}

func TestOpenBlobEndsWithMismatchNotEOF(t *testing.T) {
	s := newBlobServer(t, 64<<10, true, fault{short: 1000})
	c, _ := newTestClient(t, Options{})
	rc, err := c.OpenBlob(context.Background(), c.Transport(), s.repo(t), s.digest, int64(len(s.blob)))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(rc)
	if !errors.Is(err, ErrBlobMismatch) || !strings.Contains(err.Error(), "the body ended at 1000 of 65536 bytes") {
		t.Fatalf("err = %v, want a short body refused", err)
	}
}

// A manifest fetched by tag, without a digest header or ETag, could change
// between two requests: its cut body is not resumed.
func TestResumeOnlyForFixedContent(t *testing.T) {
	s := newBlobServer(t, 64<<10, true, fault{cut: 100})
	c, _ := newTestClient(t, Options{})
	resp, err := get(t, c, context.Background(), s.URL+"/v2/x/manifests/latest")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err == nil || buf.Len() != 100 {
		t.Fatalf("read %d bytes, err %v; want the cut to surface", buf.Len(), err)
	}
	if gets, _ := s.stats(); gets != 1 {
		t.Errorf("%d GETs, want 1", gets)
	}
}

func TestRetryRestartsTransientSteps(t *testing.T) {
	c, rec := newTestClient(t, Options{Retry: RetryPolicy{Attempts: 4, Base: time.Millisecond, MaxWait: time.Second}})
	var calls int
	err := c.Retry(context.Background(), "upload", func() error {
		calls++
		return errors.New("400 Bad Request")
	})
	if err == nil || calls != 1 {
		t.Fatalf("calls %d err %v, want one call for an error that is not transient", calls, err)
	}
	calls = 0
	err = c.Retry(context.Background(), "upload", func() error {
		calls++
		switch calls {
		case 1:
			return fmt.Errorf("PUT: write: %w", syscall.ECONNRESET)
		case 2:
			return errors.New("PUT: stream error: stream ID 3; INTERNAL_ERROR; received from peer")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("calls %d err %v, want success on the third try", calls, err)
	}
	calls = 0
	err = c.Retry(context.Background(), "upload", func() error {
		calls++
		if calls < 3 {
			return &Error{Status: http.StatusBadGateway}
		}
		return nil
	})
	if err != nil || calls != 3 || len(rec.get()) != 4 {
		t.Fatalf("calls %d waits %v err %v, want success on the third try", calls, rec.get(), err)
	}
	calls = 0
	err = c.Retry(context.Background(), "upload", func() error {
		calls++
		return &BlobError{Err: mismatch("content is sha256:00")}
	})
	if !errors.Is(err, ErrBlobMismatch) || calls != 2 {
		t.Fatalf("calls %d err %v, want a mismatch tried twice", calls, err)
	}
}

// Wrong bytes of the right size: the Read that would complete the blob
// hands over none of its bytes, only the mismatch, so an upload fed from
// OpenBlob (push's holdLast reads the last byte on its own) always ends
// short of its Content-Length, and a Sink never holds a complete wrong
// body. A good blob read the same way ends with its last byte, then EOF.
func TestOpenBlobHoldsBackWrongLastChunk(t *testing.T) {
	const size = 64 << 10
	s := newBlobServer(t, size, true, fault{corrupt: true}, fault{corrupt: true}, fault{corrupt: true}, fault{corrupt: true})
	c, _ := newTestClient(t, Options{Retry: RetryPolicy{Attempts: 3, Base: time.Millisecond, MaxWait: time.Second}})
	open := func() io.ReadCloser {
		t.Helper()
		rc, err := c.OpenBlob(context.Background(), c.Transport(), s.repo(t), s.digest, size)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rc.Close() })
		return rc
	}

	// As holdLast reads: all but the last byte, then the last alone.
	rc := open()
	buf := make([]byte, size)
	if _, err := io.ReadFull(rc, buf[:size-1]); err != nil {
		t.Fatalf("reading all but the last byte: %v (the damage is in the middle, not yet known)", err)
	}
	if n, err := rc.Read(buf[size-1:]); n != 0 || !errors.Is(err, ErrBlobMismatch) {
		t.Fatalf("last byte: read %d, err %v; want 0 bytes and ErrBlobMismatch", n, err)
	}

	// With large reads: the chunk that completes the body is withheld.
	got, err := io.ReadAll(open())
	if !errors.Is(err, ErrBlobMismatch) || len(got) >= size {
		t.Fatalf("read %d of %d bytes, err %v; want fewer bytes and ErrBlobMismatch", len(got), size, err)
	}

	// FetchBlob (two tries): the sink never holds all size bytes.
	sink := &maxSink{}
	if err := c.FetchBlob(context.Background(), c.Transport(), s.repo(t), s.digest, size, sink); !errors.Is(err, ErrBlobMismatch) {
		t.Fatalf("FetchBlob: %v, want ErrBlobMismatch", err)
	}
	if sink.max >= size || sink.resets != 1 {
		t.Errorf("sink held up to %d of %d bytes, reset %d times; want less than the size, one reset", sink.max, size, sink.resets)
	}

	// The server is honest now: the same reads end with the last byte.
	rc = open()
	if _, err := io.ReadFull(rc, buf[:size-1]); err != nil {
		t.Fatal(err)
	}
	if n, err := rc.Read(buf[size-1:]); n != 1 || err != nil || !bytes.Equal(buf, s.blob) {
		t.Fatalf("last byte of a good blob: read %d, err %v, equal %v", n, err, bytes.Equal(buf, s.blob))
	}
	if n, err := rc.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the last byte: read %d, err %v; want EOF", n, err)
	}
}

// maxSink is a Sink that remembers the most bytes it ever held.
type maxSink struct {
	n, max int
	resets int
}

func (m *maxSink) Write(p []byte) (int, error) {
	m.n += len(p)
	m.max = max(m.max, m.n)
	return len(p), nil
}

func (m *maxSink) Reset() error { m.n = 0; m.resets++; return nil }
