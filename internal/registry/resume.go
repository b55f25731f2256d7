package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// resumeBody is the body of a successful GET. When reading it fails at the
// connection level (reset, unexpected EOF, timeout) it asks the server for
// the rest: "Range: bytes=N-" from the N bytes already handed to the
// reader. A 206 whose Content-Range starts at N continues the stream; a 200
// (the server ignores Range) has its first N bytes skipped; anything else
// ends the read with an error. Each new request counts against the same
// attempt budget as the status retries of the request that opened the body,
// and waits the same backoff. The reader never sees the fault.
//
// Only content that cannot change between two requests is resumed: a
// content-addressed URL (.../blobs/sha256:…, .../manifests/sha256:…), or a
// response whose Docker-Content-Digest or strong ETag the resumed response
// repeats. Anything else fails as before and is retried by its caller.
type resumeBody struct {
	c       *Client
	base    http.RoundTripper
	req     *http.Request // the request that produced the current body (Range removed)
	ctx     context.Context
	attempt int // requests sent so far for this body, the first included
	n       int64
	digest  string // Docker-Content-Digest of the first response
	etag    string // strong ETag of the first response
	fixed   bool   // content-addressed URL
	gzipped bool   // net/http decompressed the body: ranges would be of other bytes
	pending error  // a read error not yet acted on
	final   error  // the error every further Read returns

	mu     sync.Mutex
	cur    io.ReadCloser
	closed bool
}

func newResumeBody(c *Client, base http.RoundTripper, req *http.Request, resp *http.Response, attempt int) *resumeBody {
	etag := resp.Header.Get("ETag")
	if strings.HasPrefix(etag, "W/") {
		etag = ""
	}
	return &resumeBody{
		c: c, base: base, req: req, ctx: req.Context(), attempt: attempt,
		digest:  resp.Header.Get("Docker-Content-Digest"),
		etag:    etag,
		fixed:   contentAddressed(req.URL.Path),
		gzipped: resp.Uncompressed,
		cur:     resp.Body,
	}
}

// contentAddressed reports whether path names its content by digest.
func contentAddressed(path string) bool {
	for _, p := range []string{"/blobs/sha256:", "/manifests/sha256:", "/blobs/sha512:", "/manifests/sha512:"} {
		if i := strings.LastIndex(path, p); i >= 0 && !strings.Contains(path[i+len(p):], "/") {
			return true
		}
	}
	return false
}

func (b *resumeBody) Read(p []byte) (int, error) {
	if b.final != nil {
		return 0, b.final
	}
	for {
		if err := b.pending; err != nil {
			b.pending = nil
			if b.final = b.resume(err); b.final != nil {
				return 0, b.final
			}
		}
		b.mu.Lock()
		cur, closed := b.cur, b.closed
		b.mu.Unlock()
		if closed || cur == nil {
			return 0, errors.New("read on closed response body")
		}
		m, err := cur.Read(p)
		b.n += int64(m)
		if err == nil || err == io.EOF {
			return m, err
		}
		// A failed body may answer io.EOF on the next Read: keep its
		// error, hand over the bytes that came with it first.
		b.pending = err
		if m > 0 {
			return m, nil
		}
	}
}

// resume replaces the failed body with the rest of the content, or returns
// the error the reader should see.
func (b *resumeBody) resume(cause error) error {
	policy := b.c.opts.Retry
	host := b.req.URL.Host
	if !resumable(cause) || b.ctx.Err() != nil || !(b.fixed || b.digest != "" || b.etag != "") {
		return cause
	}
	_ = b.swap(nil)
	for {
		if b.attempt >= policy.Attempts {
			return fmt.Errorf("GET %s: after %d bytes and %d attempts: %w", redactURL(b.req.URL), b.n, b.attempt, cause)
		}
		wait := b.c.backoff(b.attempt)
		b.c.log.Info("registry response cut, resuming", "registry", host, "url", redactURL(b.req.URL),
			"error", cause.Error(), "received", b.n, "attempt", b.attempt, "wait", wait)
		if err := b.c.sleep(b.ctx, wait); err != nil {
			return fmt.Errorf("waiting %s to resume GET %s: %w", wait, redactURL(b.req.URL), err)
		}
		b.attempt++
		body, err := b.reopen()
		if err == nil {
			if b.swap(body) {
				return nil
			}
			_ = body.Close()
			return errors.New("read on closed response body")
		}
		var fatal *resumeError
		if errors.As(err, &fatal) {
			return fmt.Errorf("GET %s: after %d bytes: %w (resuming after: %v)", redactURL(b.req.URL), b.n, fatal.err, cause)
		}
		cause = err
	}
}

// swap installs body as the current one and reports whether the reader is
// still open; the previous body is closed.
func (b *resumeBody) swap(body io.ReadCloser) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur != nil {
		_ = b.cur.Close()
	}
	b.cur = body
	return !b.closed
}

// resumable reports whether a body read error is worth resuming after.
// Broader than retryableNetErr: HTTP/2 reports a lost connection or a
// reset stream with errors of its own ("http2: client connection lost",
// a StreamError), and re-reading content-checked bytes is always safe.
// Cancellation and TLS failures are not resumed.
func resumable(err error) bool {
	return err != nil && err != io.EOF && !errors.Is(err, context.Canceled) &&
		!errors.Is(err, context.DeadlineExceeded) && !isTLSError(err)
}

// errResumeRefused: the server refused a resume (401, 403). A request
// made again from the top (FetchBlob's retry) gets new credentials.
var errResumeRefused = errors.New("resume refused")

// resumeError is a resumed response that cannot continue the content.
type resumeError struct{ err error }

func (e *resumeError) Error() string { return e.err.Error() }

// reopen sends the request again for the bytes from b.n on. Errors worth
// another attempt are returned as they are; a *resumeError ends the read.
func (b *resumeBody) reopen() (io.ReadCloser, error) {
	r := b.req.Clone(b.ctx)
	if b.n > 0 && !b.gzipped {
		r.Header.Set("Range", "bytes="+strconv.FormatInt(b.n, 10)+"-")
		if b.etag != "" {
			r.Header.Set("If-Range", b.etag)
		}
	}
	resp, err := b.base.RoundTrip(r)
	if err != nil {
		if retryableNetErr(err) {
			return nil, err
		}
		return nil, &resumeError{err}
	}
	b.c.noteRateLimit(canonicalHost(b.req.URL.Host), resp.Header)
	if retryStatus[resp.StatusCode] {
		discard(resp)
		return nil, fmt.Errorf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	if err := b.sameContent(resp); err != nil {
		discard(resp)
		return nil, &resumeError{err}
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if start, ok := rangeStart(resp.Header.Get("Content-Range")); !ok || start != b.n {
			discard(resp)
			return nil, &resumeError{fmt.Errorf("asked for bytes from %d, got Content-Range %q", b.n, resp.Header.Get("Content-Range"))}
		}
		return resp.Body, nil
	case http.StatusOK:
		// No range support: read the content again and skip what was read.
		if skipped, err := io.CopyN(io.Discard, resp.Body, b.n); err != nil {
			_ = resp.Body.Close()
			if err == io.EOF {
				return nil, &resumeError{fmt.Errorf("the content is now %d bytes, %d were already read", skipped, b.n)}
			}
			return nil, err
		}
		return resp.Body, nil
	}
	discard(resp)
	err = fmt.Errorf("resuming got %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		// A token or a presigned URL expired while the body streamed: the
		// resume goes below the token exchange, a new request does not.
		err = fmt.Errorf("%w: %w", errResumeRefused, err)
	}
	return nil, &resumeError{err}
}

// sameContent checks that a resumed response is of the same content.
//
// Resume premise: the second response continues the bytes of the first.
// A content-addressed URL guarantees it (and the caller checks the digest
// the URL names). Any other URL (a manifest by tag) may answer with other
// content at any moment, so the resumed response must vouch for it with
// the validator the first one carried: the same Docker-Content-Digest, or
// the same strong ETag (also sent as If-Range, so a range-capable server
// answers a changed resource with a full 200 of the new content, which
// is refused here too). A validator both responses carry must agree; a
// resumed response that carries none the first did is refused, and the
// read fails rather than splicing two bodies. TestResumeByTagNeedsSameValidator
// breaks it with a tag that moves mid-resume and a resumed response
// without the digest header.
func (b *resumeBody) sameContent(resp *http.Response) error {
	d, etag := resp.Header.Get("Docker-Content-Digest"), resp.Header.Get("ETag")
	if b.digest != "" && d != "" && d != b.digest {
		return fmt.Errorf("content changed while resuming: %s, was %s", d, b.digest)
	}
	if b.fixed {
		return nil
	}
	if b.etag != "" && etag != "" && etag != b.etag {
		return fmt.Errorf("content changed while resuming: ETag %q, was %q", etag, b.etag)
	}
	if (b.digest != "" && d == b.digest) || (b.etag != "" && etag == b.etag) {
		return nil
	}
	return fmt.Errorf("cannot resume: the new response carries neither the Docker-Content-Digest nor the strong ETag of the first (%s), so it may be other content (a tag that moved)",
		b.validators())
}

// validators names the validators of the first response, for errors.
func (b *resumeBody) validators() string {
	var v []string
	if b.digest != "" {
		v = append(v, "Docker-Content-Digest "+b.digest)
	}
	if b.etag != "" {
		v = append(v, "ETag "+b.etag)
	}
	return strings.Join(v, ", ")
}

// rangeStart parses the first byte position of "bytes START-END/TOTAL".
func rangeStart(cr string) (int64, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(cr), "bytes ")
	if !ok {
		return 0, false
	}
	s, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	s = strings.TrimSpace(s)
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func (b *resumeBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.cur == nil {
		return nil
	}
	err := b.cur.Close()
	b.cur = nil
	return err
}
