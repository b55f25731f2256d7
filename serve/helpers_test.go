package serve

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/bundletest"
)

// testImage builds a deterministic image from layer contents.
func testImage(t *testing.T, docker bool, layers ...string) v1.Image {
	return bundletest.Image(t, docker, layers...)
}

// testIndex builds an OCI index of two platform images.
func testIndex(t *testing.T, layer string) v1.ImageIndex { return bundletest.Index(t, layer) }

// testEntry is one image of a test bundle.
type testEntry struct {
	source, target string
	tags           []string
	img            v1.Image      // or
	idx            v1.ImageIndex //
}

// writeBundle writes entries as a bundle in dir and opens it.
func writeBundle(t *testing.T, dir, name string, entries ...testEntry) *bundle.Reader {
	t.Helper()
	es := make([]bundletest.Entry, len(entries))
	for i, e := range entries {
		es[i] = bundletest.Entry{Source: e.source, Target: e.target, Tags: e.tags, Img: e.img, Idx: e.idx}
	}
	return bundletest.Write(t, dir, name, nil, es...)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// syncBuffer is a buffer handlers may log to while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits up to 5s for s to be logged (an access-log line is written
// as the handler returns, which may be after the client has its response).
func (b *syncBuffer) waitFor(s string) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(b.String(), s) {
			return true
		}
	}
	return false
}
