package writeback

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Writer hands every byte to the file, in order, whatever the sizes of the
// writes and however many writebacks it starts on the way.
func TestWriter(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := &Writer{F: f}
	var want bytes.Buffer
	for i, size := range []int{1, Chunk - 1, 3, Chunk, 2*Chunk + 5, 0, 17} {
		p := bytes.Repeat([]byte{byte('a' + i)}, size)
		if n, err := w.Write(p); n != size || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", size, n, err)
		}
		want.Write(p)
	}
	if w.n != int64(want.Len()) || w.started > w.n || w.n-w.started >= Chunk {
		t.Errorf("written %d, writeback started for %d", w.n, w.started)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("file holds %d bytes that differ from the %d written", len(got), want.Len())
	}
	// A write error comes back as it is.
	_ = f.Close()
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write to a closed file succeeded")
	}
}
