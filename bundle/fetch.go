package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
)

// fetchBlob has b.Fetch write one blob into its place through a
// restartable sink, then checks size and digest of what is in place.
func fetchBlob(ctx context.Context, f io.WriterAt, e *entry, fh *frontierHasher, p Progress) error {
	b := e.blob
	s := &placeSink{w: f, e: e, fh: fh}
	if !b.Verified {
		s.h = sha256.New()
	}
	s.pw = &progressWriter{w: io.Discard, h: b.Digest, p: p}
	err := b.Fetch(ctx, s)
	s.pw.flush()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	if s.n < b.Size {
		return fmt.Errorf("blob %s from %s: %w: got %d of %d bytes", b.Digest, b.Origin, ErrShortBlob, s.n, b.Size)
	}
	if s.h == nil {
		return nil // the fetcher verified the digest
	}
	if got := hex.EncodeToString(s.h.Sum(nil)); got != b.Digest.Hex {
		return fmt.Errorf("blob %s from %s: %w: content is sha256:%s", b.Digest, b.Origin, ErrDigestMismatch, got)
	}
	return nil
}

// placeSink writes a blob at its place in the bundle, hashing it; Reset
// starts it again and makes the bundle's checksum forget the old bytes.
type placeSink struct {
	w  io.WriterAt
	e  *entry
	fh *frontierHasher
	h  hash.Hash // nil when the fetcher verifies
	pw *progressWriter
	n  int64
}

func (s *placeSink) Write(p []byte) (int, error) {
	b := s.e.blob
	if s.n+int64(len(p)) > b.Size {
		return 0, fmt.Errorf("blob %s from %s: %w: more than the %d bytes its descriptor gives", b.Digest, b.Origin, ErrDigestMismatch, b.Size)
	}
	m, err := s.w.WriteAt(p, s.e.dataOffset()+s.n)
	s.n += int64(m)
	if s.h != nil {
		s.h.Write(p[:m])
	}
	s.fh.placed(s.e, int64(m))
	_, _ = s.pw.Write(p[:m])
	if err != nil {
		return m, fmt.Errorf("writing bundle: %w", err)
	}
	return m, nil
}

func (s *placeSink) Reset() error {
	s.pw.flush()
	if s.pw.n > 0 {
		s.pw.p.Event(Event{Kind: EventBytes, Digest: s.pw.h, Bytes: -s.pw.n})
	}
	s.pw.n, s.pw.last = 0, 0
	s.e.written.Store(0)
	s.e.flushed.Store(0)
	s.fh.rewind(s.e.dataOffset())
	s.n = 0
	if s.h != nil {
		s.h.Reset()
	}
	return nil
}

// FileSink is a Sink that can also take a blob's bytes straight from a
// file: the writer's sink implements it, so that a source holding the
// bytes in a file (a cache, an earlier bundle) has them copied in the
// kernel (copy_file_range: no pass through user space, and a reflink
// where the filesystem shares extents) instead of through Write.
type FileSink interface {
	Sink
	// CopyFrom appends n bytes of src, read from offset off, to the blob.
	CopyFrom(ctx context.Context, src *os.File, off, n int64) error
}

// copyChunk bounds one copy_file_range call, so that the bundle's checksum
// follows the copy and a cancelled context stops it soon.
const copyChunk = 8 << 20

// CopyFrom implements FileSink.
func (s *placeSink) CopyFrom(ctx context.Context, src *os.File, off, n int64) error {
	b := s.e.blob
	if n < 0 || s.n+n > b.Size {
		return fmt.Errorf("blob %s from %s: %w: more than the %d bytes its descriptor gives", b.Digest, b.Origin, ErrDigestMismatch, b.Size)
	}
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := copyRange(s.w, src, off, s.e.dataOffset()+s.n, min(n, copyChunk), s.h)
		s.n += m
		off += m
		n -= m
		s.fh.placed(s.e, m)
		s.pw.n += m
		if s.pw.n-s.pw.last >= 256<<10 {
			s.pw.flush()
		}
		if err != nil {
			return fmt.Errorf("blob %s from %s: copying into the bundle: %w", b.Digest, b.Origin, err)
		}
	}
	return nil
}

// copyRange copies n bytes of src at off to dst at dstOff: in the kernel
// when dst is the bundle's own file(s) and nothing must hash the bytes on
// the way (h is nil), else through a buffer. It returns what it copied.
func copyRange(dst io.WriterAt, src *os.File, off, dstOff, n int64, h hash.Hash) (int64, error) {
	if vs, ok := dst.(*volumeSet); ok && h == nil {
		if done, err := kernelCopy(vs, src, off, dstOff, n); done == n || err != nil {
			return done, err
		} else if done > 0 {
			return done, nil // the caller comes back for the rest
		}
	}
	buf := make([]byte, min(n, 1<<20))
	var done int64
	for done < n {
		m, err := src.ReadAt(buf[:min(int64(len(buf)), n-done)], off+done)
		if m > 0 {
			if h != nil {
				h.Write(buf[:m])
			}
			if _, werr := dst.WriteAt(buf[:m], dstOff+done); werr != nil {
				return done, werr
			}
			done += int64(m)
		}
		if err != nil {
			if err == io.EOF && done < n {
				return done, fmt.Errorf("%w: the source file ends after %d of %d bytes", ErrShortBlob, done, n)
			}
			if err != io.EOF {
				return done, err
			}
		}
	}
	return done, nil
}
