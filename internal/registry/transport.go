package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// roundTripper is the only place ferry retries HTTP requests. It also sets
// the User-Agent, forces or refuses plain http, and picks the per-host
// http.Transport (TLS settings).
type roundTripper struct{ c *Client }

// retryStatus are the statuses worth another attempt.
var retryStatus = map[int]bool{
	http.StatusRequestTimeout:      true,
	http.StatusTooManyRequests:     true,
	http.StatusInternalServerError: true,
	http.StatusBadGateway:          true,
	http.StatusServiceUnavailable:  true,
	http.StatusGatewayTimeout:      true,
}

// RoundTrip implements http.RoundTripper.
//
// Policy:
//   - Only requests that can be sent again are retried: GET and HEAD, and
//     others whose body is empty or can be re-obtained (GetBody). A streamed
//     blob PATCH is never retried here.
//   - Retried: connection resets/EOFs/timeouts and 408, 429, 500, 502, 503,
//     504; up to RetryPolicy.Attempts tries in all; exponential backoff from
//     Base with jitter, each wait capped at MaxWait.
//   - On 429 and 503 a Retry-After (seconds or HTTP date) replaces the
//     backoff. If it is longer than MaxWait ferry does not wait: a 429 fails
//     at once with a *RateLimitError, a 503 returns the response.
//   - Docker Hub 429 (TOOMANYREQUESTS) without Retry-After fails at once with
//     a *RateLimitError that shows ratelimit-limit/-remaining: its window is
//     6 hours, so waiting seconds or a minute only burns more of the quota.
//   - The body of a 200 answer to a GET resumes when the connection fails
//     mid-way (see resumeBody), within the same attempts and backoff.
//   - Waiting stops when the request's context is done.
//   - A request whose context went through SingleAttempt is sent once.
func (t *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	c := t.c
	ctx := req.Context()
	h := canonicalHost(req.URL.Host)
	r, base, err := c.prepareRequest(req, h)
	if err != nil {
		closeBody(req)
		return nil, err
	}

	canRetry := replayable(req) && !singleAttempt(ctx)
	for attempt := 1; ; attempt++ {
		resp, err := base.RoundTrip(r)
		last := !canRetry || attempt >= c.opts.Retry.Attempts
		var wait time.Duration
		if err != nil {
			if wait, err = c.netErrorWait(req, err, attempt, last); err != nil {
				return nil, err
			}
		} else {
			c.noteRateLimit(h, resp.Header)
			if !retryStatus[resp.StatusCode] {
				if canRetry && req.Method == http.MethodGet && resp.StatusCode == http.StatusOK && resp.Body != nil && resp.Body != http.NoBody {
					resp.Body = newResumeBody(c, base, r, resp, attempt)
				}
				return resp, nil
			}
			var giveUp bool
			if wait, giveUp, err = c.statusWait(req, h, resp, attempt, last); err != nil {
				return nil, err
			} else if giveUp {
				return resp, nil
			}
			discard(resp)
		}
		if r, err = c.nextAttempt(req, r, wait); err != nil {
			return nil, err
		}
	}
}

// prepareRequest is the first attempt's request (User-Agent set, scheme
// checked against --plain-http) and the transport for host h.
func (c *Client) prepareRequest(req *http.Request, h string) (*http.Request, http.RoundTripper, error) {
	r := req.Clone(req.Context())
	if ua := r.Header.Get("User-Agent"); !strings.HasPrefix(ua, c.ua) {
		if ua == "" {
			r.Header.Set("User-Agent", c.ua)
		} else {
			r.Header.Set("User-Agent", c.ua+" "+ua)
		}
	}
	if c.isRegistry(h) {
		switch {
		case r.URL.Scheme == "https" && c.opts.PlainHTTP:
			r.URL.Scheme = "http"
		case r.URL.Scheme == "http" && !c.opts.PlainHTTP && !isLoopback(h):
			return nil, nil, fmt.Errorf("%w to %s (go-containerregistry falls back to http for private addresses; docker does not): pass --plain-http if the registry has no TLS", ErrPlainHTTPRefused, req.URL.Host)
		}
	}
	base, err := c.transportFor(h)
	if err != nil {
		return nil, nil, err
	}
	return r, base, nil
}

// netErrorWait is how long to wait before retrying req after the network
// error err, or the error to return when it is not retried.
func (c *Client) netErrorWait(req *http.Request, err error, attempt int, last bool) (time.Duration, error) {
	if isTLSError(err) {
		return 0, &TLSError{Registry: req.URL.Host, Err: err}
	}
	if last || req.Context().Err() != nil || !retryableNetErr(err) {
		return 0, err
	}
	wait := c.backoff(attempt)
	c.log.Info("registry request failed, retrying",
		"registry", req.URL.Host, "method", req.Method, "url", redactURL(req.URL),
		"error", err.Error(), "attempt", attempt, "wait", wait)
	return wait, nil
}

// statusWait is how long to wait before retrying req after resp, whose
// status is one worth retrying; giveUp means return resp as it is, and an
// error (a rate limit) means fail now.
func (c *Client) statusWait(req *http.Request, h string, resp *http.Response, attempt int, last bool) (wait time.Duration, giveUp bool, err error) {
	policy := c.opts.Retry
	var body []byte
	if resp.StatusCode == http.StatusTooManyRequests {
		body = bufferBody(resp)
	}
	ra, hasRA := retryAfter(resp.Header, c.now())
	if resp.StatusCode == http.StatusTooManyRequests {
		if rl := c.rateLimitStop(req, h, resp, body, ra, hasRA); rl != nil {
			return 0, false, rl
		}
	}
	if last {
		return 0, true, nil
	}
	wait = c.backoff(attempt)
	if hasRA && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if ra > policy.MaxWait {
			c.log.Warn("registry asks to retry later than ferry is willing to wait; not waiting",
				"registry", req.URL.Host, "status", resp.StatusCode, "retry_after", ra, "max_wait", policy.MaxWait)
			return 0, true, nil
		}
		wait = ra
	}
	c.log.Info("registry request failed, retrying",
		"registry", req.URL.Host, "method", req.Method, "url", redactURL(req.URL),
		"status", resp.StatusCode, "attempt", attempt, "wait", wait)
	return wait, false, nil
}

// nextAttempt waits, then returns the request for the next attempt: a clone
// of r with a fresh copy of req's body.
func (c *Client) nextAttempt(req, r *http.Request, wait time.Duration) (*http.Request, error) {
	ctx := req.Context()
	if err := c.sleep(ctx, wait); err != nil {
		return nil, fmt.Errorf("waiting %s to retry %s %s: %w", wait, req.Method, redactURL(req.URL), err)
	}
	next := r.Clone(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		b, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("re-reading request body to retry %s %s: %w", req.Method, redactURL(req.URL), err)
		}
		next.Body = b
	}
	return next, nil
}

// rateLimitStop decides whether a 429 should fail now rather than be retried.
func (c *Client) rateLimitStop(req *http.Request, h string, resp *http.Response, body []byte, ra time.Duration, hasRA bool) *RateLimitError {
	hub := h == DockerHub || resp.Header.Get("Ratelimit-Limit") != ""
	code, msg := registryErrorCode(body)
	hubLimit := hub && (code == "TOOMANYREQUESTS" || code == "")
	tooLong := hasRA && ra > c.opts.Retry.MaxWait
	if !(hubLimit && !hasRA) && !tooLong {
		return nil
	}
	rl := &RateLimitError{
		Registry:  req.URL.Host,
		Method:    req.Method,
		URL:       redactURL(req.URL),
		DockerHub: hubLimit,
		Limit:     resp.Header.Get("Ratelimit-Limit"),
		Remaining: resp.Header.Get("Ratelimit-Remaining"),
		Message:   truncate(msg, 200),
	}
	if hasRA {
		rl.RetryAfter = ra
	}
	c.log.Warn("registry rate limit: not retrying", "registry", req.URL.Host,
		"ratelimit_limit", rl.Limit, "ratelimit_remaining", rl.Remaining, "retry_after", rl.RetryAfter)
	_ = resp.Body.Close()
	return rl
}

func registryErrorCode(body []byte) (code, msg string) {
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return "", strings.TrimSpace(string(body))
	}
	return e.Errors[0].Code, e.Errors[0].Message
}

// backoff returns the wait before attempt+1: Base·2^(attempt-1), capped at
// MaxWait, with jitter.
func (c *Client) backoff(attempt int) time.Duration {
	p := c.opts.Retry
	d := p.Base
	for i := 1; i < attempt && d < p.MaxWait; i++ {
		d *= 2
	}
	d = min(d, p.MaxWait)
	return c.jitter(d)
}

// equalJitter returns a duration in [d/2, d].
func equalJitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP-date.
func retryAfter(hdr http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(hdr.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(365*24*time.Hour/time.Second) {
			secs = int64(365 * 24 * time.Hour / time.Second)
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

type singleAttemptKey struct{}

// SingleAttempt returns a context under which the transport sends a
// request once: no retry, no resume. A blob upload uses it, because a cut
// upload must restart in a new session (the registry may have kept part of
// the body in the old one), which the caller does through Client.Retry.
func SingleAttempt(ctx context.Context) context.Context {
	return context.WithValue(ctx, singleAttemptKey{}, true)
}

func singleAttempt(ctx context.Context) bool {
	v, _ := ctx.Value(singleAttemptKey{}).(bool)
	return v
}

// replayable reports whether req can be sent again.
func replayable(req *http.Request) bool {
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	return req.GetBody != nil
}

// retryableNetErr: connection-level failures worth another try. TLS errors,
// refused connections, DNS failures and cancellation are not.
func retryableNetErr(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || isTLSError(err) {
		return false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// bufferBody reads at most maxErrorBody bytes of resp's body, closes it, and
// replaces it with the bytes read.
func bufferBody(resp *http.Response) []byte {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

// discard drains a capped amount (to reuse the connection) and closes.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// noteRateLimit records Docker Hub's ratelimit-remaining header
// ("76;w=21600") for host.
func (c *Client) noteRateLimit(host string, h http.Header) {
	v := h.Get("ratelimit-remaining")
	if v == "" {
		return
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(v, ";", 2)[0]))
	if err != nil {
		return
	}
	c.rlMu.Lock()
	c.rateRemaining[host] = n
	c.rlMu.Unlock()
}

// RateLimitRemaining returns the pull quota the registry last reported
// (Docker Hub's ratelimit-remaining), and whether it reported one.
func (c *Client) RateLimitRemaining(host string) (int, bool) {
	c.rlMu.Lock()
	defer c.rlMu.Unlock()
	n, ok := c.rateRemaining[canonicalHost(host)]
	return n, ok
}
