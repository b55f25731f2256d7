package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// CopyVerified copies r, which must yield exactly size bytes hashing to
// want, into w, and returns how many bytes w took. Each chunk is hashed on
// another goroutine while w writes it, from the same buffer, so what w got
// is what was hashed; on one core more, a copy costs the longer of the
// write and the hash instead of their sum. The errors are Verifier's: a
// source longer or shorter than size, or with another digest, is
// ErrCorrupt. w has then taken bytes that do not check out, so the caller
// must throw away what it wrote, as after a Verifier's error.
func CopyVerified(w io.Writer, r io.Reader, want v1.Hash, size int64) (int64, error) {
	// Two buffers: the hasher holds the one not being read into, so the
	// next Read never overwrites bytes it has yet to hash. (They go back
	// to the pool only after the hasher is done: deferred first, run last.)
	bufs := [2]*[]byte{copyBufs.Get().(*[]byte), copyBufs.Get().(*[]byte)}
	defer copyBufs.Put(bufs[0])
	defer copyBufs.Put(bufs[1])
	h := sha256.New()
	chunks := make(chan []byte)
	hashed := make(chan struct{})
	go func() {
		for c := range chunks {
			h.Write(c)
			hashed <- struct{}{}
		}
	}()
	pending := false
	wait := func() {
		if pending {
			<-hashed
			pending = false
		}
	}
	defer func() {
		wait()
		close(chunks)
	}()

	cur := 0
	var n int64
	for {
		buf := *bufs[cur]
		m, err := r.Read(buf)
		if m > 0 {
			if n+int64(m) > size {
				return n, fmt.Errorf("%w: blob %s: more than its %d bytes", ErrCorrupt, want, size)
			}
			wait()
			chunks <- buf[:m]
			pending = true
			k, werr := w.Write(buf[:m])
			n += int64(k)
			if werr != nil {
				return n, werr
			}
			if k < m {
				return n, io.ErrShortWrite
			}
			cur = 1 - cur
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, err
		}
	}
	wait()
	if n != size {
		return n, fmt.Errorf("%w: blob %s: %w: %d of %d bytes", ErrCorrupt, want, ErrShortBlob, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.Hex {
		return n, fmt.Errorf("%w: blob %s: %w: content is sha256:%s", ErrCorrupt, want, ErrDigestMismatch, got)
	}
	return n, nil
}
