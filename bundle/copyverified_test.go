package bundle

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// CopyVerified hands on exactly the source's bytes, across chunk and
// buffer boundaries and whatever sizes Read returns, and checks size and
// digest like a Verifier.
func TestCopyVerified(t *testing.T) {
	digestOf := func(b []byte) v1.Hash {
		h, _, _ := v1.SHA256(bytes.NewReader(b))
		return h
	}
	data := make([]byte, 3<<20+12345) // more than two 1 MiB buffers, not a multiple
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	want := digestOf(data)
	other := digestOf([]byte("other"))
	readers := map[string]func([]byte) io.Reader{
		"plain":    func(b []byte) io.Reader { return bytes.NewReader(b) },
		"one byte": func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b[:4096])) },
		"half":     func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) },
		"data+EOF": func(b []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(b)) },
		"zero reads": func(b []byte) io.Reader {
			return &zeroReads{r: bytes.NewReader(b)}
		},
	}
	for name, mk := range readers {
		src := data
		if name == "one byte" {
			src = data[:4096]
		}
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			n, err := CopyVerified(&out, mk(data), digestOf(src), int64(len(src)))
			if err != nil || n != int64(len(src)) || !bytes.Equal(out.Bytes(), src) {
				t.Fatalf("n=%d err=%v, same bytes %t", n, err, bytes.Equal(out.Bytes(), src))
			}
		})
	}

	cases := []struct {
		name string
		src  []byte
		want v1.Hash
		size int64
		is   error
	}{
		{"other digest", data, other, int64(len(data)), ErrDigestMismatch},
		{"short", data[:len(data)-1], want, int64(len(data)), ErrShortBlob},
		{"long", append(append([]byte{}, data...), 'x'), want, int64(len(data)), ErrCorrupt},
		{"empty, wrong digest", nil, want, 0, ErrDigestMismatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := CopyVerified(io.Discard, bytes.NewReader(c.src), c.want, c.size)
			if !errors.Is(err, c.is) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want %v (and ErrCorrupt)", err, c.is)
			}
		})
	}
	if _, err := CopyVerified(io.Discard, bytes.NewReader(nil), digestOf(nil), 0); err != nil {
		t.Errorf("empty blob: %v", err)
	}

	// The writer's and the reader's own errors come back as they are.
	boom := errors.New("boom")
	if _, err := CopyVerified(failWriter{boom}, bytes.NewReader(data), want, int64(len(data))); !errors.Is(err, boom) {
		t.Errorf("writer error: %v", err)
	}
	if _, err := CopyVerified(shortWriter{}, bytes.NewReader(data), want, int64(len(data))); !errors.Is(err, io.ErrShortWrite) {
		t.Errorf("short write: %v", err)
	}
	if _, err := CopyVerified(io.Discard, iotest.TimeoutReader(bytes.NewReader(data)), want, int64(len(data))); !errors.Is(err, iotest.ErrTimeout) {
		t.Errorf("reader error: %v", err)
	}
}

type zeroReads struct {
	r io.Reader
	n int
}

// Read returns (0, nil) every other call, as io.Reader allows.
func (z *zeroReads) Read(p []byte) (int, error) {
	z.n++
	if z.n%2 == 0 {
		return 0, nil
	}
	if len(p) > 100_000 {
		p = p[:100_000]
	}
	return z.r.Read(p)
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }
