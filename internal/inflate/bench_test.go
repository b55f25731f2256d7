package inflate

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// BenchmarkGunzip compares Gunzip with klauspost/compress's gzip reader,
// both writing into SHA-256 as the deep check does, on the gzip file named
// by FERRY_INFLATE_FILE (else the test corpus's text, compressed by
// klauspost at its default level).
func BenchmarkGunzip(b *testing.B) {
	data := kgzipBytes(corpus()["text"])
	if f := os.Getenv("FERRY_INFLATE_FILE"); f != "" {
		var err error
		if data, err = os.ReadFile(f); err != nil {
			b.Fatal(err)
		}
	}
	size, err := Gunzip(io.Discard, bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("ferry", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if _, err := Gunzip(sha256.New(), bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("klauspost", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			zr, err := kgzip.NewReader(bytes.NewReader(data))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := zr.WriteTo(sha256.New()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func kgzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := kgzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}
