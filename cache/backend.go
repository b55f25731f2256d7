package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/atomicfile"
)

// backend keeps the bytes of blobs and manifests: on the local disk
// (diskBackend, the default) or in object storage that several cache
// replicas share (s3Backend). The store's index, its tags and tag list
// pages, and downloads in progress stay in the local directory.
type backend interface {
	// load reports every stored blob and manifest, at start.
	load(add func(key, *entry)) error
	// find looks up an object the index does not hold (another replica
	// stored it); nil when there is none, and always nil when the index
	// is the whole truth (disk).
	find(k key) *entry
	openBlob(d v1.Hash) (blobReader, int64, error)
	// putBlob stores the verified download in file tmp (and consumes it).
	// mine is false when the store already held an object under that
	// digest (another replica's), which this process has not hashed.
	putBlob(tmp string, d v1.Hash, size int64) (mine bool, err error)
	readManifest(d v1.Hash) ([]byte, error)
	putManifest(d v1.Hash, meta manifestMeta, body []byte) error
	remove(k key)
	// touch records an access at t (called at most once a minute per entry).
	touch(k key, t time.Time)
	// shared says other processes write the store too: the index is a
	// partial view, and an object that cannot be read is dropped from the
	// index only, unless its bytes were found bad (errCorrupt).
	shared() bool
}

// blobReader is an open stored blob.
type blobReader interface {
	io.ReadSeekCloser
	io.ReaderAt
}

// errCorrupt marks a stored object whose bytes do not match its digest or
// recorded size: it is removed from the store, not only from the index.
var errCorrupt = errors.New("stored bytes do not match")

// diskBackend is the store in a local directory (see store.go).
type diskBackend struct {
	dir string
	log *slog.Logger
}

func newDiskBackend(dir string, log *slog.Logger) (*diskBackend, error) {
	for _, d := range []string{"blobs/sha256", "manifests/sha256"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("creating the cache store: %w", err)
		}
	}
	return &diskBackend{dir: dir, log: log}, nil
}

func (b *diskBackend) blobPath(d v1.Hash) string {
	return filepath.Join(b.dir, "blobs", d.Algorithm, d.Hex)
}

func (b *diskBackend) manifestPath(d v1.Hash) string {
	return filepath.Join(b.dir, "manifests", d.Algorithm, d.Hex)
}

func (b *diskBackend) shared() bool    { return false }
func (b *diskBackend) find(key) *entry { return nil }

func (b *diskBackend) load(add func(key, *entry)) error {
	des, err := os.ReadDir(filepath.Join(b.dir, "blobs", "sha256"))
	if err != nil {
		return fmt.Errorf("reading the cache store: %w", err)
	}
	for _, de := range des {
		d, err := v1.NewHash("sha256:" + de.Name())
		info, ierr := de.Info()
		if err != nil || ierr != nil || !info.Mode().IsRegular() {
			continue
		}
		add(key{kindBlob, d}, &entry{size: info.Size(), atime: info.ModTime(), saved: info.ModTime()})
	}
	dir := filepath.Join(b.dir, "manifests", "sha256")
	if des, err = os.ReadDir(dir); err != nil {
		return fmt.Errorf("reading the cache store: %w", err)
	}
	for _, de := range des {
		d, err := v1.NewHash("sha256:" + de.Name())
		if err != nil {
			continue
		}
		info, ierr := de.Info()
		raw, merr := os.ReadFile(filepath.Join(dir, de.Name()+".json"))
		var meta manifestMeta
		if ierr != nil || merr != nil || json.Unmarshal(raw, &meta) != nil {
			b.log.Warn("dropping a manifest without its record", "digest", d)
			_ = os.Remove(filepath.Join(dir, de.Name()))
			continue
		}
		add(key{kindManifest, d}, &entry{size: info.Size(), atime: info.ModTime(), saved: info.ModTime(),
			mediaType: meta.MediaType, children: meta.Children})
	}
	return nil
}

func (b *diskBackend) openBlob(d v1.Hash) (blobReader, int64, error) {
	f, err := os.Open(b.blobPath(d))
	if err != nil {
		return nil, 0, err
	}
	info, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, err
	}
	return f, info.Size(), nil
}

func (b *diskBackend) putBlob(tmp string, d v1.Hash, _ int64) (bool, error) {
	if err := os.Rename(tmp, b.blobPath(d)); err != nil {
		_ = os.Remove(tmp)
		return false, fmt.Errorf("storing blob %s: %w", d, err)
	}
	return true, nil
}

func (b *diskBackend) readManifest(d v1.Hash) ([]byte, error) {
	return os.ReadFile(b.manifestPath(d))
}

func (b *diskBackend) putManifest(d v1.Hash, meta manifestMeta, body []byte) error {
	raw, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	p := b.manifestPath(d)
	if err := atomicfile.WriteFile(p+".json", raw, 0o644); err != nil {
		return fmt.Errorf("storing manifest %s: %w", d, err)
	}
	if err := atomicfile.WriteFile(p, body, 0o644); err != nil {
		return fmt.Errorf("storing manifest %s: %w", d, err)
	}
	return nil
}

func (b *diskBackend) remove(k key) {
	switch k.k {
	case kindBlob:
		b.removeFile(b.blobPath(k.d))
	case kindManifest:
		b.removeFile(b.manifestPath(k.d))
		b.removeFile(b.manifestPath(k.d) + ".json")
	}
}

func (b *diskBackend) touch(k key, t time.Time) {
	p := b.blobPath(k.d)
	if k.k == kindManifest {
		p = b.manifestPath(k.d)
	}
	if err := os.Chtimes(p, t, t); err != nil {
		b.log.Warn("recording an access time", "digest", k.d, "err", err)
	}
}

func (b *diskBackend) removeFile(p string) {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		b.log.Warn("removing from the cache store", "path", p, "err", err)
	}
}

// newBackend returns the backend o asks for: the local directory unless
// an object store is given.
func newBackend(o Options) (backend, error) {
	if o.Objects == nil {
		return newDiskBackend(o.Dir, o.Logger)
	}
	return newS3Backend(o), nil
}
