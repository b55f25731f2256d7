package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ferry-airgap/ferry/internal/ctxio"
	"github.com/ferry-airgap/ferry/internal/writeback"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
)

// writeTemp writes the bundle into new temporary files beside path (one,
// or one per volume with WithSplit). Blobs are fetched in parallel straight
// into their final place: every offset is known in advance, so nothing is
// spooled. The files' checksums are computed while the blobs arrive, by a
// reader that follows the contiguous written prefix, so no second pass is
// needed. On error the temporary files are removed, except for a
// *partialFailure, whose files the caller may rebuild from.
func writeTemp(ctx context.Context, path string, plan *Plan, created time.Time, o *writeOptions) (*tempBundle, error) {
	entries, total, err := layout(plan, created, o)
	if err != nil {
		return nil, err
	}
	tb, err := createTemp(path, total, o.split)
	if err != nil {
		return nil, err
	}
	if o.partial != nil {
		tb.keep = true
		o.partial(tb.names)
	}
	tb.offsets = make(map[v1.Hash]int64, len(plan.Blobs))
	for _, e := range entries {
		if e.name == SigFile {
			tb.sig = e.data
		}
		if e.blob != nil {
			tb.offsets[e.blob.Digest] = e.dataOffset()
		}
	}
	fail := func(err error) (*tempBundle, error) {
		tb.remove()
		return nil, err
	}
	dst := tb.vs

	streamed, streamTotal, err := writeHeadersAndData(dst, entries)
	if err != nil {
		return fail(err)
	}
	o.progress.Event(Event{Kind: EventPlanned, Total: streamTotal})

	fh := &frontierHasher{r: dst, vs: dst, total: total, part: dst.part, streamed: streamed, notify: make(chan struct{}, 1), abort: make(chan struct{})}
	hashed := make(chan error, 1)
	go func() { hashed <- fh.run(ctx) }()

	failed := streamAll(ctx, dst, streamed, fh, o)
	if len(failed) > 0 || ctx.Err() != nil {
		close(fh.abort)
	}
	herr := <-hashed
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if len(failed) > 0 {
		return tb, newPartialFailure(plan, failed)
	}
	if herr != nil {
		return fail(fmt.Errorf("checksumming bundle: %w", herr))
	}
	if o.deep != nil {
		bad, err := deepCheckTemp(ctx, dst, entries, plan, o)
		if err != nil {
			return fail(err)
		}
		if len(bad) > 0 {
			return tb, newPartialFailure(plan, bad)
		}
	}
	if err := dst.sync(); err != nil {
		return fail(fmt.Errorf("syncing bundle: %w", err))
	}
	if err := dst.close(); err != nil {
		return fail(fmt.Errorf("closing bundle: %w", err))
	}
	tb.vs = nil
	tb.sums = fh.sums
	return tb, nil
}

// writeHeadersAndData writes every entry's tar header, and the content of
// the entries held in memory (manifests, configs, metadata), each blob
// checked against its digest first. It returns the entries whose content
// is streamed afterwards and their total size.
func writeHeadersAndData(dst *volumeSet, entries []*entry) (streamed []*entry, total int64, err error) {
	for _, e := range entries {
		if _, err := dst.WriteAt(e.header, e.offset); err != nil {
			return nil, 0, fmt.Errorf("writing bundle: %w", err)
		}
		if e.data == nil {
			streamed = append(streamed, e)
			total += e.size
			continue
		}
		if e.blob != nil {
			if got := sha256Hex(e.data); got != e.blob.Digest.Hex {
				return nil, 0, fmt.Errorf("blob %s from %s: content has digest sha256:%s: %w", e.blob.Digest, e.blob.Origin, got, ErrDigestMismatch)
			}
		}
		if _, err := dst.WriteAt(e.data, e.dataOffset()); err != nil {
			return nil, 0, fmt.Errorf("writing bundle: %w", err)
		}
	}
	return streamed, total, nil
}

// frontierHasher computes the SHA-256 of each bundle file while blobs are
// still arriving: it reads (from the page cache, just written) up to the
// end of the contiguous prefix that is final.
type frontierHasher struct {
	r        io.ReaderAt
	vs       *volumeSet // the files, told to write out what is in place
	total    int64
	part     int64    // volume size: a new sum starts at each multiple
	streamed []*entry // in file order
	notify   chan struct{}
	abort    chan struct{}
	sums     []string

	mu       sync.Mutex
	rewindAt int64 // valid when rewound: the earliest offset restarted
	rewound  bool
}

// rewind makes the hasher forget what it hashed from off on: a streamed
// entry starting there is being written again. The volume that holds off
// is hashed again from its start (rare: only a source that sent wrong bytes
// restarts a blob).
func (fh *frontierHasher) rewind(off int64) {
	fh.mu.Lock()
	if !fh.rewound || off < fh.rewindAt {
		fh.rewindAt, fh.rewound = off, true
	}
	fh.mu.Unlock()
	fh.poke()
}

func (fh *frontierHasher) takeRewind() (int64, bool) {
	fh.mu.Lock()
	defer fh.mu.Unlock()
	at, ok := fh.rewindAt, fh.rewound
	fh.rewound = false
	return at, ok
}

func (fh *frontierHasher) poke() {
	select {
	case fh.notify <- struct{}{}:
	default:
	}
}

func (fh *frontierHasher) run(ctx context.Context) error {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var pos int64
	next := 0
	for pos < fh.total {
		if at, ok := fh.takeRewind(); ok && at < pos {
			vol := at / fh.part
			pos, fh.sums, next = vol*fh.part, fh.sums[:vol], 0
			h = sha256.New()
		}
		for next < len(fh.streamed) && fh.streamed[next].done.Load() {
			next++
		}
		frontier := fh.total
		if next < len(fh.streamed) {
			e := fh.streamed[next]
			frontier = e.dataOffset() + e.written.Load()
		}
		if frontier <= pos {
			select {
			case <-fh.notify:
			case <-fh.abort:
				return errors.New("aborted")
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		// Never hash across a volume boundary in one read.
		partEnd := (pos/fh.part + 1) * fh.part
		n := min(frontier, partEnd) - pos
		n = min(n, int64(len(buf)))
		m, err := fh.r.ReadAt(buf[:n], pos)
		h.Write(buf[:m])
		pos += int64(m)
		if err != nil && !(err == io.EOF && pos == fh.total) {
			return err
		}
		if pos == partEnd || pos == fh.total {
			fh.sums = append(fh.sums, hex.EncodeToString(h.Sum(nil)))
			h = sha256.New()
		}
	}
	return nil
}

// streamAll fetches every streamed entry under the jobs limit. Without
// keep-going the first failure cancels the rest.
func streamAll(ctx context.Context, f io.WriterAt, streamed []*entry, fh *frontierHasher, o *writeOptions) map[v1.Hash]error {
	var mu sync.Mutex
	failed := map[v1.Hash]error{}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(gctx)
	g.SetLimit(o.jobs)
	for _, e := range streamed {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			bp := copyBufs.Get().(*[]byte)
			defer copyBufs.Put(bp)
			err := streamBlob(gctx, f, e, *bp, fh, o.progress)
			if err == nil {
				e.done.Store(true)
				fh.poke()
				o.progress.Event(Event{Kind: EventBlobDone, Digest: e.blob.Digest})
				return nil
			}
			if gctx.Err() != nil && ctx.Err() == nil && !o.keepGoing {
				return nil // cancelled because another blob failed
			}
			o.progress.Event(Event{Kind: EventBlobFailed, Digest: e.blob.Digest, Err: err})
			mu.Lock()
			failed[e.blob.Digest] = err
			mu.Unlock()
			if !o.keepGoing {
				cancel()
			}
			return nil
		})
	}
	_ = g.Wait()
	return failed
}

type progressWriter struct {
	w    io.Writer
	h    v1.Hash
	p    Progress
	n    int64
	last int64
}

func (pw *progressWriter) Write(b []byte) (int, error) {
	n, err := pw.w.Write(b)
	pw.n += int64(n)
	if pw.n-pw.last >= 256<<10 {
		pw.p.Event(Event{Kind: EventBytes, Digest: pw.h, Bytes: pw.n - pw.last})
		pw.last = pw.n
	}
	return n, err
}

func (pw *progressWriter) flush() {
	if pw.n > pw.last {
		pw.p.Event(Event{Kind: EventBytes, Digest: pw.h, Bytes: pw.n - pw.last})
		pw.last = pw.n
	}
}

// streamBlob copies one blob into its place, checking size and digest as
// the bytes pass.
func streamBlob(ctx context.Context, f io.WriterAt, e *entry, buf []byte, fh *frontierHasher, p Progress) (err error) {
	b := e.blob
	if b.Fetch != nil {
		return fetchBlob(ctx, f, e, fh, p)
	}
	rc, err := b.Open(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := rc.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("blob %s from %s: %w", b.Digest, b.Origin, cerr)
		}
	}()
	h := sha256.New()
	placed := &placeWriter{w: io.NewOffsetWriter(f, e.dataOffset()), e: e, fh: fh}
	pw := &progressWriter{w: io.MultiWriter(placed, h), h: b.Digest, p: p}
	n, err := io.CopyBuffer(pw, io.LimitReader(ctxio.Reader(ctx, rc), b.Size), buf)
	pw.flush()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("blob %s from %s: after %d of %d bytes: %w", b.Digest, b.Origin, n, b.Size, err)
	}
	if n < b.Size {
		return fmt.Errorf("blob %s from %s: %w: got %d of %d bytes", b.Digest, b.Origin, ErrShortBlob, n, b.Size)
	}
	var one [1]byte
	if m, _ := io.ReadFull(rc, one[:]); m > 0 {
		return fmt.Errorf("blob %s from %s: %w: more than the %d bytes its descriptor gives", b.Digest, b.Origin, ErrDigestMismatch, b.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.Digest.Hex {
		return fmt.Errorf("blob %s from %s: %w: content is sha256:%s", b.Digest, b.Origin, ErrDigestMismatch, got)
	}
	if c, ok := rc.(Committer); ok {
		if err := c.Commit(); err != nil {
			return fmt.Errorf("blob %s: %w", b.Digest, err)
		}
	}
	return nil
}

// placeWriter writes a blob into its place and tells the hasher how far
// the bytes in place reach.
type placeWriter struct {
	w  io.Writer
	e  *entry
	fh *frontierHasher
}

func (pw *placeWriter) Write(b []byte) (int, error) {
	n, err := pw.w.Write(b)
	pw.fh.placed(pw.e, int64(n))
	return n, err
}

// placed records that n more bytes of e are in place: the checksum may
// follow them, and every writeback.Chunk bytes the kernel starts writing
// them out (sync_file_range), so that the disk works while the blobs
// arrive and the final fsync finds little left to write. Without it a
// large bundle sits in the page cache until that fsync and the export
// takes the download's time plus the whole flush.
func (fh *frontierHasher) placed(e *entry, n int64) {
	w := e.written.Add(n)
	fh.poke()
	if f := e.flushed.Load(); w-f >= writeback.Chunk && fh.vs != nil {
		fh.vs.writeback(e.dataOffset()+f, w-f)
		e.flushed.Store(w)
	}
}

// Errors for content that does not match its descriptor.
var (
	ErrDigestMismatch = errors.New("digest mismatch")
	ErrShortBlob      = errors.New("blob shorter than its descriptor")
)
