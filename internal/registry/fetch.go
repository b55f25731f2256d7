package registry

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ErrBlobMismatch: the bytes a registry sent are not the blob asked for
// (wrong size or digest).
var ErrBlobMismatch = errors.New("content does not match its digest")

// BlobError is a failed blob fetch: which blob, from which registry, after
// how many bytes. The caller adds the image.
type BlobError struct {
	Registry string
	Digest   v1.Hash
	Received int64 // bytes received (and hashed) in the last try
	Err      error
}

func (e *BlobError) Error() string {
	return fmt.Sprintf("blob %s from %s: after %d bytes: %v", e.Digest, e.Registry, e.Received, e.Err)
}

func (e *BlobError) Unwrap() error { return e.Err }

// copyBufs are FetchBlob's copy buffers: large, so that a fast body makes
// few writes into the sink.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// mismatch describes content that is not what its descriptor says.
func mismatch(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBlobMismatch}, a...)...)
}

// Sink receives a blob's bytes. Reset throws away everything written so
// far: the blob is then written again from its first byte.
type Sink interface {
	io.Writer
	Reset() error
}

// FetchBlob copies blob d (size bytes) of repo into sink and verifies size
// and digest as the bytes pass; rt is an authenticated transport for repo
// built on Client.Transport (whose GETs resume a cut body by themselves).
// Content that does not match, or a cut body whose resume the server
// refused (401/403: a token expired), is fetched once more from scratch
// (sink.Reset) before FetchBlob fails; the error is a *BlobError that errors.Is
// ErrBlobMismatch. The sink never holds more than size bytes, and on success
// it holds exactly the blob.
func (c *Client) FetchBlob(ctx context.Context, rt http.RoundTripper, repo name.Repository, d v1.Hash, size int64, sink Sink) error {
	return c.fetchBlob(ctx, plainBlobs(rt, repo), d, size, sink)
}

// FetchBlob is Client.FetchBlob through the handle's credential.
func (r *Repo) FetchBlob(ctx context.Context, d v1.Hash, size int64, sink Sink) error {
	return r.h.c.fetchBlob(ctx, r.blobs(), d, size, sink)
}

// OpenBlob is Client.OpenBlob through the handle's credential.
func (r *Repo) OpenBlob(ctx context.Context, d v1.Hash, size int64) (io.ReadCloser, error) {
	return r.h.c.openBlob(ctx, r.blobs(), d, size)
}

// blobGetter says where a blob GET goes: the client that sends it (an
// authenticated transport on Client.Transport), the URL, and the registry
// named in errors.
type blobGetter struct {
	hc   *http.Client
	url  func(d v1.Hash) string
	host string
}

func plainBlobs(rt http.RoundTripper, repo name.Repository) blobGetter {
	return blobGetter{
		hc:   &http.Client{Transport: rt},
		host: repo.RegistryStr(),
		url: func(d v1.Hash) string {
			u := url.URL{Scheme: repo.Scheme(), Host: repo.RegistryStr(), Path: "/v2/" + repo.RepositoryStr() + "/blobs/" + d.String()}
			return u.String()
		},
	}
}

func (r *Repo) blobs() blobGetter {
	return blobGetter{hc: r.hc, host: r.h.name, url: func(d v1.Hash) string { return r.URL("/blobs/" + d.String()) }}
}

func (c *Client) fetchBlob(ctx context.Context, g blobGetter, d v1.Hash, size int64, sink Sink) error {
	for try := 1; ; try++ {
		body, err := c.getBlob(ctx, g, d)
		if err != nil {
			return err
		}
		vr, err := newVerifier(body, g.host, d, size)
		if err != nil {
			_ = body.Close()
			return err
		}
		bp := copyBufs.Get().(*[]byte)
		err = copyHashing(sink, vr, *bp)
		copyBufs.Put(bp)
		_ = body.Close()
		if err == nil {
			return nil
		}
		var be *BlobError
		if !errors.As(err, &be) {
			return &BlobError{Registry: g.host, Digest: d, Received: vr.n, Err: err}
		}
		// Wrong bytes, or a resume refused (a token expired mid-body): once
		// more from scratch, through the token exchange.
		if !(errors.Is(err, ErrBlobMismatch) || errors.Is(err, errResumeRefused)) || try >= 2 || ctx.Err() != nil {
			return err
		}
		wait := c.backoff(try)
		c.log.Warn("blob fetch failed; fetching it again from scratch", "registry", g.host,
			"blob", d.String(), "received", vr.n, "error", err.Error(), "wait", wait)
		if rerr := sink.Reset(); rerr != nil {
			return fmt.Errorf("%w (restarting the copy: %v)", err, rerr)
		}
		if serr := c.sleep(ctx, wait); serr != nil {
			return err
		}
	}
}

// OpenBlob starts a GET of blob d (size bytes) of repo through rt and
// returns its body, checked as it is read: a body longer or shorter than
// size, or of another digest, ends with a *BlobError (errors.Is
// ErrBlobMismatch) instead of io.EOF, and the Read that would complete a
// wrong body returns none of its bytes (see verifier.Read), so a consumer
// that commits only at its end, such as an upload, never completes wrong
// bytes. Use it where the
// consumer cannot be restarted; Client.Retry then restarts the whole step.
func (c *Client) OpenBlob(ctx context.Context, rt http.RoundTripper, repo name.Repository, d v1.Hash, size int64) (io.ReadCloser, error) {
	return c.openBlob(ctx, plainBlobs(rt, repo), d, size)
}

func (c *Client) openBlob(ctx context.Context, g blobGetter, d v1.Hash, size int64) (io.ReadCloser, error) {
	body, err := c.getBlob(ctx, g, d)
	if err != nil {
		return nil, err
	}
	vr, err := newVerifier(body, g.host, d, size)
	if err != nil {
		_ = body.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{vr, body}, nil
}

// getBlob sends the GET and checks its status.
func (c *Client) getBlob(ctx context.Context, g blobGetter, d v1.Hash) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url(d), nil)
	if err != nil {
		return nil, err
	}
	resp, err := g.hc.Do(req)
	if err != nil {
		return nil, &BlobError{Registry: g.host, Digest: d, Err: Explain(err)}
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		_ = resp.Body.Close()
		return nil, &BlobError{Registry: g.host, Digest: d, Err: Explain(err)}
	}
	return resp.Body, nil
}

// copyHashing copies vr into sink, hashing each chunk on another goroutine
// while the sink writes it: a large blob then costs the time of its hash,
// not of its hash plus its write. The chunk is only read (by both) until
// the next Read, which waits for its hash before it reuses buf.
func copyHashing(sink io.Writer, vr *verifier, buf []byte) error {
	vr.hashBehind()
	defer vr.stopHashing()
	for {
		n, err := vr.Read(buf)
		if n > 0 {
			if w, werr := sink.Write(buf[:n]); werr != nil {
				return werr
			} else if w < n {
				return io.ErrShortWrite
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// verifier passes at most size bytes through and checks size and digest
// at the end; read errors become *BlobError naming the bytes received.
type verifier struct {
	r      io.Reader
	h      hash.Hash
	host   string
	d      v1.Hash
	size   int64
	n      int64
	failed error
	done   bool // all bytes in and checked: the next Read is io.EOF
	// With hashBehind, each chunk is hashed on another goroutine: Read
	// hands it over and returns, the next Read waits for it first.
	chunks  chan []byte
	hashed  chan struct{}
	pending bool
}

// hashBehind makes v hash on its own goroutine until stopHashing. The
// caller must not change what a Read returned before its next Read (an
// io.Reader may normally expect that), which is why only copyHashing uses
// it.
func (v *verifier) hashBehind() {
	v.chunks, v.hashed = make(chan []byte), make(chan struct{})
	go func() {
		for c := range v.chunks {
			v.h.Write(c)
			v.hashed <- struct{}{}
		}
	}()
}

// waitHash waits until the last chunk handed over is hashed.
func (v *verifier) waitHash() {
	if v.pending {
		<-v.hashed
		v.pending = false
	}
}

func (v *verifier) stopHashing() {
	v.waitHash()
	close(v.chunks)
}

func (v *verifier) hash(p []byte) {
	if v.chunks == nil {
		v.h.Write(p)
		return
	}
	if len(p) > 0 {
		v.chunks <- p
		v.pending = true
	}
}

func newVerifier(r io.Reader, host string, d v1.Hash, size int64) (*verifier, error) {
	var h hash.Hash
	switch d.Algorithm {
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	default:
		return nil, &BlobError{Registry: host, Digest: d, Err: fmt.Errorf("unsupported digest algorithm %q", d.Algorithm)}
	}
	if size < 0 {
		return nil, &BlobError{Registry: host, Digest: d, Err: fmt.Errorf("negative size %d", size)}
	}
	return &verifier{r: r, h: h, host: host, d: d, size: size}, nil
}

func (v *verifier) fail(err error) error {
	v.failed = &BlobError{Registry: v.host, Digest: v.d, Received: v.n, Err: err}
	return v.failed
}

// Read hands over the blob's bytes, except those of the Read that
// completes it: that Read first checks that the body ends there and that
// the digest matches, and on a mismatch returns none of its bytes, only
// the error.
//
// Hold-back premise: a consumer commits only at its end (an upload PUT
// commits when its body reaches Content-Length; a Sink is renamed into
// place after the last Write), so withholding the last chunk of wrong
// bytes keeps every consumer from completing them. push's holdLast reads
// the last byte in a Read of its own, so a damaged upload always ends at
// least one byte short. TestOpenBlobHoldsBackWrongLastChunk and
// test.TestSyncWrongBytesNeverCompleteUpload break it with wrong bytes of
// the right size.
func (v *verifier) Read(p []byte) (int, error) {
	v.waitHash()
	if v.failed != nil {
		return 0, v.failed
	}
	if v.done {
		return 0, io.EOF
	}
	if v.n == v.size { // an empty blob
		if err := v.finish(nil); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if rest := v.size - v.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	m, err := v.r.Read(p)
	v.n += int64(m)
	v.hash(p[:m])
	switch {
	case err != nil && err != io.EOF:
		return m, v.fail(err)
	case v.n == v.size:
		if ferr := v.finish(err); ferr != nil {
			return 0, ferr // the completing bytes are held back
		}
		return m, nil
	case err == io.EOF:
		return m, v.fail(mismatch("the body ended at %d of %d bytes", v.n, v.size))
	}
	return m, nil
}

// finish checks a body whose size bytes are all in (err is the error of
// the Read that brought the last of them: nil or io.EOF): it must end
// there, and its digest must match.
func (v *verifier) finish(err error) error {
	v.waitHash()
	if err == nil {
		var one [1]byte
		m, err := io.ReadFull(v.r, one[:])
		if m > 0 {
			return v.fail(mismatch("more than the %d bytes of its descriptor", v.size))
		}
		if err != nil && err != io.EOF {
			return v.fail(err)
		}
	}
	if got := hex.EncodeToString(v.h.Sum(nil)); got != v.d.Hex {
		return v.fail(mismatch("content is %s:%s", v.d.Algorithm, got))
	}
	v.done = true
	return nil
}

// Retry runs op until it succeeds or fails for good, within the client's
// RetryPolicy: transient failures (connection resets, unexpected EOF,
// timeouts, 408/429/5xx that outlasted the transport's own retries)
// are tried again after the policy's backoff, up to Attempts tries; content
// that did not match its digest (ErrBlobMismatch), or a source body whose
// resume was refused (an expired token), is tried once more. Use it
// for a step that must restart as a whole, such as a blob upload, whose
// requests go out under SingleAttempt.
func (c *Client) Retry(ctx context.Context, what string, op func() error) error {
	mismatches := 0
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return nil
		}
		retry := Transient(err)
		if errors.Is(err, ErrBlobMismatch) || errors.Is(err, errResumeRefused) {
			mismatches++
			retry = mismatches == 1
		}
		if !retry || attempt >= c.opts.Retry.Attempts || ctx.Err() != nil {
			return err
		}
		wait := c.backoff(attempt)
		c.log.Info("retrying", "what", what, "error", err.Error(), "attempt", attempt, "wait", wait)
		if serr := c.sleep(ctx, wait); serr != nil {
			return err
		}
	}
}

// Transient reports whether err is a failure that another try may not
// meet: a connection-level fault or a retryable status. Rate limits that
// the transport refused to wait for are not transient, nor is a blob fetch
// that failed (*BlobError): it has spent its own attempts already.
func Transient(err error) bool {
	var (
		rl *RateLimitError
		be *BlobError
	)
	if err == nil || errors.As(err, &rl) || errors.As(err, &be) {
		return false
	}
	if retryableNetErr(err) || http2Lost(err) {
		return true
	}
	var fe *Error
	if errors.As(err, &fe) && retryStatus[fe.Status] {
		return true
	}
	var te *transport.Error
	return errors.As(err, &te) && retryStatus[te.StatusCode]
}

// http2Lost recognises HTTP/2's own errors for a lost connection or a reset
// stream; net/http's bundled HTTP/2 does not export their types.
func http2Lost(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	msg := err.Error()
	for _, s := range []string{"http2: client connection lost", "http2: server sent GOAWAY", "stream error: stream ID"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
