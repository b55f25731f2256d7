package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/ctxio"
	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/mapping"
)

// memSink is a restartable in-memory bundle.Sink for small blobs.
type memSink struct{ bytes.Buffer }

func (m *memSink) Reset() error { m.Buffer.Reset(); return nil }

// fetcher writes a blob into w from what the cache knows (a bundle written
// before, an unfinished one, an entry), or else from the image's
// repository through the registry client, which resumes a cut body and
// fetches the blob once more from scratch (w.Reset) when its bytes do not
// match. Either way size and digest are verified (the bundle's Verified).
// Layers are written once, into the bundle, which the cache then records;
// small blobs (keep: configs) are also kept as cache entries, once
// verified.
func fetcher(o *runner, im *mapping.Image, d v1.Descriptor, keep bool) bundle.Fetcher {
	return func(ctx context.Context, w bundle.Sink) error {
		for _, src := range o.cache.sources(d.Digest, d.Size) {
			if src.trusted && src.size != d.Size {
				return recordedSizeMismatch(src, d)
			}
			if copyFromCache(ctx, w, src, d, o.Logger) {
				o.fromCache.Add(d.Size)
				return nil
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if src.forget != nil {
				src.forget() // damaged on disk
			}
			if err := w.Reset(); err != nil {
				return err
			}
		}
		r, err := o.src.Repo(ctx, im.Repository, o.tasks[im.Task])
		if err != nil {
			return err
		}
		var sink bundle.Sink = w
		var cs *cacheSink
		if keep {
			cs = o.cache.sink(d.Digest, w)
			defer cs.discard()
			sink = cs
		}
		if err := r.FetchBlob(ctx, d.Digest, d.Size, &countingSink{Sink: sink, n: &o.downloaded}); err != nil {
			return err
		}
		if cs != nil {
			cs.commit()
		}
		return nil
	}
}

// recordedSizeMismatch is the error for a descriptor whose size is not
// the size of the blob it names. A recorded source's size is the blob's
// true size: ferry verified those bytes against the digest when it wrote
// the bundle, and content of one digest has one size. No registry can
// serve such a descriptor either (FetchBlob refuses a body of another
// size), so the blob fails here as it would there, with the same
// ErrBlobMismatch, and nothing is copied.
func recordedSizeMismatch(src blobSource, d v1.Descriptor) error {
	return fmt.Errorf("blob %s: %w: its descriptor says %d bytes, the blob is %d bytes (as verified in %s)",
		d.Digest, registry.ErrBlobMismatch, d.Size, src.size, src.where())
}

// copyFromCache copies blob d from src into w and reports whether it did.
// A source recorded as verified is copied as it is, part by part, in the
// kernel when w takes files (bundle.FileSink), each part only while its
// file has the identity recorded with it; any other source (one file) is
// hashed first and used only if its bytes have d's digest. After false the
// caller resets w.
//
// Premise of the unhashed copy: a recorded file's bytes are those ferry
// verified when it recorded it (recordBundle), as long as its device,
// inode, size, modification and change time are the recorded ones; any
// write, truncation, rename over it or replacement changes them. The size
// is not taken from the descriptor on trust: src.size, the size verified
// with the digest, must equal it.
func copyFromCache(ctx context.Context, w bundle.Sink, src blobSource, d v1.Descriptor, log *slog.Logger) bool {
	if src.size != d.Size {
		return false // not this blob as d describes it: hashing would fail
	}
	if src.trusted {
		for _, p := range src.parts {
			if !copyPart(ctx, w, p, true, d, log) {
				return false
			}
		}
		return true
	}
	return len(src.parts) == 1 && copyPart(ctx, w, src.parts[0], false, d, log)
}

// copyPart appends part p of blob d to w: after checking that its file is
// unchanged (trusted), or that its bytes have d's digest.
func copyPart(ctx context.Context, w bundle.Sink, p sourcePart, trusted bool, d v1.Descriptor, log *slog.Logger) bool {
	f, err := os.Open(p.path)
	if err != nil {
		return false
	}
	defer f.Close()
	if trusted {
		info, err := f.Stat()
		if st, ok := stampOf(info); err != nil || !ok || st != p.stamp {
			return false // changed since it was recorded
		}
	} else if !sameDigest(ctx, io.NewSectionReader(f, p.off, p.n), d.Digest) {
		log.Debug("cached bytes do not match their digest; not used", "blob", d.Digest, "file", p.path)
		return false
	}
	if fs, ok := w.(bundle.FileSink); ok {
		if err := fs.CopyFrom(ctx, f, p.off, p.n); err != nil {
			log.Debug("copying from the cache failed", "blob", d.Digest, "file", p.path, "err", err)
			return false
		}
		return true
	}
	_, err = io.Copy(w, io.NewSectionReader(f, p.off, p.n))
	return err == nil
}

// sameDigest reads r to its end and reports whether its SHA-256 is h.
func sameDigest(ctx context.Context, r io.Reader, h v1.Hash) bool {
	sum := sha256.New()
	if _, err := io.CopyBuffer(sum, ctxio.Reader(ctx, r), make([]byte, 1<<20)); err != nil {
		return false
	}
	return hex.EncodeToString(sum.Sum(nil)) == h.Hex
}

// countingSink counts bytes received from a registry.
type countingSink struct {
	bundle.Sink
	n *atomic.Int64
}

func (c *countingSink) Write(p []byte) (int, error) {
	n, err := c.Sink.Write(p)
	c.n.Add(int64(n))
	return n, err
}
