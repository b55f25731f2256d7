package bundle

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-airgap/ferry/internal/writeback"
)

// The kernel is told to write a blob out every writeback.Chunk bytes, from
// where the last request ended, across volume boundaries; a restarted
// blob starts counting again.
func TestPlacedWritesBackInChunks(t *testing.T) {
	dir := t.TempDir()
	const part, total = 5 << 20, 20 << 20
	vs := &volumeSet{part: part, total: total}
	for i := range 4 {
		f, err := os.Create(filepath.Join(dir, VolumeName("b.tar", i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if err := f.Truncate(part); err != nil {
			t.Fatal(err)
		}
		vs.files = append(vs.files, f)
	}
	e := &entry{offset: 0, header: make([]byte, 512), size: total - 1024}
	fh := &frontierHasher{r: vs, vs: vs, total: total, part: part, notify: make(chan struct{}, 1)}
	for n := int64(0); n < e.size; {
		step := min(int64(1<<20), e.size-n)
		fh.placed(e, step)
		n += step
		if got, want := e.flushed.Load(), n/writeback.Chunk*writeback.Chunk; got != want {
			t.Fatalf("after %d bytes, %d handed to writeback; want %d", n, got, want)
		}
	}
	s := &placeSink{w: vs, e: e, fh: fh, pw: &progressWriter{p: ProgressFunc(func(Event) {})}}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if e.flushed.Load() != 0 || e.written.Load() != 0 {
		t.Fatalf("after a restart: written %d, flushed %d; want 0, 0", e.written.Load(), e.flushed.Load())
	}
}
