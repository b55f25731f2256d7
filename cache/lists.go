package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/atomicfile"
)

// tagList is a stored page of an upstream's tag list. Pages are entries of
// the store like blobs and manifests: counted in its size and evicted
// least recently used first, and at most maxListsPerRepo of them are kept
// per repository, since every distinct (n, last) query a client sends is a
// page of its own.
type tagList struct {
	Body    []byte    `json:"body"`
	Next    string    `json:"next"`
	Fetched time.Time `json:"fetched"`
}

// maxListsPerRepo bounds the pages kept per upstream repository: a full
// listing of 10,000 tags at 100 per page fits; a client that walks the
// list with ever new page sizes replaces the least recently used pages.
const maxListsPerRepo = 128

// listRef says where a stored page is, for the index.
type listRef struct {
	path string
	repo string // UPSTREAM/REPO, the key of store.listsOf
}

func (s *store) listPath(upstream, repo, query string) string {
	sum := sha256.Sum256([]byte(query))
	return filepath.Join(s.dir, "tags", upstream, filepath.FromSlash(repo), "_lists", hex.EncodeToString(sum[:12]))
}

// listKey is the index key of the page stored at path.
func (s *store) listKey(path string) key {
	rel, _ := filepath.Rel(s.dir, path)
	sum := sha256.Sum256([]byte(filepath.ToSlash(rel)))
	return key{kindList, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
}

// loadList indexes the page at p (parts: its path under tags/, split).
func (s *store) loadList(p string, parts []string, de fs.DirEntry) {
	info, err := de.Info()
	if err != nil || !info.Mode().IsRegular() {
		return
	}
	repo := strings.Join(parts[:len(parts)-2], "/")
	s.addList(s.listKey(p), &entry{size: info.Size(), atime: info.ModTime(), saved: info.ModTime(),
		list: &listRef{path: p, repo: repo}})
}

// addList records page e under k, then drops the least recently used pages
// of its repository past maxListsPerRepo; s.mu held or not yet shared.
func (s *store) addList(k key, e *entry) {
	s.add(k, e)
	pages := s.listsOf[e.list.repo]
	if pages == nil {
		pages = map[v1.Hash]bool{}
		s.listsOf[e.list.repo] = pages
	}
	pages[k.d] = true
	if len(pages) <= maxListsPerRepo {
		return
	}
	keys := make([]key, 0, len(pages))
	for d := range pages {
		if d != k.d {
			keys = append(keys, key{kindList, d})
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := s.items[keys[i]], s.items[keys[j]]
		if !a.atime.Equal(b.atime) {
			return a.atime.Before(b.atime)
		}
		return keys[i].d.Hex < keys[j].d.Hex
	})
	var r CleanResult
	for _, old := range keys[:len(pages)-maxListsPerRepo] {
		s.removeLocked(old, &r)
	}
}

func (s *store) putList(upstream, repo, query string, l tagList) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	p := s.listPath(upstream, repo, query)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(p, b, 0o644); err != nil {
		return fmt.Errorf("storing a tag list of %s/%s: %w", upstream, repo, err)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addList(s.listKey(p), &entry{size: int64(len(b)), atime: now, saved: now,
		list: &listRef{path: p, repo: upstream + "/" + repo}})
	return nil
}

// list returns the stored page for query and records the access. A page
// the index does not hold (evicted) is not served.
func (s *store) list(upstream, repo, query string) (tagList, bool) {
	p := s.listPath(upstream, repo, query)
	k := s.listKey(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.items[k]
	if e == nil {
		return tagList{}, false
	}
	var l tagList
	b, err := os.ReadFile(p)
	if err != nil || json.Unmarshal(b, &l) != nil {
		s.removeLocked(k, &CleanResult{})
		return tagList{}, false
	}
	s.touch(k, e)
	return l, true
}
