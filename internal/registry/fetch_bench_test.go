package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

type discardSink struct{}

func (discardSink) Write(p []byte) (int, error) { return len(p), nil }
func (discardSink) Reset() error                { return nil }

// BenchmarkFetchBlob measures what FetchBlob (resume wrapper, verifier)
// costs over a plain GET whose body is hashed once, as the bundle writer
// did before.
func BenchmarkFetchBlob(b *testing.B) {
	blob := make([]byte, 64<<20)
	for i := range blob {
		blob[i] = byte(i * 31)
	}
	sum := sha256.Sum256(blob)
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		_, _ = w.Write(blob)
	}))
	defer srv.Close()
	c, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/x", name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("plain", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		buf := make([]byte, 1<<20)
		for b.Loop() {
			resp, err := (&http.Client{Transport: c.Transport()}).Get(srv.URL + "/v2/x/blobs/" + d.String())
			if err != nil {
				b.Fatal(err)
			}
			h := sha256.New()
			if _, err := io.CopyBuffer(io.MultiWriter(discardSink{}, h), resp.Body, buf); err != nil {
				b.Fatal(err)
			}
			_ = resp.Body.Close()
		}
	})
	b.Run("FetchBlob", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			if err := c.FetchBlob(context.Background(), c.Transport(), repo, d, int64(len(blob)), discardSink{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
