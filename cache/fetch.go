package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// download is one upstream GET of a blob, shared by every request for
// that digest from the same upstream while it runs. It writes to a
// temporary file; readers follow the file as it grows, and the blob enters
// the store only once its digest and size are checked.
type download struct {
	d       v1.Hash
	repo    string        // the repository it was asked from
	started chan struct{} // closed once size (or err) is known

	mu       sync.Mutex
	size     int64 // -1: unknown
	tmp      string
	written  int64         // readable bytes
	progress chan struct{} // closed and replaced whenever written grows or the download ends
	done     bool          // stored: read from the store's path
	err      error
}

// Errors of downloads the cache ends itself.
var (
	errClosing = fmt.Errorf("%w: the cache is shutting down", ErrUnreachable)
	errStalled = fmt.Errorf("%w: no data", ErrUnreachable)
)

// flightKey names a shared download. Shortcut: a request joins a running
// download instead of asking its upstream. Premise: the bytes of a digest
// are the same from every repository of one upstream (they are checked
// against the digest before any client gets the last byte), so only
// whether the upstream answers can differ, never what it sends. Across
// upstreams even that premise is not enough: one upstream's 404, 502 or
// stall says nothing about another's, so downloads are keyed by upstream
// too, and a download that failed for another repository of the same
// upstream is retried once for the client's own (serveBlob).
// Tests: TestDownloadsKeyedByUpstream*, TestFailedDownloadOfAnotherRepoIsRetried.
type flightKey struct {
	upstream string
	d        v1.Hash
}

// flight returns the download of d from upstream upName, starting it from
// up/repo unless one is already running there and has not failed.
func (c *Cache) flight(upName string, up Upstream, repo string, d v1.Hash) *download {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	k := flightKey{upName, d}
	if dl, ok := c.flights[k]; ok && !dl.failed() {
		return dl
	}
	dl := &download{d: d, repo: repo, started: make(chan struct{}), size: -1, progress: make(chan struct{})}
	if c.closed {
		dl.start(-1, "", fmt.Errorf("fetching blob %s: %w", d, errClosing))
		return dl
	}
	c.flights[k] = dl
	c.wg.Add(1)
	release := c.store.acquire(d)
	go func() {
		defer c.wg.Done()
		defer release()
		err := c.fetch(up, repo, dl)
		c.fmu.Lock()
		if c.flights[k] == dl {
			delete(c.flights, k)
		}
		c.fmu.Unlock()
		dl.finish(err)
		if err != nil {
			c.metrics.add(&c.metrics.upstreamErrors, 1)
			c.log.Warn("blob download failed", "upstream", upName, "digest", d, "repo", repo, "err", err)
		}
	}()
	return dl
}

// failed reports whether the download has already failed.
func (dl *download) failed() bool {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.err != nil
}

// fetch runs the download under the cache's context, so that no client
// that leaves can stop it; Close stops it.
func (c *Cache) fetch(up Upstream, repo string, dl *download) error {
	// An upstream that stops sending must not hold every waiting client
	// forever: no byte for StallTimeout ends the download.
	ctx, cancel := context.WithCancelCause(c.ctx)
	defer cancel(nil)
	stall := fmt.Errorf("%w for %s", errStalled, c.o.StallTimeout)
	watchdog := time.AfterFunc(c.o.StallTimeout, func() { cancel(stall) })
	defer watchdog.Stop()
	body, size, err := up.Blob(ctx, repo, dl.d, false)
	if err != nil {
		if context.Cause(ctx) == stall {
			err = stall
		}
		dl.start(-1, "", err)
		return err
	}
	defer func() { _ = body.Close() }()
	body = &stallReader{r: body, reset: func() { watchdog.Reset(c.o.StallTimeout) }, ctx: ctx}
	f, err := c.store.tempFile()
	if err != nil {
		dl.start(-1, "", err)
		return err
	}
	dl.start(size, f.Name(), nil)
	h := sha256.New()
	n, err := copyProgress(io.MultiWriter(f, h), body, dl, &c.metrics.bytesUpstream, c.metrics)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err == nil {
		err = verify(dl.d, h, n, size)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("fetching blob %s of %s: %w", dl.d, repo, err)
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if err := c.store.putBlob(f.Name(), dl.d, n); err != nil {
		return err
	}
	dl.written = n
	dl.done = true // readers opening from now on use the store's path
	return nil
}

// stallReader restarts the watchdog on every read that returns bytes,
// and reports the stall (not a bare "context canceled") when it fires.
type stallReader struct {
	r     io.ReadCloser
	reset func()
	ctx   context.Context
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.reset()
	}
	if err != nil && err != io.EOF && context.Cause(s.ctx) != nil {
		err = context.Cause(s.ctx)
	}
	return n, err
}

func (s *stallReader) Close() error { return s.r.Close() }

func verify(d v1.Hash, h hash.Hash, n, size int64) error {
	if size >= 0 && n != size {
		return fmt.Errorf("%w: got %d bytes, upstream announced %d", ErrDigestMismatch, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
		return fmt.Errorf("%w: upstream sent sha256:%s", ErrDigestMismatch, got)
	}
	return nil
}

func copyProgress(w io.Writer, r io.Reader, dl *download, counter *int64, m *Metrics) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			if _, err := w.Write(buf[:k]); err != nil {
				return n, err
			}
			n += int64(k)
			m.add(counter, int64(k))
			dl.advance(n)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("%w: %v", ErrUnreachable, rerr)
		}
	}
}

func (dl *download) start(size int64, tmp string, err error) {
	dl.mu.Lock()
	dl.size, dl.tmp, dl.err = size, tmp, err
	dl.mu.Unlock()
	close(dl.started)
}

// advance makes all but the last byte of n readable: the last one waits
// for the digest check, so that no client holds the whole blob before it
// is verified.
func (dl *download) advance(n int64) {
	dl.mu.Lock()
	dl.written = n - 1
	close(dl.progress)
	dl.progress = make(chan struct{})
	dl.mu.Unlock()
}

func (dl *download) finish(err error) {
	dl.mu.Lock()
	if err != nil && dl.err == nil {
		dl.err = err
	}
	dl.done = dl.done && err == nil
	close(dl.progress)
	dl.progress = make(chan struct{})
	dl.mu.Unlock()
}

// wait returns the blob's size (-1: unknown) once the upstream answered.
func (dl *download) wait(ctx context.Context) (int64, error) {
	select {
	case <-dl.started:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.size, dl.err
}

// open returns a reader that follows the download to its end: it blocks
// for bytes not yet written and fails if the download fails (so a bad
// blob is never served whole). Call after wait succeeded.
func (dl *download) open(ctx context.Context, openStored func() (blobReader, error)) (io.ReadCloser, error) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.err != nil {
		return nil, dl.err
	}
	var f readerAtCloser
	var err error
	if dl.done {
		f, err = openStored()
	} else {
		f, err = os.Open(dl.tmp)
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && dl.err != nil {
			return nil, dl.err
		}
		return nil, fmt.Errorf("reading blob %s: %w", dl.d, err)
	}
	return &follower{ctx: ctx, dl: dl, f: f}, nil
}

type readerAtCloser interface {
	io.ReaderAt
	io.Closer
}

type follower struct {
	ctx context.Context
	dl  *download
	f   readerAtCloser
	off int64
}

func (r *follower) Read(p []byte) (int, error) {
	for {
		r.dl.mu.Lock()
		avail, done, err, ch := r.dl.written-r.off, r.dl.done, r.dl.err, r.dl.progress
		r.dl.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if avail > 0 {
			if int64(len(p)) > avail {
				p = p[:avail]
			}
			n, err := r.f.ReadAt(p, r.off)
			r.off += int64(n)
			if err == io.EOF && n > 0 {
				err = nil
			}
			return n, err
		}
		if done {
			return 0, io.EOF
		}
		select {
		case <-ch:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *follower) Close() error { return r.f.Close() }
