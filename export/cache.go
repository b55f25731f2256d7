package export

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
)

// Cache keeps fetched manifests and configs on disk, content-addressed, and
// knows where the layers of the bundles it wrote are (see bundleRecord), so
// a repeated or interrupted export downloads nothing it already has.
// Entries are written under a temporary name and renamed into place only
// after their digest was verified, so an entry that exists is complete and
// correct.
type Cache struct {
	dir     string
	records []*bundleRecord
	byBlob  map[string][]blobSource // hex → where to copy it from
}

// OpenCache opens (creating if needed) a cache directory.
func OpenCache(dir string) (*Cache, error) {
	for _, d := range []string{filepath.Join(dir, "blobs", "sha256"), filepath.Join(dir, "tmp"), filepath.Join(dir, "bundles"), filepath.Join(dir, "partial")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	c := &Cache{dir: dir}
	c.loadBundles()
	return c, nil
}

func (c *Cache) path(h v1.Hash) string {
	return filepath.Join(c.dir, "blobs", "sha256", h.Hex)
}

// Open returns the cached bytes of h, or ok=false. An entry of the wrong
// size is removed and reported missing.
func (c *Cache) Open(h v1.Hash, size int64) (*os.File, bool) {
	if c == nil || h.Algorithm != "sha256" {
		return nil, false
	}
	f, err := os.Open(c.path(h))
	if err != nil {
		return nil, false
	}
	st, err := f.Stat()
	if err != nil || (size >= 0 && st.Size() != size) {
		_ = f.Close()
		_ = os.Remove(c.path(h))
		return nil, false
	}
	return f, true
}

// forget removes the entry of h (its content was found damaged).
func (c *Cache) forget(h v1.Hash) {
	if c != nil && h.Algorithm == "sha256" {
		_ = os.Remove(c.path(h))
	}
}

// Get returns a small cached document (a manifest), verified.
func (c *Cache) Get(h v1.Hash) ([]byte, bool) {
	f, ok := c.Open(h, -1)
	if !ok {
		return nil, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 8<<20))
	if err != nil {
		return nil, false
	}
	if got, _, _ := v1.SHA256(bytes.NewReader(data)); got != h {
		_ = os.Remove(c.path(h)) // damaged on disk: forget it
		return nil, false
	}
	return data, true
}

// Put stores a small verified document.
func (c *Cache) Put(h v1.Hash, data []byte) error {
	if c == nil {
		return nil
	}
	if got, _, _ := v1.SHA256(bytes.NewReader(data)); got != h {
		return fmt.Errorf("cache: content of %s has digest %s", h, got)
	}
	f, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), h.Hex+".*")
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return fmt.Errorf("cache: %w", err)
	}
	return c.commit(f)
}

func (c *Cache) commit(f *os.File) error {
	name := f.Name()
	if err := f.Close(); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("cache: %w", err)
	}
	hexpart := filepath.Base(name)
	if i := indexByte(hexpart, '.'); i > 0 {
		hexpart = hexpart[:i]
	}
	if err := os.Rename(name, filepath.Join(c.dir, "blobs", "sha256", hexpart)); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("cache: %w", err)
	}
	return nil
}

// sink returns a writer that copies what it passes to w into a new cache
// entry for h. Reset starts both again; the entry is kept only on commit
// (the bytes were verified), and removed by discard otherwise.
func (c *Cache) sink(h v1.Hash, w bundle.Sink) *cacheSink {
	s := &cacheSink{w: w, c: c}
	if c == nil {
		return s
	}
	f, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), h.Hex+".*")
	if err != nil {
		return s // caching is best effort; the export goes on
	}
	s.f = f
	return s
}

type cacheSink struct {
	w    bundle.Sink
	c    *Cache
	f    *os.File // nil: not caching
	werr error
}

func (s *cacheSink) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if n > 0 && s.f != nil && s.werr == nil {
		_, s.werr = s.f.Write(p[:n])
	}
	return n, err
}

// Reset starts the entry again with the blob.
func (s *cacheSink) Reset() error {
	if s.f != nil && s.werr == nil {
		if err := s.f.Truncate(0); err != nil {
			s.werr = err
		} else if _, err := s.f.Seek(0, io.SeekStart); err != nil {
			s.werr = err
		}
	}
	return s.w.Reset()
}

// commit keeps the entry: its bytes were verified. Best effort: a full disk
// must not fail the export.
func (s *cacheSink) commit() {
	if s.f == nil || s.werr != nil {
		return
	}
	_ = s.c.commit(s.f)
	s.f = nil
}

// discard removes an entry that was not committed.
func (s *cacheSink) discard() {
	if s.f == nil {
		return
	}
	name := s.f.Name()
	_ = s.f.Close()
	_ = os.Remove(name)
	s.f = nil
}

// Clean removes temporary files an interrupted run left behind (older
// than an hour, so that a concurrent run's files are left alone).
func (c *Cache) Clean() {
	if c == nil {
		return
	}
	_ = filepath.WalkDir(filepath.Join(c.dir, "tmp"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
			_ = os.Remove(p)
		}
		return nil
	})
}

func indexByte(s string, b byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return i
		}
	}
	return -1
}
