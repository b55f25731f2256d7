package static

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
)

// repoFiles are the files of one repository folder that ferry writes,
// each by its path relative to DIR.
type repoFiles struct {
	tags map[string]string // tag → v2/NAME/manifests/TAG
	// tagDigests: the manifest each tag file holds (checkTags).
	tagDigests map[string]v1.Hash
	manifests  map[v1.Hash]string // digest → v2/NAME/manifests/sha256:HEX
	blobs      map[v1.Hash]string // digest → v2/NAME/blobs/sha256:HEX
	referrers  map[v1.Hash]string // subject → v2/NAME/referrers/sha256:HEX
	lists      []string           // tags/list, tags/first/S, tags/after/S/TAG
	pages      map[string][]string
}

// treeFiles is every file under v2/ and blobs/sha256/ sorted by what it
// is: the files ferry writes, by repository, and the files it does not
// know (left alone, reported).
type treeFiles struct {
	repos   map[string]*repoFiles
	store   map[v1.Hash]string // digest → blobs/sha256/HEX
	unknown []string
}

func (tf *treeFiles) repo(name string) *repoFiles {
	r := tf.repos[name]
	if r == nil {
		r = &repoFiles{tags: map[string]string{}, tagDigests: map[string]v1.Hash{}, manifests: map[v1.Hash]string{}, blobs: map[v1.Hash]string{},
			referrers: map[v1.Hash]string{}, pages: map[string][]string{}}
		tf.repos[name] = r
	}
	return r
}

// inventory lists the files of the tree by their paths alone. A file is
// ferry's when its path has one of the shapes ferry writes (the package
// documentation's layout) under a valid repository name; every other file
// is unknown. Inventory reads no file's content and follows no link.
func inventory(t *tree) (*treeFiles, error) {
	tf := &treeFiles{repos: map[string]*repoFiles{}, store: map[v1.Hash]string{}}
	v2 := filepath.Join(t.root, "v2")
	err := filepath.WalkDir(v2, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == v2 {
				return filepath.SkipDir
			}
			return err
		}
		if d.IsDir() || isTemp(d.Name()) {
			return nil
		}
		rel, _ := filepath.Rel(t.root, p)
		rel = filepath.ToSlash(rel)
		if !d.Type().IsRegular() || !tf.classify(rel) {
			tf.unknown = append(tf.unknown, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrTree, v2, err)
	}
	es, err := os.ReadDir(filepath.Join(t.root, storeDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %v", ErrTree, err)
	}
	for _, e := range es {
		rel := storeDir + "/" + e.Name()
		if isTemp(e.Name()) {
			continue
		}
		h, herr := bundle.ParseDigest("sha256:" + e.Name())
		if herr != nil || !e.Type().IsRegular() {
			tf.unknown = append(tf.unknown, rel)
			continue
		}
		tf.store[h] = rel
	}
	sort.Strings(tf.unknown)
	return tf, nil
}

// classify files rel (a path under v2/) with its repository; false when
// it has none of the shapes ferry writes. v2/_catalog is ferry's and
// belongs to no repository.
func (tf *treeFiles) classify(rel string) bool {
	if rel == "v2/_catalog" {
		return true
	}
	dir, file := parentOf(rel), rel[strings.LastIndex(rel, "/")+1:]
	kind, repoDir := dir[strings.LastIndex(dir, "/")+1:], parentOf(dir)
	name := strings.TrimPrefix(repoDir, "v2/")
	digest := func() (v1.Hash, bool) {
		h, err := bundle.ParseDigest(file)
		return h, err == nil && h.Algorithm == "sha256" && strings.HasPrefix(file, "sha256:")
	}
	switch kind {
	case "manifests", "blobs", "referrers":
		if !strings.HasPrefix(repoDir, "v2/") || !validName(name) {
			return false
		}
		h, isDigest := digest()
		switch {
		case kind == "manifests" && isDigest:
			tf.repo(name).manifests[h] = rel
		case kind == "manifests" && validTag(file):
			tf.repo(name).tags[file] = rel
		case kind == "blobs" && isDigest:
			tf.repo(name).blobs[h] = rel
		case kind == "referrers" && isDigest:
			tf.repo(name).referrers[h] = rel
		default:
			return false
		}
		return true
	case "tags":
		if file != "list" || !strings.HasPrefix(repoDir, "v2/") || !validName(name) {
			return false
		}
		tf.repo(name).lists = append(tf.repo(name).lists, rel)
		return true
	}
	return tf.classifyPage(rel, dir, file)
}

// classifyPage files the tag list pages: v2/NAME/tags/first/S and
// v2/NAME/tags/after/S/TAG.
func (tf *treeFiles) classifyPage(rel, dir, file string) bool {
	if name, ok := strings.CutSuffix(dir, "/tags/first"); ok {
		if _, err := strconv.Atoi(file); err != nil || !strings.HasPrefix(name, "v2/") || !validName(name[3:]) {
			return false
		}
		tf.repo(name[3:]).lists = append(tf.repo(name[3:]).lists, rel)
		return true
	}
	size := dir[strings.LastIndex(dir, "/")+1:]
	name, ok := strings.CutSuffix(parentOf(dir), "/tags/after")
	if _, err := strconv.Atoi(size); !ok || err != nil || !validTag(file) || !strings.HasPrefix(name, "v2/") || !validName(name[3:]) {
		return false
	}
	r := tf.repo(name[3:])
	r.lists = append(r.lists, rel)
	r.pages[file] = append(r.pages[file], rel)
	return true
}
