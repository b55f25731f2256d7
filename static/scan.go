package static

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

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/internal/smallfile"
)

// treeRepo is one repository as the tree holds it, earlier runs included.
type treeRepo struct {
	tags      map[string]v1.Hash // tags whose manifest can be served
	manifests map[v1.Hash]types.MediaType
}

// treeState is what the whole tree serves.
type treeState struct {
	repos map[string]*treeRepo
	names []string // sorted
}

// scanTree reads what DIR/v2 serves: every folder called manifests that
// holds files is a repository's. Tags are hashed (manifests are small);
// a file ferry cannot serve is reported and left out. Temporary files a
// crash left behind are removed (the lock says no other unpack runs).
func scanTree(t *tree, log *slog.Logger) (*treeState, error) {
	st := &treeState{repos: map[string]*treeRepo{}}
	v2 := filepath.Join(t.root, "v2")
	err := filepath.WalkDir(v2, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && isTemp(d.Name()) {
			_ = os.Remove(p) // left by a crash; the lock says no unpack is running
			return nil
		}
		if !d.IsDir() || d.Name() != "manifests" || p == v2 {
			return nil
		}
		rel, _ := filepath.Rel(v2, filepath.Dir(p))
		name := filepath.ToSlash(rel)
		r, err := scanManifests(t, name, p, log)
		if err != nil || r == nil {
			return err
		}
		if !validName(name) {
			log.Warn("folder left out: not a valid repository name", "path", p)
			return nil
		}
		st.repos[name] = r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrTree, v2, err)
	}
	for n := range st.repos {
		st.names = append(st.names, n)
	}
	sort.Strings(st.names)
	return st, nil
}

// scanManifests reads one manifests folder; nil when it holds no file.
func scanManifests(t *tree, name, dir string, log *slog.Logger) (*treeRepo, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	r := &treeRepo{tags: map[string]v1.Hash{}, manifests: map[v1.Hash]types.MediaType{}}
	var tags []string
	files := 0
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case e.IsDir():
			continue
		case isTemp(e.Name()):
			continue // removed by scanTree
		case !e.Type().IsRegular():
			log.Warn("left out: not a regular file", "path", p)
			continue
		}
		files++
		if hexpart, ok := strings.CutPrefix(e.Name(), "sha256:"); ok {
			h, err := bundle.ParseDigest("sha256:" + hexpart)
			if err != nil {
				log.Warn("left out: not a sha256 digest", "path", p)
				continue
			}
			mt, err := t.mediaType(p, h)
			if err != nil {
				log.Warn("manifest left out", "path", p, "error", err)
				continue
			}
			r.manifests[h] = mt
		} else if validTag(e.Name()) {
			tags = append(tags, e.Name())
		} else {
			log.Warn("left out: neither a tag nor a digest", "path", p)
		}
	}
	if files == 0 {
		return nil, nil
	}
	for _, tag := range tags {
		p := filepath.Join(dir, tag)
		data, err := readSmall(p, bundle.MaxManifestSize)
		if err != nil {
			log.Warn("tag left out", "repository", name, "tag", tag, "error", err)
			continue
		}
		sum := sha256.Sum256(data)
		h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
		if _, ok := r.manifests[h]; !ok {
			log.Warn("tag left out: its manifest is not in the repository's manifests folder", "repository", name, "tag", tag, "digest", h.String())
			continue
		}
		r.tags[tag] = h
	}
	return r, nil
}

// isTemp tells the temporary files of this package and of atomicfile
// (".NAME.tmp-…"); no tag or digest starts with a dot.
func isTemp(name string) bool {
	return strings.HasPrefix(name, tmpPrefix) || strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
}

// removeTemps removes what a crash left in dir (not recursive).
func removeTemps(dir string) {
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		if e.Type().IsRegular() && isTemp(e.Name()) {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// mediaType returns the media type manifest h is served with: as recorded
// when it was written, else as its bytes (checked against h) declare.
func (t *tree) mediaType(p string, h v1.Hash) (types.MediaType, error) {
	t.mu.Lock()
	mt, ok := t.j.MediaTypes[h.String()]
	t.mu.Unlock()
	if ok && mt != "" {
		return types.MediaType(mt), nil
	}
	data, err := readSmall(p, bundle.MaxManifestSize)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != h.Hex {
		return "", fmt.Errorf("content is sha256:%s, not %s", hex.EncodeToString(sum[:]), h)
	}
	got, err := oci.MediaTypeOf(data)
	if err != nil {
		return "", err
	}
	t.mu.Lock()
	t.j.MediaTypes[h.String()] = string(got)
	t.mu.Unlock()
	return got, nil
}

func readSmall(p string, max int64) ([]byte, error) {
	data, err := smallfile.Read(p, max)
	if errors.Is(err, smallfile.ErrTooLarge) {
		return nil, errors.New("larger than a manifest may be")
	}
	return data, err
}

// writeLists writes each repository's tags/list and tag list pages, and
// the catalog, where their content changes.
func writeLists(t *tree, st *treeState) error {
	for _, n := range st.names {
		tags := sortedTags(st.repos[n])
		if _, err := t.writeIfChanged("v2/"+n+"/tags/list", listJSON(n, tags)); err != nil {
			return err
		}
		if err := writePages(t, n, tags); err != nil {
			return err
		}
	}
	data, err := json.Marshal(struct {
		Repositories []string `json:"repositories"`
	}{append([]string{}, st.names...)})
	if err != nil {
		return err
	}
	_, err = t.writeIfChanged("v2/_catalog", append(data, '\n'))
	return err
}
