// Package writeback starts the kernel's writeback of files while they are
// being written, so that the fsync that ends a large write has little left
// to do: the disk works while the bytes arrive instead of after them.
// Outside Linux it does nothing and the fsync writes everything.
package writeback

import "os"

// Chunk is how many bytes Writer lets pile up in the page cache before it
// starts their writeback.
const Chunk = 8 << 20

// Writer writes to F, a file written sequentially from offset 0, and every
// Chunk bytes asks the kernel to start writing them out, without waiting.
// The caller still fsyncs F at the end; errors of the writeback are left
// to that fsync.
type Writer struct {
	F       *os.File
	n       int64 // bytes written
	started int64 // of those, how many the kernel was told to write out
}

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.F.Write(p)
	w.n += int64(n)
	if w.n-w.started >= Chunk {
		Start(w.F, w.started, w.n-w.started)
		w.started = w.n
	}
	return n, err
}
