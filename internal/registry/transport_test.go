package registry

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestRetry503HonoursRetryAfter(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) <= 2 {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	c, rec := newTestClient(t, Options{Retry: RetryPolicy{Attempts: 5, Base: time.Millisecond, MaxWait: time.Minute}})

	resp, err := get(t, c, context.Background(), srv.URL+"/v2/")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if got := hits.Load(); got != 3 {
		t.Errorf("server hits = %d, want 3", got)
	}
	waits := rec.get()
	if len(waits) != 2 {
		t.Fatalf("waits = %v, want 2", waits)
	}
	for _, w := range waits {
		if w < 7*time.Second {
			t.Errorf("waited %s, want >= Retry-After 7s", w)
		}
	}
}

func TestRetryAfterHTTPDate(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.Header().Set("Retry-After", now.Add(30*time.Second).Format(http.TimeFormat))
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c, rec := newTestClient(t, Options{})
	c.now = func() time.Time { return now }

	resp, err := get(t, c, context.Background(), srv.URL+"/v2/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("resp %v err %v", resp, err)
	}
	if waits := rec.get(); len(waits) != 1 || waits[0] != 30*time.Second {
		t.Errorf("waits = %v, want [30s]", waits)
	}
}

func TestBackoffIsExponentialAndCapped(t *testing.T) {
	c, rec := newTestClient(t, Options{Retry: RetryPolicy{Attempts: 5, Base: time.Second, MaxWait: 3 * time.Second}})
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer srv.Close()
	resp, err := get(t, c, context.Background(), srv.URL+"/v2/")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadGateway || hits.Load() != 5 {
		t.Fatalf("status %d hits %d, want 502 after 5", resp.StatusCode, hits.Load())
	}
	want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}
	got := rec.get()
	if len(got) != len(want) {
		t.Fatalf("waits = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("waits = %v, want %v", got, want)
			break
		}
	}
	for i := 0; i < 1000; i++ {
		if j := equalJitter(time.Second); j < 500*time.Millisecond || j > time.Second {
			t.Fatalf("jitter %s outside [0.5s,1s]", j)
		}
	}
}

func TestNoRetryOn404(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.NotFound(w, r)
	}))
	defer srv.Close()
	c, rec := newTestClient(t, Options{})
	resp, err := get(t, c, context.Background(), srv.URL+"/v2/x/manifests/y")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNotFound || hits.Load() != 1 || len(rec.get()) != 0 {
		t.Errorf("status %d hits %d waits %v; want 404, 1 hit, no wait", resp.StatusCode, hits.Load(), rec.get())
	}
}

func TestNonReplayableBodyNotRetried(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, Options{})
	// A streamed body (no GetBody), like a blob PATCH.
	req, _ := http.NewRequest(http.MethodPatch, srv.URL+"/v2/x/blobs/uploads/1", io.NopCloser(strings.NewReader("layer")))
	resp, err := c.Transport().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if hits.Load() != 1 {
		t.Errorf("hits = %d, want 1 (body cannot be replayed)", hits.Load())
	}

	// A body with GetBody (manifest PUT) is replayed, byte for byte.
	hits.Store(0)
	var bodies []string
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv2.Close()
	req, _ = http.NewRequest(http.MethodPut, srv2.URL+"/v2/x/manifests/y", strings.NewReader("manifest"))
	resp, err = c.Transport().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || len(bodies) != 2 || bodies[1] != "manifest" {
		t.Errorf("status %d bodies %q; want 201 after a replay of the same body", resp.StatusCode, bodies)
	}
}

func TestConnectionResetRetried(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close() // EOF before any response
			}
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c, rec := newTestClient(t, Options{})
	resp, err := get(t, c, context.Background(), srv.URL+"/v2/")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || hits.Load() != 2 || len(rec.get()) != 1 {
		t.Errorf("status %d hits %d waits %v; want 200 after one retry", resp.StatusCode, hits.Load(), rec.get())
	}
}

func Test429RetryAfterHonoured(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c, rec := newTestClient(t, Options{})
	resp, err := get(t, c, context.Background(), srv.URL+"/v2/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("resp %v err %v", resp, err)
	}
	if waits := rec.get(); len(waits) != 1 || waits[0] != 2*time.Second {
		t.Errorf("waits = %v, want [2s]", waits)
	}
}

func Test429RetryAfterLongerThanMaxWaitFailsAtOnce(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	c, rec := newTestClient(t, Options{})
	_, err := get(t, c, context.Background(), srv.URL+"/v2/")
	var rl *RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("err = %v, want *RateLimitError", err)
	}
	if rl.RetryAfter != time.Hour || hits.Load() != 1 || len(rec.get()) != 0 {
		t.Errorf("retryAfter %s hits %d waits %v", rl.RetryAfter, hits.Load(), rec.get())
	}
	if !strings.Contains(err.Error(), "retry after 1h0m0s") {
		t.Errorf("error %q does not say when to retry", err)
	}
}

// dockerHubLimit answers like Docker Hub over its pull limit.
func dockerHubLimit(hits *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Ratelimit-Limit", "100;w=21600")
		w.Header().Set("Ratelimit-Remaining", "0;w=21600")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your unauthenticated pull rate limit."}]}`)
	})
}

func TestDockerHubPullLimitFailsFast(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(dockerHubLimit(&hits))
	defer srv.Close()
	c, rec := newTestClient(t, Options{})
	// Route index.docker.io to the test server (no external network).
	addr := hostOf(t, srv)
	hubTransport := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	c.transports[DockerHub] = hubTransport
	defer hubTransport.CloseIdleConnections()

	_, err := get(t, c, context.Background(), "http://index.docker.io/v2/library/alpine/manifests/latest")
	var rl *RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("err = %v, want *RateLimitError", err)
	}
	if hits.Load() != 1 || len(rec.get()) != 0 {
		t.Errorf("hits %d waits %v: a Docker Hub pull limit must not be retried on a short backoff", hits.Load(), rec.get())
	}
	msg := err.Error()
	for _, want := range []string{"Docker Hub pull rate limit", "ratelimit-remaining 0;w=21600", "index.docker.io", "--mirror"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestRateLimitHeadersMarkDockerHubStyleLimit(t *testing.T) {
	// A mirror of Docker Hub that passes its ratelimit headers through.
	var hits atomic.Int32
	srv := httptest.NewServer(dockerHubLimit(&hits))
	defer srv.Close()
	c, _ := newTestClient(t, Options{})
	_, err := get(t, c, context.Background(), srv.URL+"/v2/library/alpine/manifests/latest")
	if !errors.Is(err, ErrRateLimited) || hits.Load() != 1 {
		t.Fatalf("err = %v hits %d, want ErrRateLimited after 1 hit", err, hits.Load())
	}
}

func TestContextCancelStopsWaiting(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Retry-After", "50")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, Options{})
	waiting := make(chan struct{})
	c.sleep = func(ctx context.Context, d time.Duration) error {
		close(waiting)
		return sleepCtx(ctx, d) // the real sleep: must return on cancel
	}
	go func() { <-waiting; cancel() }()
	start := time.Now()
	_, err := get(t, c, ctx, srv.URL+"/v2/")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if time.Since(start) > 10*time.Second || hits.Load() != 1 {
		t.Errorf("took %s with %d hits; cancellation must stop the wait", time.Since(start), hits.Load())
	}
}

// TestNoDoubleRetries proves that ggcr's retry layer is off: a failing HEAD
// through remote.Head reaches the server exactly Attempts times.
func TestNoDoubleRetries(t *testing.T) {
	var manifestHits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		manifestHits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	host := hostOf(t, srv)
	c, rec := newTestClient(t, Options{Retry: RetryPolicy{Attempts: 4, Base: time.Millisecond, MaxWait: time.Second}})
	ref, err := name.ParseReference(host+"/foo/bar:latest", c.NameOptions(host)...)
	if err != nil {
		t.Fatal(err)
	}
	_, err = remote.Head(ref, c.RemoteOptions(context.Background(), host, nil)...)
	if err == nil {
		t.Fatal("HEAD succeeded, want 503")
	}
	if got := manifestHits.Load(); got != 4 {
		t.Errorf("manifest hits = %d, want exactly Attempts = 4", got)
	}
	if got := len(rec.get()); got != 3 {
		t.Errorf("waits = %d, want 3", got)
	}
	if !errors.Is(Explain(err), ErrUnavailable) {
		t.Errorf("Explain(%v) is not ErrUnavailable", err)
	}
}

func TestUserAgentAndPlainHTTPOnLoopback(t *testing.T) {
	var uas []string
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-mu
		uas = append(uas, r.UserAgent())
		mu <- struct{}{}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := hostOf(t, srv)
	c, _ := newTestClient(t, Options{UserAgent: "ferry/1.2.3"})
	ref, err := name.ParseReference(host+"/foo/bar:v1", c.NameOptions(host)...)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(256, 2)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := remote.Write(ref, img, c.RemoteOptions(ctx, host, nil)...); err != nil {
		t.Fatalf("write over plain http to 127.0.0.1: %v", err)
	}
	desc, err := remote.Head(ref, c.RemoteOptions(ctx, host, nil)...)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if desc.Digest != want {
		t.Errorf("digest %s, want %s", desc.Digest, want)
	}
	<-mu
	defer func() { mu <- struct{}{} }()
	if len(uas) == 0 {
		t.Fatal("no requests seen")
	}
	for _, ua := range uas {
		if !strings.HasPrefix(ua, "ferry/1.2.3") {
			t.Errorf("User-Agent %q does not start with ferry/1.2.3", ua)
		}
	}
}

func TestPlainHTTPRefusedForNonLoopback(t *testing.T) {
	c, _ := newTestClient(t, Options{})
	c.register("10.1.2.3:5000")
	_, err := get(t, c, context.Background(), "http://10.1.2.3:5000/v2/")
	if !errors.Is(err, ErrPlainHTTPRefused) {
		t.Fatalf("err = %v, want ErrPlainHTTPRefused", err)
	}
	if !strings.Contains(err.Error(), "--plain-http") {
		t.Errorf("error %q lacks the hint", err)
	}
	if len(c.NameOptions("10.1.2.3:5000")) != 0 {
		t.Error("NameOptions must not mark a private host insecure without --plain-http")
	}
}

func TestPlainHTTPForced(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	host := hostOf(t, srv)
	c, _ := newTestClient(t, Options{PlainHTTP: true})
	if len(c.NameOptions(host)) != 1 {
		t.Fatal("NameOptions: want name.Insecure with --plain-http")
	}
	resp, err := get(t, c, context.Background(), "https://"+host+"/v2/")
	if err != nil {
		t.Fatalf("https URL with --plain-http: %v", err)
	}
	if resp.Request.URL.Scheme != "http" {
		t.Errorf("scheme %q, want http", resp.Request.URL.Scheme)
	}
	// And through ggcr's ping: CheckAuth succeeds over http.
	reg, _ := name.NewRegistry(host, c.NameOptions(host)...)
	if err := c.CheckAuth(context.Background(), reg, authn.Anonymous, ""); err != nil {
		t.Fatal(err)
	}
}

func Test503RetryAfterLongerThanMaxWaitReturnsAtOnce(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Retry-After", "600")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c, rec := newTestClient(t, Options{Retry: RetryPolicy{Attempts: 5, Base: time.Millisecond, MaxWait: time.Minute}})
	resp, err := get(t, c, context.Background(), srv.URL+"/v2/")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || hits.Load() != 1 || len(rec.get()) != 0 {
		t.Errorf("status %d hits %d waits %v; want the 503 at once, no sleep", resp.StatusCode, hits.Load(), rec.get())
	}
}

func TestRateLimitRemainingRecorded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ratelimit-limit", "100;w=21600")
		w.Header().Set("ratelimit-remaining", "76;w=21600")
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	if _, ok := c.RateLimitRemaining(host); ok {
		t.Fatal("quota known before any request")
	}
	req, _ := http.NewRequest(http.MethodHead, srv.URL+"/v2/library/redis/manifests/latest", nil)
	resp, err := c.Transport().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n, ok := c.RateLimitRemaining(host); !ok || n != 76 {
		t.Fatalf("remaining = %d, %v; want 76", n, ok)
	}
}
