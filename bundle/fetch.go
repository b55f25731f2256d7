package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
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
	s.e.written.Add(int64(m))
	s.fh.poke()
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
	s.fh.rewind(s.e.dataOffset())
	s.n = 0
	if s.h != nil {
		s.h.Reset()
	}
	return nil
}
