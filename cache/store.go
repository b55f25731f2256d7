package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/atomicfile"
)

// The store on disk:
//
//	blobs/sha256/HEX              blob bytes, verified
//	manifests/sha256/HEX          manifest bytes, verified
//	manifests/sha256/HEX.json     its media type and the digests it references
//	tags/UPSTREAM/REPO/_tags/TAG  {"digest", "mediaType", "checked"}
//	tags/UPSTREAM/REPO/_lists/Q   the last tag list page fetched for query Q
//	tmp/                          downloads in progress (emptied at start)
//	lock                          flock'ed by the process that serves DIR
//
// A file's modification time is its last access, written at most once a
// minute; the in-memory index holds the exact one.

type kind uint8

const (
	kindBlob kind = iota
	kindManifest
	kindList // a stored tag list page: d is listKey's hash of its path
)

type key struct {
	k kind
	d v1.Hash
}

type entry struct {
	size      int64
	atime     time.Time
	saved     time.Time // the access time last written to disk
	mediaType string    // manifests
	children  []v1.Hash // manifests: the blobs and manifests they reference
	list      *listRef  // tag list pages: where the page is
	verified  bool      // blobs: hashed by this process (downloaded, or checked on a hit)
}

type tagKey struct{ upstream, repo, tag string }

type tagRec struct {
	Digest    v1.Hash   `json:"digest"`
	MediaType string    `json:"mediaType"`
	Checked   time.Time `json:"checked"` // last time the upstream confirmed it
}

type manifestMeta struct {
	MediaType string    `json:"mediaType"`
	Children  []v1.Hash `json:"children"`
}

// saveAtimeEvery bounds how often an access time reaches the disk.
const saveAtimeEvery = time.Minute

type store struct {
	dir string
	b   backend // the bytes of blobs and manifests
	now func() time.Time
	log *slog.Logger

	mu      sync.Mutex
	items   map[key]*entry
	parents map[v1.Hash]map[v1.Hash]bool // digest → manifests that reference it
	tags    map[tagKey]tagRec
	tagsOf  map[v1.Hash]map[tagKey]bool // manifest digest → tags on it
	inUse   map[v1.Hash]int             // blobs being served or downloaded
	listsOf map[string]map[v1.Hash]bool // UPSTREAM/REPO → its stored tag list pages
	total   int64
}

func openStore(dir string, b backend, now func() time.Time, log *slog.Logger) (*store, error) {
	s := &store{dir: dir, b: b, now: now, log: log, items: map[key]*entry{}, parents: map[v1.Hash]map[v1.Hash]bool{},
		tags: map[tagKey]tagRec{}, tagsOf: map[v1.Hash]map[tagKey]bool{}, inUse: map[v1.Hash]int{},
		listsOf: map[string]map[v1.Hash]bool{}}
	if err := os.RemoveAll(filepath.Join(dir, "tmp")); err != nil {
		return nil, fmt.Errorf("emptying %s: %w", filepath.Join(dir, "tmp"), err)
	}
	for _, d := range []string{"tags", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("creating the cache store: %w", err)
		}
	}
	if err := b.load(s.add); err != nil {
		return nil, err
	}
	if err := s.loadTags(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *store) blobPath(d v1.Hash) string {
	return filepath.Join(s.dir, "blobs", d.Algorithm, d.Hex)
}

func (s *store) manifestPath(d v1.Hash) string {
	return filepath.Join(s.dir, "manifests", d.Algorithm, d.Hex)
}

func (s *store) tagPath(k tagKey) string {
	return filepath.Join(s.dir, "tags", k.upstream, filepath.FromSlash(k.repo), "_tags", k.tag)
}

func (s *store) loadTags() error {
	root := filepath.Join(s.dir, "tags")
	return filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) >= 4 && parts[len(parts)-2] == "_lists" {
			s.loadList(p, parts, de)
			return nil
		}
		if len(parts) < 4 || parts[len(parts)-2] != "_tags" {
			return nil
		}
		k := tagKey{upstream: parts[0], repo: strings.Join(parts[1:len(parts)-2], "/"), tag: parts[len(parts)-1]}
		b, err := os.ReadFile(p)
		var rec tagRec
		// A shared store's index starts empty: look the manifest up there.
		if err != nil || json.Unmarshal(b, &rec) != nil || s.lookup(key{kindManifest, rec.Digest}) == nil {
			_ = os.Remove(p)
			return nil
		}
		s.setTagLocked(k, rec)
		return nil
	})
}

// add records e under k; s.mu held or not yet shared.
func (s *store) add(k key, e *entry) {
	if old := s.items[k]; old != nil {
		s.total -= old.size
	}
	s.items[k] = e
	s.total += e.size
	for _, c := range e.children {
		if s.parents[c] == nil {
			s.parents[c] = map[v1.Hash]bool{}
		}
		s.parents[c][k.d] = true
	}
}

func (s *store) size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// touch records an access to k; s.mu held.
func (s *store) touch(k key, e *entry) {
	now := s.now()
	e.atime = now
	if now.Sub(e.saved) < saveAtimeEvery {
		return
	}
	e.saved = now
	if k.k != kindList {
		s.b.touch(k, now)
		return
	}
	if err := os.Chtimes(e.list.path, now, now); err != nil {
		s.log.Warn("recording an access time", "digest", k.d, "err", err)
	}
}

// acquire marks blob d as in use (served or downloaded): the cleaner
// leaves it. Call the returned function when done.
func (s *store) acquire(d v1.Hash) (release func()) {
	s.mu.Lock()
	s.inUse[d]++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.inUse[d]--; s.inUse[d] <= 0 {
				delete(s.inUse, d)
			}
			s.mu.Unlock()
		})
	}
}

// lookup returns the index entry of k, asking a shared backend for an
// object the index does not hold (another replica stored it). The store's
// lock is not held over the backend's requests.
func (s *store) lookup(k key) *entry {
	s.mu.Lock()
	e := s.items[k]
	s.mu.Unlock()
	if e != nil || !s.b.shared() {
		return e
	}
	found := s.b.find(k)
	if found == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e = s.items[k]; e == nil {
		e = found
		s.add(k, e)
	}
	return e
}

// openBlob opens stored blob d and records the access. The caller must
// hold an acquire on d while it reads.
func (s *store) openBlob(d v1.Hash) (blobReader, int64, bool) {
	k := key{kindBlob, d}
	e := s.lookup(k)
	if e == nil {
		return nil, 0, false
	}
	f, size, err := s.b.openBlob(d)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && size != e.size {
		_ = f.Close()
		err = fmt.Errorf("%w: %d bytes stored, %d when stored", errCorrupt, size, e.size)
		e.verified = false
	}
	if err != nil {
		s.log.Warn("stored blob unreadable; fetching it again", "digest", d, "err", err)
		s.dropLocked(k, err)
		return nil, 0, false
	}
	s.touch(k, e)
	return f, e.size, true
}

// dropLocked takes k out of the store after reading it failed with err:
// from the backend too when the backend is this process's alone or the
// bytes were bad, from the index only when another replica may still
// read it (a request that failed says nothing about the object).
func (s *store) dropLocked(k key, err error) {
	s.removeKey(k, &CleanResult{}, !s.b.shared() || errors.Is(err, errCorrupt))
}

// putBlob moves a verified download into the store.
func (s *store) putBlob(tmp string, d v1.Hash, size int64) error {
	mine, err := s.b.putBlob(tmp, d, size)
	if err != nil {
		return err
	}
	now := s.now()
	s.mu.Lock()
	s.add(key{kindBlob, d}, &entry{size: size, atime: now, saved: now, verified: mine})
	s.mu.Unlock()
	return nil
}

// blobVerified reports whether this process has hashed stored blob d.
func (s *store) blobVerified(d v1.Hash) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.items[key{kindBlob, d}]
	return e != nil && e.verified
}

// blobChecked records the result of hashing stored blob d: kept as
// verified, or removed (with the manifests that reference it); err says
// why it failed (errCorrupt: its bytes are bad).
func (s *store) blobChecked(d v1.Hash, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key{kindBlob, d}
	e := s.items[k]
	switch {
	case e == nil:
	case ok:
		e.verified = true
	default:
		s.dropLocked(k, err)
	}
}

func (s *store) tempFile() (*os.File, error) {
	return os.CreateTemp(filepath.Join(s.dir, "tmp"), "blob-")
}

// manifest returns stored manifest d and records the access.
func (s *store) manifest(d v1.Hash) ([]byte, string, bool) {
	k := key{kindManifest, d}
	e := s.lookup(k)
	if e == nil {
		return nil, "", false
	}
	// Manifests are small: hashed on every read, not trusted for having
	// been checked when stored (the file may have changed since).
	b, err := s.b.readManifest(d)
	if sum := sha256.Sum256(b); err == nil && hex.EncodeToString(sum[:]) != d.Hex {
		err = fmt.Errorf("%w: %d bytes that do not match the digest", errCorrupt, len(b))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.log.Warn("stored manifest unreadable; fetching it again", "digest", d, "err", err)
		s.dropLocked(k, err)
		return nil, "", false
	}
	s.touch(k, e)
	return b, e.mediaType, true
}

// putManifest stores manifest bytes whose digest the caller has checked.
func (s *store) putManifest(d v1.Hash, mediaType string, body []byte) error {
	meta := manifestMeta{MediaType: mediaType, Children: children(body)}
	if err := s.b.putManifest(d, meta, body); err != nil {
		return err
	}
	now := s.now()
	s.mu.Lock()
	s.add(key{kindManifest, d}, &entry{size: int64(len(body)), atime: now, saved: now, mediaType: mediaType, children: meta.Children})
	s.mu.Unlock()
	return nil
}

// children lists the digests a manifest or index references.
func children(body []byte) []v1.Hash {
	var m struct {
		Config    *v1.Descriptor  `json:"config"`
		Layers    []v1.Descriptor `json:"layers"`
		Manifests []v1.Descriptor `json:"manifests"`
	}
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	var out []v1.Hash
	if m.Config != nil {
		out = append(out, m.Config.Digest)
	}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	for _, l := range m.Manifests {
		out = append(out, l.Digest)
	}
	return out
}

func (s *store) tag(k tagKey) (tagRec, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.tags[k]
	return rec, ok
}

// setTag records that tag k points at rec.Digest (a stored manifest).
func (s *store) setTag(k tagKey, rec tagRec) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	p := s.tagPath(k)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("storing tag %s/%s:%s: %w", k.upstream, k.repo, k.tag, err)
	}
	if err := atomicfile.WriteFile(p, b, 0o644); err != nil {
		return fmt.Errorf("storing tag %s/%s:%s: %w", k.upstream, k.repo, k.tag, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.items[key{kindManifest, rec.Digest}] == nil {
		_ = os.Remove(p) // evicted meanwhile
		return nil
	}
	s.setTagLocked(k, rec)
	return nil
}

func (s *store) setTagLocked(k tagKey, rec tagRec) {
	if old, ok := s.tags[k]; ok {
		delete(s.tagsOf[old.Digest], k)
	}
	s.tags[k] = rec
	if s.tagsOf[rec.Digest] == nil {
		s.tagsOf[rec.Digest] = map[tagKey]bool{}
	}
	s.tagsOf[rec.Digest][k] = true
}

// CleanResult says what a cleaner pass evicted.
type CleanResult struct {
	Blobs, Manifests, Tags, Lists int
	Bytes                         int64
}

// evict removes least recently used entries until the store holds at most
// target bytes, skipping blobs in use (manifests are served from memory,
// so they never are); removing a blob removes the
// manifests that reference it, and their tags.
func (s *store) evict(target int64) CleanResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r CleanResult
	keys := make([]key, 0, len(s.items))
	for k := range s.items {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := s.items[keys[i]], s.items[keys[j]]
		if !a.atime.Equal(b.atime) {
			return a.atime.Before(b.atime)
		}
		return keys[i].d.Hex < keys[j].d.Hex
	})
	for _, k := range keys {
		if s.total <= target {
			break
		}
		if s.items[k] == nil || (k.k == kindBlob && s.inUse[k.d] > 0) {
			continue
		}
		s.removeLocked(k, &r)
	}
	return r
}

// removeLocked deletes k and every manifest that references it.
func (s *store) removeLocked(k key, r *CleanResult) { s.removeKey(k, r, true) }

// removeKey takes k and every manifest that references it out of the
// index, and out of the backend when stored is set.
func (s *store) removeKey(k key, r *CleanResult, stored bool) {
	e := s.items[k]
	if e == nil {
		return
	}
	delete(s.items, k)
	s.total -= e.size
	r.Bytes += e.size
	switch k.k {
	case kindList:
		r.Lists++
		s.removeFile(e.list.path)
		delete(s.listsOf[e.list.repo], k.d)
		if len(s.listsOf[e.list.repo]) == 0 {
			delete(s.listsOf, e.list.repo)
		}
		return
	case kindBlob:
		r.Blobs++
		if stored {
			s.b.remove(k)
		}
	default:
		r.Manifests++
		if stored {
			s.b.remove(k)
		}
		for tk := range s.tagsOf[k.d] {
			delete(s.tags, tk)
			s.removeFile(s.tagPath(tk))
			r.Tags++
		}
		delete(s.tagsOf, k.d)
		for _, c := range e.children {
			delete(s.parents[c], k.d)
			if len(s.parents[c]) == 0 {
				delete(s.parents, c)
			}
		}
	}
	for p := range s.parents[k.d] {
		s.removeKey(key{kindManifest, p}, r, stored)
	}
}

func (s *store) removeFile(p string) {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("removing from the cache store", "path", p, "err", err)
	}
}
